"""Is an SL-CAI round usable? Quality flags for critiques and revisions.

Small models write degenerate SL-CAI data: a revision that repeats the critique word for word,
one that changes nothing, text that loops ("It is a warning, and it is not a warning. It is
not a warning, ..."), an answer cut off at ``--max-tokens`` mid-sentence, prompt scaffolding
("Critique Request:", "Human:") leaking into the answer, or nothing at all. Each check is a
flag; a round is usable when neither its critique nor its revision has one.
"""

from __future__ import annotations

import re

from ..records import CAI_KEY

EMPTY = "empty"
COPIES_CRITIQUE = "copies_critique"
UNCHANGED = "unchanged"
REPETITION_LOOP = "repetition_loop"
TRUNCATED = "truncated"
SCAFFOLDING = "scaffolding"
DESCRIBES_ANSWER = "describes_answer"

NGRAM = 4
LOOP_SHARE = 0.3        # share of repeated 4-grams above which text counts as looping
COPY_SHARE = 0.5        # share of the revision's 4-grams found in the critique
_WORD = re.compile(r"\w+", re.UNICODE)
_SCAFFOLD = re.compile(r"(critique\s*request|revision\s*request|^\s*(critique|revision)\s*:|"
                       r"^\s*(human|assistant|user)\s*:|<\|im_(start|end)\|>)", re.I | re.M)
_SENTENCE_END = re.compile(r"[.!?…\"')\]*`]\s*$")
# A revision that talks about the answer ("The last answer is inappropriate...") instead of
# being the new answer: the critique's voice, not the assistant's.
_ABOUT_ANSWER = re.compile(r"^\W*(the|this|my|your)\s+(last\s+|previous\s+|original\s+|above\s+)?"
                           r"(answer|response|reply)\b", re.I)
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def _ngrams(text: str, n: int = NGRAM) -> list[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """Share of the text's word n-grams that already occurred earlier in it (0: no repeats)."""
    grams = _ngrams(text, n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _overlap(text: str, source: str) -> float:
    grams = _ngrams(text)
    if not grams:
        return 0.0
    known = set(_ngrams(source))
    return sum(g in known for g in grams) / len(grams)


def _normalized(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def text_flags(text: str, finish_reason: str | None = None) -> list[str]:
    """Flags any generated text can have (all a critique can have): empty, looping, truncated,
    leaked scaffolding."""
    if not text.strip():
        return [EMPTY]
    flags = []
    if repeated_ngram_share(text) > LOOP_SHARE:
        flags.append(REPETITION_LOOP)
    if finish_reason == "length" and not _SENTENCE_END.search(text):
        flags.append(TRUNCATED)
    if _SCAFFOLD.search(text):
        flags.append(SCAFFOLDING)
    return flags


def revision_flags(revision: str, *, critique: str, previous: str,
                   finish_reason: str | None = None) -> list[str]:
    """The flags of one revision, given the critique it answers and the answer it revises."""
    flags = text_flags(revision, finish_reason)
    if EMPTY in flags:
        return flags
    if _normalized(revision) == _normalized(previous):
        flags.append(UNCHANGED)
    elif _overlap(revision, critique) >= COPY_SHARE or _opens_like(revision, critique):
        flags.append(COPIES_CRITIQUE)
    if _ABOUT_ANSWER.search(revision):
        flags.append(DESCRIBES_ANSWER)
    return flags


def _opens_like(revision: str, critique: str) -> bool:
    """Whether the revision's first sentence (6+ words) is a sentence of the critique."""
    first = _FIRST_SENTENCE.match(revision.strip())
    words = _normalized(first.group(1)) if first else ""
    return len(words.split()) >= 6 and words in _normalized(critique)


def round_quality(entry: dict, previous: str, *, critique_finish: str | None = None,
                  revision_finish: str | None = None) -> dict:
    """{round, critique: [...], revision: [...], usable} for one history entry (a critique with its
    revision); ``previous`` is the answer the round revised. A round under ``--until-clean`` whose
    critique found nothing to fix keeps its answer on purpose and is not flagged unchanged."""
    critique = entry.get("critique") or ""
    revision = entry.get("revision") or ""
    c_flags = text_flags(critique, critique_finish)
    r_flags = revision_flags(revision, critique=critique, previous=previous, finish_reason=revision_finish)
    if entry.get("clean") and r_flags == [UNCHANGED]:
        r_flags = []
    return {"round": entry.get("round"), "critique": c_flags, "revision": r_flags,
            "usable": not c_flags and not r_flags}


def history_quality(record: dict) -> list[dict]:
    """``round_quality`` of every completed round of a record, from its ``history`` (and the
    finish reasons ``revise`` kept under ``_cai.quality``, when present)."""
    history = record.get("history")
    if not isinstance(history, list):
        return []
    kept = {q.get("round"): q for q in _stored(record) if _is_key(q.get("round"))}
    previous = record.get("init_response")
    previous = previous if isinstance(previous, str) else ""
    rounds = []
    for entry in history:
        # a round is judged on its texts: one whose critique or revision is not text is not a round
        if not isinstance(entry, dict) or not isinstance(entry.get("revision"), str) \
                or not isinstance(entry.get("critique") or "", str):
            continue
        stored = kept.get(entry.get("round"), {}) if _is_key(entry.get("round")) else {}
        rounds.append(round_quality(entry, previous, critique_finish=stored.get("critique_finish"),
                                    revision_finish=stored.get("revision_finish")))
        if entry.get("kept") is not False:   # a revision --keep-better rejected never became the answer
            previous = entry["revision"]
    return rounds


def _is_key(round_no) -> bool:
    return isinstance(round_no, (int, float, str, type(None)))


def _stored(record: dict) -> list[dict]:
    meta = record.get(CAI_KEY)
    stored = meta.get("quality") if isinstance(meta, dict) else None
    return [dict(q) for q in stored if isinstance(q, dict)] if isinstance(stored, list) else []


def _store(record: dict, round_no, **fields) -> None:
    """Merge ``fields`` into round ``round_no``'s entry of ``record['_cai']['quality']`` (copied, as
    ``add_provenance`` copies, so a shared input record is never changed)."""
    entries = _stored(record)
    entry = next((q for q in entries if q.get("round") == round_no), None)
    if entry is None:
        entry = {"round": round_no}
        entries.append(entry)
    entry.update(fields)
    meta = dict(record.get(CAI_KEY) or {})
    meta["quality"] = entries
    record[CAI_KEY] = meta


def note_truncated_critique(record: dict, round_no) -> None:
    """Remember that round ``round_no``'s critique stopped at ``--max-tokens`` (``revise`` reads it)."""
    _store(record, round_no, critique_finish="length")


def store_round_quality(record: dict, entry: dict, previous: str, revision_finish: str | None) -> dict:
    """Flag the round ``entry`` just completed (its critique's truncation as ``critique`` noted it)
    and keep the flags under ``record['_cai']['quality']``; returns that round's quality."""
    kept = next((q for q in _stored(record) if q.get("round") == entry.get("round")), {})
    quality = round_quality(entry, previous, critique_finish=kept.get("critique_finish"),
                            revision_finish=revision_finish)
    extra = {"revision_finish": "length"} if revision_finish == "length" else {}
    _store(record, entry.get("round"), **{k: v for k, v in quality.items() if k != "round"}, **extra)
    return quality


class QualityTally:
    """Counts usable rounds per round number in a record stream as it passes (``watch``)."""

    def __init__(self):
        self.rounds: dict = {}

    def watch(self, records):
        for rec in records:
            if isinstance(rec, dict):
                for q in _stored(rec):
                    if "usable" in q:
                        self.add(q)
            yield rec

    def add(self, quality: dict) -> None:
        tally = self.rounds.setdefault(quality.get("round"), {"usable": 0, "total": 0, "flags": {}})
        tally["total"] += 1
        tally["usable"] += bool(quality["usable"])
        for flag in {*quality.get("critique", []), *quality.get("revision", [])}:
            tally["flags"][flag] = tally["flags"].get(flag, 0) + 1

    def lines(self) -> list[str]:
        """'round 2: 5 of 8 usable (copies_critique 3)' per round."""
        out = []
        for round_no in sorted(self.rounds, key=lambda r: (r is None, r or 0)):
            t = self.rounds[round_no]
            why = ", ".join(f"{flag} {n}" for flag, n in sorted(t["flags"].items(), key=lambda kv: -kv[1]))
            out.append(f"round {round_no}: {t['usable']} of {t['total']} usable" + (f" ({why})" if why else ""))
        return out
