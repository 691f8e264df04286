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
from ..records import add_provenance, copy_record, content_id, process_in_batches, record_seed
from .sampling import Sampling, generate_for


def generate(records: Iterable[dict], engine: Engine, *, n: int = 1, sampling: Sampling = Sampling(),
             seed: int = 0, system: str | None = None, batch_size: int = 8,
             on_error: str = "fail") -> Iterator[dict]:
    if n < 1:
        raise ValueError("n must be >= 1")
    provenance = {"engine": engine.info.as_dict(), "seed": seed, "n": n, **sampling.as_dict()}
    if system:
        provenance["system"] = system

    def handle(batch: list[dict]) -> list[dict | RecordError]:
        prepared: list[tuple[dict, list[dict]] | RecordError] = []
        for rec in batch:
            try:
                chat = with_system(prompt_messages(rec), system)
            except RecordError as exc:
                prepared.append(exc)
                continue
            out = copy_record(rec)
            out.setdefault("id", content_id(rec))
            prepared.append((out, chat))
        live = [p for p in prepared if not isinstance(p, RecordError)]
        recs = [out for out, _ in live for _k in range(n)]
        chats = [chat for _, chat in live for _k in range(n)]
        params = [sampling.params(record_seed(seed, out["id"], "generate", k))
                  for out, _ in live for k in range(n)]
        gens = iter(generate_for(engine, recs, chats, params))
        results: list[dict | RecordError] = []
        for p in prepared:
            if isinstance(p, RecordError):
                results.append(p)
                continue
            out = p[0]
            samples = [next(gens) for _ in range(n)]
            failed = next((s for s in samples if isinstance(s, RecordError)), None)
            if failed is not None:
                results.append(failed)
                continue
            texts = [s.text.strip() for s in samples]
            out["response"] = texts[0]
            out["init_response"] = texts[0]
            if n > 1:
                out["responses"] = texts
            add_provenance(out, "generate", provenance)
            results.append(out)
        return results

    return process_in_batches(records, batch_size, "generate", on_error, handle)
