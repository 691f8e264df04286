"""``revise``: answer the latest critique with a revision that becomes the current answer.

``critique | revise`` is one round; chain them again for more. ``rounds=N`` runs the
paper's loop (critique + revision per round) in one process. ``until_clean`` stops a
record's rounds early when its critique finds nothing to fix; that round's revision is
the unchanged answer, marked ``clean``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..constitution import Constitution
from .critique import answered_conversation, critique_batch
from ..engines.base import Engine
from ..errors import RecordError
from ..records import add_provenance, copy_record, content_id, record_seed, where
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .prompts import clean_revision, revision_chat
from .quality import store_round_quality
from .sampling import Sampling, answer_chats


def revise_batch(batch: list[dict], engine: Engine, constitution: Constitution, *, seed: int,
                 sampling: Sampling, until_clean: bool) -> list[dict | RecordError]:
    """Complete the pending critique of each record with a revision."""

    def prepare(rec: dict) -> Pending:
        messages, response, history = answered_conversation(rec)
        if not history or "revision" in history[-1] or "critique" not in history[-1]:
            raise RecordError("no critique awaiting revision: run 'cai critique' first "
                              "(or 'cai revise --rounds N')", where=where(rec))
        last = history[-1]
        principle_id = last.get("principle")
        try:
            revision_request = constitution.principle(principle_id).revision
        except Exception:
            raise RecordError(
                f"the critique's principle '{principle_id}' is not in constitution "
                f"{constitution.name}: revise with the constitution that critiqued", where=where(rec)) from None
        out = copy_record(rec)
        out.setdefault("id", content_id(rec))
        entry = {**last, "revision_request": revision_request}
        state = {"history": history, "entry": entry, "response": response}
        if until_clean and last.get("clean"):
            return Pending(out, [], state)
        chat = revision_chat(constitution, messages, response, last["critique_request"],
                             last["critique"], revision_request)
        params = sampling.params(record_seed(seed, out["id"], "revision", last.get("round")))
        return Pending(out, [(chat, params)], state)

    def finish(p: Pending, answers: list) -> dict:
        entry, response = p.state["entry"], p.state["response"]
        # No call (clean under --until-clean), or an empty revision: keep the answer.
        entry["revision"] = (clean_revision(answers[0].text) if answers else "") or response
        p.out["history"] = [*p.state["history"][:-1], entry]
        p.out["response"] = entry["revision"]
        store_round_quality(p.out, entry, response, answers[0].finish_reason if answers else None)
        return p.out

    return each_record(batch, prepare, answer_chats(engine), finish)


def revise(records: Iterable[dict], engine: Engine, constitution: Constitution, *,
           rounds: int | None = None, principle_id: str | None = None, until_clean: bool = False,
           seed: int = 0, sampling: Sampling = Sampling(), batch_size: int = 8,
           on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Complete each record's pending critique with a revision: reads ``prompt``/``messages``,
    ``response`` and ``history``; adds ``revision_request`` and ``revision`` to the last round and makes
    the revision the new ``response``. ``rounds=N`` runs N critique+revision rounds instead."""
    if principle_id:
        constitution.principle(principle_id)
    provenance = {"engine": engine.info.as_dict(), "constitution": constitution.name, "seed": seed,
                  "rounds": rounds, "until_clean": until_clean, **sampling.as_dict()}
    if rounds:
        provenance["principle"] = principle_id

    def handle(batch: list[dict]) -> list[dict | RecordError]:
        if not rounds:
            results = revise_batch(batch, engine, constitution, seed=seed, sampling=sampling,
                                   until_clean=until_clean)
        else:
            results = _rounds(batch)
        for r in results:
            if isinstance(r, dict):
                add_provenance(r, "revise", provenance)
        return results

    def _rounds(batch: list[dict]) -> list[dict | RecordError]:
        # Round by round over the whole batch, so the engine always gets full batches.
        results: list[dict | RecordError] = list(batch)
        for _ in range(rounds):
            active = [i for i, r in enumerate(results) if isinstance(r, dict) and not _stopped(r)]
            if not active:
                break
            for step in ("critique", "revise"):
                todo = [results[i] for i in active]
                if step == "critique":
                    done = critique_batch(todo, engine, constitution, principle_id=principle_id,
                                          seed=seed, sampling=sampling)
                else:
                    done = revise_batch(todo, engine, constitution, seed=seed, sampling=sampling,
                                        until_clean=until_clean)
                for i, r in zip(active, done):
                    results[i] = r
                active = [i for i in active if isinstance(results[i], dict)]
        return results

    def _stopped(record: dict) -> bool:
        hist = record.get("history") or []
        return until_clean and bool(hist) and bool(hist[-1].get("clean"))

    return process_in_batches(records, batch_size, "revise", on_error, handle)
