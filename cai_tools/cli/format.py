"""cai format: write records as datasets other tools read."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from ..sl.hf_format import format_hf
from .options import DebugOpt, InputArg, OnError, OnErrorOpt, QuietOpt, ResumeOpt
from .running import cli_errors, run_records


class Target(str, Enum):
    hf = "hf"


def format_(
    input: InputArg = "-",
    to: Annotated[Target, typer.Option("--to", help="hf: Hugging Face CAI dataset columns "
                                       "(TRL SFT reads 'messages', DPO 'chosen'/'rejected').")] = Target.hf,
    keep: Annotated[bool, typer.Option(help="Keep the original fields too.")] = False,
    resume: ResumeOpt = None,
    on_error: OnErrorOpt = OnError.fail,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Convert SL-CAI records (after critique/revise) to the Hugging Face CAI dataset layout."""
    with cli_errors("format", debug):
        run_records("format", input, lambda recs: format_hf(recs, keep=keep, on_error=on_error.value),
                    resume=resume, quiet=quiet, on_error=on_error.value)
