"""Sampling options and the engine call per batch that the generating steps share."""

from __future__ import annotations

from typing import Callable

from ..engines.base import Engine, Generation, ItemError, SamplingParams
from ..errors import RecordError


# The user's sampling options for a step: one dataclass with what an engine call gets, which
# adds a per-record seed (``sampling.params(record_seed(...))``).
Sampling = SamplingParams


def answer_chats(engine: Engine) -> Callable[[list[tuple[list[dict], SamplingParams]]], list]:
    """The batch call of a generating step (``record_batches.each_record``): one engine call for
    every (chat, sampling) work item; an item's failure becomes a RecordError."""

    def call(work: list[tuple[list[dict], SamplingParams]]) -> list[Generation | RecordError]:
        results = engine.generate([chat for chat, _ in work], [params for _, params in work])
        return [RecordError(r.message) if isinstance(r, ItemError) else r for r in results]

    return call
