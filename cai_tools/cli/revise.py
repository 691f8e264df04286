"""cai revise: rewrite answers to address their critiques (one round, or --rounds N)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..sl import revise as revise_step
from ..sl.quality import QualityTally
from ..constitution import load_constitution
from .options import ConstitutionOpt, InputArg, PrincipleOpt
from .running import Console, check_positive, cli_errors
from .step_options import StepOptions, generating_step


@generating_step(max_tokens=256)
def revise(
    input: InputArg = "-",
    constitution: ConstitutionOpt = "harmless",
    rounds: Annotated[Optional[int], typer.Option(
        help="Run N full critique+revision rounds here (the paper used 4), instead of "
             "answering the critique already in each record.")] = None,
    until_clean: Annotated[bool, typer.Option(
        help="Stop a record's rounds when its critique finds nothing to fix.")] = False,
    principle: PrincipleOpt = None,
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
        tally = QualityTally()
        with opts.engine(console) as engine:
            opts.run_records("revise", input, lambda recs: tally.watch(revise_step.revise(
                recs, engine, const, rounds=rounds, principle_id=principle,
                until_clean=until_clean, seed=opts.seed, sampling=opts.sampling,
                batch_size=opts.batch_size, on_error=opts.on_error)))
        for line in tally.lines():   # e.g. "round 2: 5 of 8 usable (copies_critique 3)"
            console.note(line)
