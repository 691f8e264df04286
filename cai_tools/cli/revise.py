"""cai revise: rewrite answers to address their critiques (one round, or --rounds N)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..sl import revise as revise_step
from ..sl.quality import QualityTally
from ..constitutions.constitution import load_constitution
from ..errors import UsageError
from .options import ConstitutionOpt, InputArg, PrincipleOpt
from .running import Console, check_positive, cli_errors
from .step_options import StepOptions, generating_step


@generating_step(max_tokens=256)
def revise(
    input: InputArg = "-",
    constitution: ConstitutionOpt = "harmless",
    rounds: Annotated[Optional[int], typer.Option(
        help="Run N critique+revision rounds here (the paper used 4).")] = None,
    until_clean: Annotated[bool, typer.Option(
        help="Stop a record's rounds when its critique finds nothing to fix.")] = False,
    principle: PrincipleOpt = None,
    keep_better: Annotated[bool, typer.Option(
        help="Keep a revision only if the model judges it better than the answer it revised.")] = False,
    keep_threshold: Annotated[float, typer.Option(
        help="--keep-better: keep a revision when P(revision is better) is at least this.")] = 0.5,
    *,
    opts: StepOptions,
) -> None:
    """Revise each record's answer to address its latest critique; the revision becomes
    'response'. With --rounds N, run N critique+revision rounds per record."""
    console = Console("revise", opts.quiet)
    with cli_errors("revise", opts.debug):
        if rounds is not None:
            check_positive("--rounds", rounds)
        const = load_constitution(constitution)
        if principle:
            const.principle(principle)
        if not 0.0 <= keep_threshold <= 1.0:
            raise UsageError(f"--keep-threshold must be a probability in [0, 1], got {keep_threshold}")
        tally, kept = QualityTally(), revise_step.KeptTally()
        with opts.engine(console) as engine:
            opts.run_records("revise", input, lambda recs: kept.watch(tally.watch(revise_step.revise(
                recs, engine, const, rounds=rounds, principle_id=principle,
                until_clean=until_clean, seed=opts.seed, sampling=opts.sampling,
                batch_size=opts.batch_size, keep_better=keep_threshold if keep_better else None,
                on_error=opts.on_error))))
        for line in tally.lines() + kept.lines():   # e.g. "round 2: 5 of 8 usable (copies_critique 3)"
            console.note(line)
