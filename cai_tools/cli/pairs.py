"""cai pairs: preference pairs without a judge."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..sl.pairs import pairs_from_revisions
from .options import DebugOpt, InputArg, OnError, OnErrorOpt, QuietOpt, ResumeOpt
from .running import cli_errors, run_records


def pairs(
    input: InputArg = "-",
    from_revisions: Annotated[bool, typer.Option(
        help="Final revision = chosen, initial answer = rejected (Hugging Face's recipe).")] = False,
    resume: ResumeOpt = None,
    on_error: OnErrorOpt = OnError.fail,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Make preference records (prompt, chosen, rejected, label) from SL-CAI records."""
    with cli_errors("pairs", debug):
        if not from_revisions:
            raise UsageError("say where the pairs come from: --from-revisions "
                             "(or use 'cai judge' on 'cai generate -n 2' output)")
        run_records("pairs", input, lambda recs: pairs_from_revisions(recs, on_error=on_error.value),
                    resume=resume, quiet=quiet, on_error=on_error.value)
