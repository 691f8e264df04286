"""``critique``: the model criticises its current answer against one sampled principle.

Per record and round, one critique/revision pair is drawn from the constitution (seeded
by the run seed, the record id and the round; ``principle_id`` pins one) and a new entry
``{round, principle, critique_request, critique}`` is appended to ``history``; ``revise``
completes it. ``response`` is left alone.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from ..constitutions.constitution import Constitution
from ..conversation import prompt_messages
from ..engines.base import Engine
from ..errors import RecordError
from ..records import add_provenance, copy_record, content_id, keep_reasoning, record_seed, require_text, where
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .prompts import clean_critique, critique_chat, critique_is_clean
from .quality import note_truncated_critique
from .sampling import Sampling, answer_chats


def history_of(record: dict) -> list[dict]:
    """The record's critique/revision rounds (``history``; [] when absent); RecordError when it
    is not a list of objects."""
    hist = record.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        raise RecordError("field 'history' must be a list of objects", where=where(record))
    return hist


def answered_conversation(record: dict) -> tuple[list[dict], str, list[dict]]:
    """(the prompt's messages, the current answer, the critique/revision rounds so far)."""
    return prompt_messages(record), require_text(record, "response"), history_of(record)


def critique_batch(batch: list[dict], engine: Engine, constitution: Constitution, *,
                   principle_id: str | None, seed: int, sampling: Sampling) -> list[dict | RecordError]:
    """Append one critique round to each record (the work of one ``critique`` call)."""
    pinned = constitution.principle(principle_id) if principle_id else None

    def prepare(rec: dict) -> Pending:
        messages, response, history = answered_conversation(rec)
        if history and "revision" not in history[-1]:
            raise RecordError("the last critique has no revision yet: run 'cai revise' "
                              "before critiquing again", where=where(rec))
        out = copy_record(rec)
        out.setdefault("id", content_id(rec))
        round_no = len(history) + 1
        principle = pinned or constitution.sample_principle(
            random.Random(record_seed(seed, out["id"], "principle", round_no)))
        chat = critique_chat(constitution, messages, response, principle.critique)
        params = sampling.params(record_seed(seed, out["id"], "critique", round_no))
        return Pending(out, [(chat, params)], {"history": history, "round": round_no,
                                                "principle": principle})

    def finish(p: Pending, answers: list) -> dict:
        text = clean_critique(answers[0].text)
        keep_reasoning(p.out, f"critique {p.state['round']}", answers)
        principle = p.state["principle"]
        entry = {"round": p.state["round"], "principle": principle.id,
                 "critique_request": principle.critique, "critique": text}
        if critique_is_clean(text):
            entry["clean"] = True
        p.out["history"] = [*p.state["history"], entry]
        if answers[0].finish_reason == "length":
            note_truncated_critique(p.out, entry["round"])
        return p.out

    return each_record(batch, prepare, answer_chats(engine), finish)


def critique(records: Iterable[dict], engine: Engine, constitution: Constitution, *,
             principle_id: str | None = None, seed: int = 0, sampling: Sampling = Sampling(),
             batch_size: int = 8, on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Append one round {round, principle, critique_request, critique} (``clean`` when it finds
    nothing to fix) to each record's ``history``, reading ``prompt``/``messages``, ``response`` and
    ``history``; the principle is sampled per record and round unless ``principle_id`` pins one."""
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
