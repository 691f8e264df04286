"""cai format: write records as datasets other tools read."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from ..sl.hf_format import format_hf
from .options import InputArg, StreamOptions, dataclass_options
from .running import cli_errors


class Target(str, Enum):
    hf = "hf"


@dataclass_options("stream", StreamOptions)
def format_(
    input: InputArg = "-",
    to: Annotated[Target, typer.Option("--to", help="hf: Hugging Face CAI dataset columns "
                                       "(TRL SFT reads 'messages', DPO 'chosen'/'rejected').")] = Target.hf,
    keep: Annotated[bool, typer.Option(help="Keep the original fields too.")] = False,
    *,
    stream: StreamOptions,
) -> None:
    """Convert SL-CAI records (after critique/revise) to the Hugging Face CAI dataset layout."""
    with cli_errors("format", stream.debug):
        stream.run_records("format", input, lambda recs: format_hf(recs, keep=keep,
                                                                    on_error=stream.on_error))
