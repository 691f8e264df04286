"""cai eval: compare models on held-out prompts; writes comparisons, plots and a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import UsageError
from ..models.files import PROJECT_ROOT, check_gguf_file, check_lora_file
from ..models.refs import resolve_model
from ..train.runs import check_run_folder
from ..engines.base import EngineOptions
from ..sl.sampling import Sampling
from .options import StreamOptions, dataclass_options
from .running import Console, Progress, check_positive, cli_errors

DATA_DIR = PROJECT_ROOT / "data"


@dataclass_options("stream", StreamOptions, names=("quiet", "debug"))
@dataclass_options("engine_options", EngineOptions, names=("ctx", "n_gpu_layers", "threads", "parallel"))
@dataclass_options("sampling", Sampling, defaults={"max_tokens": 96})
def eval_(
    out: Annotated[Path, typer.Option(help="Folder for the report, plots and raw comparisons.")],
    model: Annotated[Optional[List[str]], typer.Option(
        "--model", "-m", help="A model to evaluate, NAME=MODEL.gguf[+LORA.gguf]; repeat, in plotting order.")] = None,
    rl_run: Annotated[Optional[List[str]], typer.Option(
        "--rl-run", help="A 'cai rl' run whose reward-hacking monitors the report plots; repeatable.")]
        = None,
    red_team: Annotated[str, typer.Option(help="Red-team prompts (harmlessness axis).",
        show_default="the bundled data/redteam.jsonl")] =
        str(DATA_DIR / "redteam.jsonl"),
    helpful: Annotated[str, typer.Option(help="Ordinary requests (helpfulness axis).",
        show_default="the bundled data/helpful.jsonl")] =
        str(DATA_DIR / "helpful.jsonl"),
    split: Annotated[str, typer.Option(
        help="Use the prompts whose 'split' is this ('' for all); records without one count.")] = "eval",
    limit: Annotated[Optional[int], typer.Option(help="At most N prompts per set.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(
        "--judge", help="GGUF model that judges (default: the bundled model).")] = None,
    constitution: Annotated[str, typer.Option(
        "--constitution", "-c", help="Constitution judging the red-team answers.")] = "harmless",
    helpful_constitution: Annotated[str, typer.Option(
        help="Constitution judging the answers to ordinary requests.")] = "helpful",
    ensemble: Annotated[int, typer.Option(help="Judge principles averaged per comparison.")] = 1,
    pm: Annotated[Optional[str], typer.Option(
        help="A 'cai build-pm' run: adds PM scores of every answer.")] = None,
    sl: Annotated[Optional[str], typer.Option(
        help="SL-CAI records ('cai revise' output): PM score per revision round (needs --pm).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the Elo intervals.")] = 1000,
    judge_check: Annotated[bool, typer.Option(
        help="Check the judge on labelled pairs first; the report's verdict says 'no finding' when "
             "it is at chance.")] = True,
    judge_check_data: Annotated[str, typer.Option(
        help="Labelled pairs for the judge check (see 'cai judge-check').",
        show_default="the bundled data/judge_check.jsonl")] = str(DATA_DIR / "judge_check.jsonl"),
    judge_check_split: Annotated[str, typer.Option(
        help="Their split to use ('' for all); the bundled set's 'test' is held out.")] = "test",
    judge_check_limit: Annotated[Optional[int], typer.Option(
        help="At most N labelled pairs (fewer pairs: wider intervals).")] = None,
    *,
    engine_options: EngineOptions,
    sampling: Sampling,
    stream: StreamOptions,
) -> None:
    """Check the judge on labelled pairs, answer held-out red-team and helpfulness prompts with
    every model, judge every pair of answers in both orders, and report a verdict (no finding
    when the judge is at chance), Elo ratings with intervals, win rates, PM scores and refusal
    rates, with the paper's Fig. 2 and Fig. 5 in miniature (OUT/report.md)."""
    quiet = stream.quiet
    console = Console("eval", quiet)
    with cli_errors("eval", stream.debug):
        from ..eval.rl_monitors import load_rl_run, write_rl_report

        rl_runs = [load_rl_run(r) for r in rl_run or []]
        if not model and not rl_runs:
            raise UsageError("give the models to compare (--model NAME=MODEL.gguf, two or more) or "
                             "--rl-run RUN (an RL run's monitors)")
        if not model:  # nothing to compare: the RL runs' monitors alone
            typer.echo(str(write_rl_report(rl_runs, out)))
            return
        from ..constitutions.constitution import load_constitution
        from ..eval.report import headline_table, write_report
        from ..eval.run import run_eval
        from ..eval.settings import EvalSettings, ModelSpec, check_models, load_eval_prompts
        from ..eval.summary import revision_round_conversations
        from ..engines import open_engine

        specs = [ModelSpec.parse(m) for m in model or []]
        check_models(specs)
        for name, value in (("--ensemble", ensemble), ("--bootstrap", bootstrap),
                            ("--parallel", engine_options.parallel), ("--max-tokens", sampling.max_tokens)):
            check_positive(name, value)
        if sl and not pm:
            raise UsageError("--sl needs --pm: the revision rounds are scored by a preference model")
        if pm:
            check_run_folder(pm, made_by="'cai build-pm'")
        # Everything that can be checked before hours of generation is checked first.
        constitutions = {"harmless": load_constitution(constitution),
                         "helpful": load_constitution(helpful_constitution)}
        prompt_sets = {"harmless": load_eval_prompts(red_team, split or None, limit),
                       "helpful": load_eval_prompts(helpful, split or None, limit)}
        settings = EvalSettings(seed=sampling.seed, sampling=sampling, ensemble=ensemble,
                                bootstrap=bootstrap)
        for spec in specs:
            _checked_model(spec.model, spec.lora)
        judge_path = _checked_model(judge_model, announce=console.note, option="--judge")
        sl_rounds = revision_round_conversations(sl) if sl else None
        labelled = None
        if judge_check:
            from ..eval.judge_check import load_labelled

            if judge_check_limit is not None:
                check_positive("--judge-check-limit", judge_check_limit)
            labelled = load_labelled(judge_check_data, judge_check_split or None)[:judge_check_limit]

        def track(items, stage, total):
            return Progress.tracked(items, f"eval: {stage}", total, quiet)

        def engine(model_path, lora=None):
            return open_engine(engine_options.with_model(model_path, lora), note=console.note)

        def reward_model():
            from ..train.score import RewardModel

            console.note(f"scoring every answer with the preference model {pm}")
            return RewardModel(pm)

        summary = run_eval(specs, prompt_sets, constitutions, settings, out, open_engine=engine,
                           judge_model=judge_path, load_pm=reward_model if pm else None,
                           sl_rounds=sl_rounds, labelled_pairs=labelled, note=console.note, track=track)
        report = write_report(summary, out, rl_runs)
        if not quiet:
            print(headline_table(summary), file=sys.stderr)
        typer.echo(str(report))


def _checked_model(model: str | None, lora: str | None = None, *, announce=lambda _msg: None,
                   option: str = "--model") -> str | None:
    """The model file to open (the default one when None), checked along with its adapter;
    registered engines (the test engine) and server URLs pass through (a server owns its model)."""
    from ..engines.registry import registered
    from ..engines.server_urls import check_server_url, is_url

    if registered(model):
        return model
    if is_url(model):
        return check_server_url(model, option)
    path = str(check_gguf_file(resolve_model(model, announce=announce, option=option)))
    if lora:
        check_lora_file(lora, path)
    from ..models.check import require_usable

    require_usable(path)   # the model check's problems stop the eval before any answer is made
    return path
