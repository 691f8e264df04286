"""Sampling options and the one engine call per batch that the generating steps share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


from ..engines.base import Engine, Generation, ItemError, SamplingParams
from ..errors import RecordError
from ..records import where


# The user's sampling options for a step: one dataclass with what an engine call gets, which
# adds a per-record seed (``sampling.params(record_seed(...))``).
Sampling = SamplingParams


def generate_for(engine: Engine, records: list[dict], chats: list[list[dict]],
                 params: list[SamplingParams]) -> list[Generation | RecordError]:
    """One engine call for a batch; an item's failure becomes a RecordError naming its record."""
    results = engine.generate(chats, params) if chats else []
    return [RecordError(r.message, where=where(rec)) if isinstance(r, ItemError) else r
            for rec, r in zip(records, results)]


@dataclass
class Pending:
    """One record's engine call within a batch: the output record being built, the chat to
    answer (None: no call needed, e.g. a clean critique under --until-clean), its sampling,
    and what the step needs back when the answer comes (named, not a positional tuple)."""

    out: dict
    chat: list[dict] | None
    params: SamplingParams | None
    state: dict = field(default_factory=dict)


def answer_pending(engine: Engine, prepared: list[Pending | RecordError],
                   finish: Callable[[Pending, Generation | None], dict | RecordError]) -> list[dict | RecordError]:
    """One engine call for every Pending that needs one, then ``finish(pending, answer)`` per
    record in input order; a record that failed earlier or whose call failed is its error."""
    live = [p for p in prepared if isinstance(p, Pending) and p.chat is not None]
    answers = iter(generate_for(engine, [p.out for p in live], [p.chat for p in live],
                                [p.params for p in live]))
    results: list[dict | RecordError] = []
    for p in prepared:
        answer = next(answers) if isinstance(p, Pending) and p.chat is not None else None
        if isinstance(p, RecordError) or isinstance(answer, RecordError):
            results.append(p if isinstance(p, RecordError) else answer)
            continue
        results.append(finish(p, answer))
    return results
