"""cai judge: soft preference labels from pairwise constitutional judgements."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ..constitution import load_constitution
from ..errors import UsageError
from ..sl.judge import JudgeSettings, comparison_ids, judge as judge_step
from .options import ConstitutionOpt, InputArg
from .running import Console, cli_errors
from .step_options import StepOptions, generating_step


class PairMode(str, Enum):
    all = "all"
    adjacent = "adjacent"


@generating_step(max_tokens=128, temperature=0.0, batch_size=16, multi_model=True)
def judge(
    input: InputArg = "-",
    constitution: ConstitutionOpt = "harmless",
    principle: Annotated[Optional[str], typer.Option(
        help="Use this judge principle for every comparison instead of sampling.")] = None,
    ensemble: Annotated[int, typer.Option(
        help="Average over K principles sampled per comparison (the paper's ensembling).")] = 1,
    pairs: Annotated[PairMode, typer.Option(
        help="With more than two candidates: every pair, or neighbours only.")] = PairMode.all,
    cot: Annotated[bool, typer.Option(
        help="Reason step by step first (kept in the record), then read the options.")] = False,
    clamp: Annotated[Optional[tuple[float, float]], typer.Option(
        help="Clamp each order's probability to [LO, HI] (default 0.4 0.6 with --cot).")] = None,
    hard: Annotated[bool, typer.Option(help="0/1 labels instead of soft ones.")] = False,
    *,
    opts: StepOptions,
) -> None:
    """Compare each record's candidate answers ('responses', from 'cai generate -n 2') against
    sampled judge principles; writes one preference record per pair: prompt, chosen, rejected
    (TRL's conversational layout) and 'label', the probability that chosen is better."""
    console = Console("judge", opts.quiet)
    with cli_errors("judge", opts.debug):
        if ensemble < 1:
            raise UsageError(f"--ensemble must be at least 1, got {ensemble}")
        if clamp is not None and not 0.0 <= clamp[0] < clamp[1] <= 1.0:
            raise UsageError(f"--clamp needs 0 <= LO < HI <= 1, got {clamp[0]} {clamp[1]}")
        const = load_constitution(constitution)
        settings = JudgeSettings(principle_id=principle, ensemble=ensemble, pairs=pairs.value,
                                 cot=cot, clamp=clamp or ((0.4, 0.6) if cot else None),
                                 hard=hard, seed=opts.seed, cot_sampling=opts.sampling)
        if principle:
            const.judge_principle(principle)
        with opts.engines(console) as engines:
            opts.run_records("judge", input, lambda recs: judge_step(
                recs, engines, const, settings, batch_size=opts.batch_size,
                on_error=opts.on_error), output_ids=lambda rec: comparison_ids(rec, settings))
