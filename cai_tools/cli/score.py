"""cai score / cai best-of-n: rewards from a preference model (see cai_tools.train.score)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import typer

from ..option_fields import option
from .options import InputArg, StreamOptions, dataclass_options
from .running import check_positive, cli_errors


@dataclass
class ScoringOptions:
    pm: str = option(help="A 'cai build-pm' run folder.", flags=("--pm",))
    batch_size: int = option(8, "Conversations per forward pass.")
    max_length: int = option(1024, "Keep the last N tokens of a long conversation.")
    device: str = option("auto", "cpu, cuda, ... (auto: cuda when there is one).")


def scoring_step(fn):
    """The preference-model and record-stream options of score and best-of-n."""
    fn = dataclass_options("scoring", ScoringOptions)(fn)
    return dataclass_options("stream", StreamOptions, names=("on_error", "quiet", "debug"))(fn)


class Pick(str, Enum):
    best = "best"


@scoring_step
def score(
    input: InputArg = "-",
    pick: Annotated[Optional[Pick], typer.Option(
        help="best: keep the highest-rewarded of 'responses' as 'response' (best-of-n).")] = None,
    *, scoring: ScoringOptions, stream: StreamOptions,
) -> None:
    """Add the preference model's reward to every answer of every record."""
    _run("score", input, pick.value if pick else None, scoring, stream)


@scoring_step
def best_of_n(input: InputArg = "-", *, scoring: ScoringOptions, stream: StreamOptions) -> None:
    """Keep the highest-rewarded answer per prompt (same as 'cai score --pick best')."""
    _run("best-of-n", input, "best", scoring, stream)


def _run(step: str, input: str, pick: str | None, scoring: ScoringOptions, stream: StreamOptions) -> None:
    with cli_errors(step, stream.debug):
        from ..train.score import RewardModel, score as score_records

        check_positive("--batch-size", scoring.batch_size)
        model = RewardModel(scoring.pm, max_length=scoring.max_length, device=scoring.device)
        stream.run_records(step, input, lambda recs: score_records(
            recs, model, pick=pick, batch_size=scoring.batch_size, on_error=stream.on_error))
