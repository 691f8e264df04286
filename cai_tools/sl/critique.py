"""``critique``: the model criticises its current answer against one sampled principle.

Per record and round, one critique/revision pair is drawn from the constitution (seeded
by the run seed, the record id and the round; ``principle_id`` pins one) and a new entry
``{round, principle, critique_request, critique}`` is appended to ``history``; ``revise``
completes it. ``response`` is left alone.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from ..constitution import Constitution
from ..conversation import prompt_messages
from ..engines.base import Engine
from ..errors import RecordError
from ..records import (add_provenance, copy_record, content_id, process_in_batches, record_seed,
                       require_text, where)
from .prompts import clean_critique, critique_chat, critique_is_clean
from .sampling import Sampling, generate_for


def history_of(record: dict) -> list[dict]:
    hist = record.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        raise RecordError("field 'history' must be a list of objects", where=where(record))
    return hist


def critique_batch(batch: list[dict], engine: Engine, constitution: Constitution, *,
                   principle_id: str | None, seed: int, sampling: Sampling) -> list[dict | RecordError]:
    """Append one critique round to each record (the work of one ``critique`` call)."""
    pinned = constitution.principle(principle_id) if principle_id else None
    prepared: list = []
    for rec in batch:
        try:
            messages = prompt_messages(rec)
            response = require_text(rec, "response")
            history = history_of(rec)
            if history and "revision" not in history[-1]:
                raise RecordError("the last critique has no revision yet: run 'cai revise' "
                                  "before critiquing again", where=where(rec))
        except RecordError as exc:
            prepared.append(exc)
            continue
        out = copy_record(rec)
        out.setdefault("id", content_id(rec))
        round_no = len(history) + 1
        principle = pinned or constitution.sample_principle(
            random.Random(record_seed(seed, out["id"], "principle", round_no)))
        chat = critique_chat(constitution, messages, response, principle.critique)
        params = sampling.params(record_seed(seed, out["id"], "critique", round_no))
        prepared.append((out, history, round_no, principle, chat, params))
    live = [p for p in prepared if not isinstance(p, RecordError)]
    gens = iter(generate_for(engine, [p[0] for p in live], [p[4] for p in live], [p[5] for p in live]))
    results: list[dict | RecordError] = []
    for p in prepared:
        if isinstance(p, RecordError):
            results.append(p)
            continue
        out, history, round_no, principle, _chat, _params = p
        gen = next(gens)
        if isinstance(gen, RecordError):
            results.append(gen)
            continue
        text = clean_critique(gen.text)
        entry = {"round": round_no, "principle": principle.id,
                 "critique_request": principle.critique, "critique": text}
        if critique_is_clean(text):
            entry["clean"] = True
        out["history"] = [*history, entry]
        results.append(out)
    return results


def critique(records: Iterable[dict], engine: Engine, constitution: Constitution, *,
             principle_id: str | None = None, seed: int = 0, sampling: Sampling = Sampling(),
             batch_size: int = 8, on_error: str = "fail") -> Iterator[dict]:
    if principle_id:
        constitution.principle(principle_id)  # fail before reading any input
    provenance = {"engine": engine.info.as_dict(), "constitution": constitution.name,
                  "seed": seed, "principle": principle_id, **sampling.as_dict()}

    def handle(batch):
        results = critique_batch(batch, engine, constitution, principle_id=principle_id,
                                 seed=seed, sampling=sampling)
        for r in results:
            if isinstance(r, dict):
                add_provenance(r, "critique", provenance)
        return results

    return process_in_batches(records, batch_size, "critique", on_error, handle)
