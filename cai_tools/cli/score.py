"""cai score / cai best-of-n: rewards from a preference model (see cai_tools.score)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from .options import DebugOpt, InputArg, OnError, OnErrorOpt, QuietOpt
from .running import check_positive, cli_errors, run_records

PmOpt = Annotated[str, typer.Option("--pm", help="A 'cai build-pm' run folder.")]
BatchOpt = Annotated[int, typer.Option(help="Conversations per forward pass.")]
MaxLenOpt = Annotated[int, typer.Option(help="Keep the last N tokens of a long conversation.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, ... [auto].")]


class Pick(str, Enum):
    best = "best"


def score(
    input: InputArg = "-",
    pm: PmOpt = ...,
    pick: Annotated[Optional[Pick], typer.Option(
        help="best: keep the highest-rewarded of 'responses' as 'response' (best-of-n).")] = None,
    batch_size: BatchOpt = 8,
    max_length: MaxLenOpt = 1024,
    device: DeviceOpt = "auto",
    on_error: OnErrorOpt = OnError.fail,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Add the preference model's reward to every answer of every record."""
    _run("score", input, pm, pick.value if pick else None, batch_size, max_length, device,
         on_error, quiet, debug)


def best_of_n(
    input: InputArg = "-",
    pm: PmOpt = ...,
    batch_size: BatchOpt = 8,
    max_length: MaxLenOpt = 1024,
    device: DeviceOpt = "auto",
    on_error: OnErrorOpt = OnError.fail,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Keep the highest-rewarded answer per prompt (same as 'cai score --pick best')."""
    _run("best-of-n", input, pm, "best", batch_size, max_length, device, on_error, quiet, debug)


def _run(step, input, pm, pick, batch_size, max_length, device, on_error, quiet, debug) -> None:
    with cli_errors(step, debug):
        from ..train.score import RewardModel, score as score_records

        check_positive("--batch-size", batch_size)
        model = RewardModel(pm, max_length=max_length, device=device)
        run_records(step, input, lambda recs: score_records(recs, model, pick=pick, batch_size=batch_size,
                                                            on_error=on_error.value), quiet=quiet)
