"""cai pairs: preference pairs without a judge."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ..sl.pairs import pairs_from_revisions
from .options import InputArg, StreamOptions, dataclass_options
from .running import cli_errors


@dataclass_options("stream", StreamOptions)
def pairs(
    input: InputArg = "-",
    from_revisions: Annotated[bool, typer.Option(
        help="Final revision = chosen, initial answer = rejected (Hugging Face's recipe).")] = False,
    *,
    stream: StreamOptions,
) -> None:
    """Make preference records (prompt, chosen, rejected, label) from SL-CAI records."""
    with cli_errors("pairs", stream.debug):
        if not from_revisions:
            raise UsageError("say where the pairs come from: --from-revisions "
                             "(or use 'cai judge' on 'cai generate -n 2' output)")
        stream.run_records("pairs", input, lambda recs: pairs_from_revisions(
            recs, on_error=stream.on_error))
