"""``revise``: answer the latest critique with a revision that becomes the current answer.

``critique | revise`` is one round; chain them again for more. ``rounds=N`` runs the
paper's loop (critique + revision per round) in one process. ``until_clean`` stops a
record's rounds early when its critique finds nothing to fix; that round's revision is
the unchanged answer, marked ``clean``.

``keep_better`` (beyond the paper) gates each round: the judge compares the revision with the
answer it revised under the round's principle, both orders averaged as ``cai judge`` does, and
the revision becomes the answer only when P(revision is better) ≥ the threshold. Otherwise the
round stays in ``history`` with ``kept: false`` (sft does not train on it) and the next round
critiques the previous answer again, so a later round cannot undo an earlier one's gain.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..constitutions.constitution import Constitution
from .critique import answered_conversation, critique_batch
from ..conversation import prompt_messages
from ..engines.base import Engine, ItemError
from ..errors import RecordError
from ..records import add_provenance, copy_record, content_id, keep_reasoning, record_seed, where
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .judge_question import prefer_first
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
        keep_reasoning(p.out, f"revision {entry.get('round')}", answers)
        p.out["history"] = [*p.state["history"][:-1], entry]
        p.out["response"] = entry["revision"]
        store_round_quality(p.out, entry, response, answers[0].finish_reason if answers else None)
        return p.out

    return each_record(batch, prepare, answer_chats(engine), finish)


def keep_better_batch(before: list[dict], after: list[dict], judge: Engine, constitution: Constitution,
                      threshold: float) -> list[dict | RecordError]:
    """Judge each record's new revision (``after``) against the answer it revised (``before``) under
    the round's principle; keep it as the answer when P(revision better) ≥ ``threshold``, else put
    the previous answer back. Marks the round ``kept`` and ``p_better``."""
    comparisons = []
    for old, new in zip(before, after):
        entry = new["history"][-1]
        comparisons.append((prompt_messages(new), constitution.principle(entry["principle"]).as_judge(),
                            new["response"], old["response"]))
    results: list[dict | RecordError] = []
    for old, new, p in zip(before, after, prefer_first(judge, constitution, comparisons)):
        if isinstance(p, ItemError):
            results.append(RecordError(f"--keep-better: the judge could not compare round "
                                       f"{new['history'][-1].get('round')}: {p.message}", where=where(new)))
            continue
        entry = {**new["history"][-1], "p_better": round(p, 6), "kept": p >= threshold}
        new["history"] = [*new["history"][:-1], entry]
        if not entry["kept"]:
            new["response"] = old["response"]
        results.append(new)
    return results


def revise(records: Iterable[dict], engine: Engine, constitution: Constitution, *,
           rounds: int | None = None, principle_id: str | None = None, until_clean: bool = False,
           seed: int = 0, sampling: Sampling = Sampling(), batch_size: int = 8,
           keep_better: float | None = None, judge: Engine | None = None,
           on_error: OnError = OnError.fail) -> Iterator[dict]:
    """Complete each record's pending critique with a revision: reads ``prompt``/``messages``,
    ``response`` and ``history``; adds ``revision_request`` and ``revision`` to the last round and makes
    the revision the new ``response``. ``rounds=N`` runs N critique+revision rounds instead.
    ``keep_better`` (a threshold) gates every round with ``judge`` (default: ``engine``)."""
    if principle_id:
        constitution.principle(principle_id)
    judge = judge or engine
    provenance = {"engine": engine.info.as_dict(), "constitution": constitution.name, "seed": seed,
                  "rounds": rounds, "until_clean": until_clean, **sampling.as_dict()}
    if rounds:
        provenance["principle"] = principle_id
    if keep_better is not None:
        provenance.update(keep_better=keep_better, judge=judge.info.as_dict())

    def handle(batch: list[dict]) -> list[dict | RecordError]:
        if not rounds:
            results = _gated(batch, revise_batch(batch, engine, constitution, seed=seed, sampling=sampling,
                                                 until_clean=until_clean))
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
                    done = _gated(todo, revise_batch(todo, engine, constitution, seed=seed, sampling=sampling,
                                                     until_clean=until_clean))
                for i, r in zip(active, done):
                    results[i] = r
                active = [i for i in active if isinstance(results[i], dict)]
        return results

    def _gated(before: list[dict], after: list[dict | RecordError]) -> list[dict | RecordError]:
        """``after`` with each new revision judged against ``before``'s answer (with keep_better)."""
        if keep_better is None:
            return after
        revised = [k for k, r in enumerate(after) if isinstance(r, dict) and not r["history"][-1].get("clean")]
        gated = keep_better_batch([before[k] for k in revised], [after[k] for k in revised], judge,
                                  constitution, keep_better)
        out = list(after)
        for k, r in zip(revised, gated):
            out[k] = r
        return out

    def _stopped(record: dict) -> bool:
        hist = record.get("history") or []
        return until_clean and bool(hist) and bool(hist[-1].get("clean"))

    return process_in_batches(records, batch_size, "revise", on_error, handle)


class KeptTally:
    """Counts, per round, the revisions ``--keep-better``'s judge kept in a record stream as it passes,
    and how sure it was (P(revision better) per round)."""

    # Verdicts this close to 0.5 are near a coin flip: the gate then keeps or rejects at random.
    UNSURE = 0.1

    def __init__(self):
        self.rounds: dict = {}

    def watch(self, records):
        for rec in records:
            history = rec.get("history") if isinstance(rec, dict) else None
            for entry in history if isinstance(history, list) else []:
                if isinstance(entry, dict) and "kept" in entry:
                    self.rounds.setdefault(entry.get("round"), []).append((bool(entry["kept"]), entry["p_better"]))
            yield rec

    def lines(self) -> list[str]:
        """'round 2: the judge kept 5 of 8 revisions (62%), P(revision better) 0.31-0.74' per round, and a
        warning when every verdict was near 0.5."""
        out = []
        for r, verdicts in sorted(self.rounds.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            kept, ps = sum(k for k, _ in verdicts), [p for _, p in verdicts]
            out.append(f"round {r}: the judge kept {kept} of {len(verdicts)} revisions ({kept / len(verdicts):.0%}), "
                       f"P(revision better) {min(ps):.2f}-{max(ps):.2f}")
        every = [p for verdicts in self.rounds.values() for _, p in verdicts]
        if every and all(abs(p - 0.5) < self.UNSURE for p in every):
            out.append(f"every verdict was within {self.UNSURE} of 0.5: with this judge the gate is close to a "
                       "coin flip ('cai judge-check' measures the judge; a larger --model judges better)")
        return out
