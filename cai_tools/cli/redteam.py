"""cai redteam: model-written red-team prompts, few-shot from seed prompts, tagged by theme and
deduplicated (optionally each with a matched benign prompt)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from ..constitutions.constitution import load_constitution
from ..errors import CaiError, UsageError
from ..records import RecordWriter, resume_records
from ..sl.redteam import RedteamSettings, redteam as redteam_step
from ..sl.redteam_checks import RedteamStats
from ..sl.redteam_prompts import read_seeds
from .options import dataclass_options
from .running import Console, Progress, check_output, cli_errors, stdout_bytes
from .step_options import StepOptions, generating_step

SeedsArg = Annotated[str, typer.Argument(
    help="Seed prompts: JSONL with 'prompt' (e.g. data/redteam.jsonl), or - for stdin.")]


@generating_step(max_tokens=64, temperature=1.0)
@dataclass_options("settings", RedteamSettings)
def redteam(
    seeds: SeedsArg = "-",
    stats_file: Annotated[Optional[Path], typer.Option(
        "--stats", help="Also write the counts (per theme: generated, kept, dropped by reason) "
                        "to this JSON file.")] = None,
    *,
    settings: RedteamSettings,
    opts: StepOptions,
) -> None:
    """Write -n new red-team prompts, each asked for on one theme (a principle of the
    constitution) after --shots seed prompts, and kept only when it is a single request that
    duplicates no seed and no earlier prompt. Records: id, prompt, theme, kind, split,
    few_shot_ids (benign ones: match). Counts per theme and drop reason on stderr."""
    console = Console("redteam", opts.quiet)
    with cli_errors("redteam", opts.debug):
        if stats_file is not None:
            check_output(stats_file, "--stats")   # now, not after the records are made
        const = load_constitution(settings.constitution)
        try:
            themes = settings.check(const)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        shown, all_seeds = read_seeds(seeds, settings.split)
        if len(shown) < settings.shots:
            console.note(f"only {len(shown)} seed prompts to show: --shots {len(shown)}")
        done = resume_records(opts.resume) if opts.resume is not None else []
        console.note(f"{settings.n} prompts on {len(themes)} themes of {const.name}, "
                     f"{min(settings.shots, len(shown))} of {len(shown)} seed prompts shown each time"
                     + (", each with a benign match" if settings.benign else ""))
        stats = RedteamStats()
        out = RecordWriter(stdout_bytes())
        total = settings.n * (2 if settings.benign else 1)
        try:
            with opts.engine(console) as engine:
                records = redteam_step(shown, all_seeds, engine, const, settings,
                                       sampling=opts.sampling, seed=opts.seed,
                                       batch_size=opts.batch_size, on_error=opts.on_error,
                                       stats=stats, done=done)
                for rec in Progress.tracked(records, "redteam", max(total - len(done), 0), opts.quiet):
                    out.write(rec)
        finally:
            for line in stats.report():
                console.note(line)
            if stats_file is not None:
                stats_file.write_bytes(orjson.dumps(stats.as_dict(), option=orjson.OPT_INDENT_2))
        if stats.unfilled:
            kinds = sorted({"red-team" if kind == "redteam" else kind for kind, _ in stats.unfilled})
            themes_short = ", ".join(sorted({theme for _, theme in stats.unfilled}))
            raise CaiError(
                f"{len(stats.unfilled)} {' and '.join(kinds)} prompt(s) not made: no usable, unique "
                f"prompt within {settings.max_attempts} attempts (themes: {themes_short}); the "
                f"records written are complete. Raise --max-attempts, lower -n or use a stronger model")
