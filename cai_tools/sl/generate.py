"""``generate``: answer each record's prompt (or chat ``messages``) with the model.

Adds ``response`` (the current best answer, which critique/revise then improve) and
``init_response`` (kept as the original); with ``n > 1`` all samples are kept together in
``responses`` so a later ``judge`` can compare them.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..conversation import prompt_messages, with_system
from ..engines.base import Engine
from ..errors import RecordError
from ..records import add_provenance, copy_record, content_id, keep_reasoning, record_seed
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .sampling import Sampling, answer_chats


def generate(records: Iterable[dict], engine: Engine, *, n: int = 1, sampling: Sampling = Sampling(),
             seed: int = 0, system: str | None = None, batch_size: int = 8,
             on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Answer each record's ``prompt`` or ``messages`` (after ``system``, when given); writes
    ``response`` and ``init_response``, all ``n`` samples in ``responses`` when n > 1, and ``id``
    when it is missing."""
    if n < 1:
        raise ValueError("n must be >= 1")
    provenance = {"engine": engine.info.as_dict(), "seed": seed, "n": n, **sampling.as_dict()}
    if system:
        provenance["system"] = system

    def prepare(rec: dict) -> Pending:
        chat = with_system(prompt_messages(rec), system)
        out = copy_record(rec)
        out.setdefault("id", content_id(rec))
        return Pending(out, [(chat, sampling.params(record_seed(seed, out["id"], "generate", k)))
                             for k in range(n)])

    def finish(p: Pending, samples: list) -> dict:
        texts = [s.text.strip() for s in samples]
        keep_reasoning(p.out, "generate", samples)
        p.out["response"] = texts[0]
        p.out["init_response"] = texts[0]
        if n > 1:
            p.out["responses"] = texts
        add_provenance(p.out, "generate", provenance)
        return p.out

    def handle(batch: list[dict]) -> list[dict | RecordError]:
        return each_record(batch, prepare, answer_chats(engine), finish)

    return process_in_batches(records, batch_size, "generate", on_error, handle)
