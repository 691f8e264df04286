"""Running a step over a record stream in batches: order, the ``--on-error`` policy, and the
per-record skeleton of a batch (prepare each record, one call for the batch, finish each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Iterator

from .errors import InputError, RecordError
from .records import error_of, where, with_error


@dataclass
class Batcher:
    """Groups a record stream into batches for the engine.

    An input error (malformed line) is held back until the records read before it have
    been processed and written, so a bad line 500 never costs lines 1..499.
    """

    size: int

    def __call__(self, records: Iterable[dict]) -> Iterator[list[dict]]:
        batch: list[dict] = []
        it = iter(records)
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except InputError:
                if batch:
                    yield batch
                raise
            batch.append(rec)
            if len(batch) >= self.size:
                yield batch
                batch = []
        if batch:
            yield batch


class OnError(str, Enum):
    """What a step does with a record it cannot process."""

    fail = "fail"   # stop, after writing the records before it
    skip = "skip"   # write it with _cai.error and go on


def process_in_batches(
    records: Iterable[dict],
    batch_size: int,
    step: str,
    on_error: OnError,
    handle_batch: Callable[[list[dict]], list[dict | list[dict] | RecordError]],
) -> Iterator[dict]:
    """Run ``handle_batch`` over batches, keeping order and the error policy.

    Records that carry an earlier step's error pass through untouched. ``handle_batch``
    returns, per record, the output record, a list of output records (a step that makes
    several from one, like judge's pairs), or a RecordError; with
    ``on_error='skip'`` the error becomes a record, otherwise it is raised after the
    records before it in the stream have been yielded.
    """
    for batch in Batcher(batch_size)(records):
        live = [r for r in batch if error_of(r) is None]
        results = iter(handle_batch(live) if live else [])
        for rec in batch:
            if error_of(rec) is not None:
                yield rec
                continue
            result = next(results)
            if isinstance(result, RecordError):
                if on_error == OnError.skip:
                    yield with_error(rec, step, str(result))
                    continue
                raise result
            if isinstance(result, list):
                yield from result
            else:
                yield result


@dataclass
class Pending:
    """One record's share of a batch call: the output record being built, the work items the
    call gets for it (chats to answer, conversations to score; none: no call needed), and
    what ``finish`` needs back when the results come (named, not a positional tuple)."""

    out: dict
    work: list
    state: dict = field(default_factory=dict)


def each_record(batch: list[dict], prepare: Callable[[dict], Pending],
                call: Callable[[list], list], finish: Callable[[Pending, list], Any]) -> list:
    """The per-record skeleton of a step's batch: ``prepare(record)`` (a RecordError it raises
    is that record's result), one ``call`` over every record's work items together (a
    RecordError in an item's place fails its record), then ``finish(pending, results)`` per
    record, in input order."""
    prepared: list[Pending | RecordError] = []
    for rec in batch:
        try:
            prepared.append(prepare(rec))
        except RecordError as exc:
            prepared.append(exc)
    work = [item for p in prepared if isinstance(p, Pending) for item in p.work]
    results = iter(call(work) if work else [])
    finished = []
    for p in prepared:
        if isinstance(p, RecordError):
            finished.append(p)
            continue
        mine = [next(results) for _ in p.work]
        failed = next((r for r in mine if isinstance(r, RecordError)), None)
        if failed is not None:
            finished.append(failed if failed.where else RecordError(failed.message, where=where(p.out)))
            continue
        finished.append(finish(p, mine))
    return finished
