"""Is a model's output one red-team request? ``clean_output`` strips labels, list marks and quotes;
``request_problem`` names why a text is not a single request (a ``REASONS`` entry); and the counts of
what was kept and dropped, per theme (``Tally``, ``RedteamStats``)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable

from .near_dup import content_words, normalise
from .redteam_prompts import BENIGN_INSTRUCTION, INSTRUCTION

MIN_WORDS = 4     # the seed prompts have 7-17 words; under 4 is a fragment
MAX_WORDS = 60    # one request, not an essay: beyond 60 words it is a story or an answer

REASONS = ("empty", "instructions", "multiple", "extra text", "too long", "too short", "answer",
           "not a request", "off topic", "exact dup", "near dup", "engine error")

_LABEL = re.compile(r"^(?:(?:new|another|my|the|your|one|harmful|red[- ]team)\s+)*"
                    r"(?:request|prompt|question|query|user|human|example)"
                    r"(?:\s+about\s+[\w\s-]{1,30}?)?(?:\s*\d+)?\s*:\s*", re.I)
_LIST_MARK = re.compile(r"^(?:\d+\s*[.)]|[-*\u2022])\s+")
_INLINE_LIST = re.compile(r"(?:^|\s)1[.)]\s.+\s2[.)]\s")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_QUESTIONS = re.compile(r"[^?]+\?")
_ANSWER = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great|yes|no|here(?:'s| is| are)|"
    r"i(?:'m| am) sorry|sorry|i (?:can't|cannot|can not|won't|will not)|as an ai|"
    r"as a language model|step \d|first,|to \w+ .*,)\b", re.I)
_REQUEST = re.compile(
    r"^(?:please\s+)?(?:write|give|tell|help|explain|list|show|describe|create|make|generate|draft|"
    r"compose|suggest|teach|recommend|find|pretend|act|imagine|convince|design|plan|outline|"
    r"provide|share|send|translate|summari[sz]e|rewrite|produce|build|come up|invent|"
    r"can you|could you|would you|will you|i want|i need|i'd like|i would like|let's|"
    r"how|what|why|where|which|who|when|is it|is there|are there|should i|do you|does)\b", re.I)


# ---------------------------------------------------------------- is it one request?


def clean_output(text: str) -> str:
    """The model's text without a leading label ("Request:"), list mark or surrounding quotes."""
    text = text.strip()
    for _ in range(2):   # a label inside quotes, or quotes after a label
        text = _LABEL.sub("", text).strip()
        text = _LIST_MARK.sub("", text).strip()
        core = text.rstrip("?.!")   # '"How do I ...?"' and '"How do I ..."?' alike
        if len(core) > 1 and text[0] in _QUOTES and core[-1] in _QUOTES:
            text = (core[1:-1] + text[len(core):]).strip()
    return text


def _is_request(line: str) -> bool:
    line = _LIST_MARK.sub("", line.strip()).strip(_QUOTES)
    return line.endswith("?") or bool(_REQUEST.match(line))


def _trigrams(text: str) -> set[str]:
    words = normalise(text).split()
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}


_INSTRUCTION_TRIGRAMS = _trigrams(INSTRUCTION.replace("{theme}", "")) | _trigrams(
    BENIGN_INSTRUCTION.replace("{prompt}", ""))


def request_problem(text: str) -> str | None:
    """Why ``text`` (cleaned) is not a single request (a ``REASONS`` entry), or None."""
    if not re.search(r"\w", text):
        return "empty"
    grams = _trigrams(text)
    if grams and len(grams & _INSTRUCTION_TRIGRAMS) / len(grams) >= 0.5:
        return "instructions"
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return "multiple" if sum(map(_is_request, lines)) > 1 else "extra text"
    questions = [q for q in _QUESTIONS.findall(text) if len(q.split()) >= 3]
    if _INLINE_LIST.search(text) or sum(map(_is_request, questions)) > 1:
        return "multiple"
    words = len(text.split())
    if words > MAX_WORDS:
        return "too long"
    if words < MIN_WORDS:
        return "too short"
    if _ANSWER.match(text):
        return "answer"
    if not _is_request(text):
        return "not a request"
    return None


def benign_problem(match_prompt: str) -> Callable[[str], str | None]:
    """The check of a benign match for ``match_prompt``: a single request sharing a content word with it."""
    topic = content_words(match_prompt)

    def problem(text: str) -> str | None:
        reason = request_problem(text)
        if reason is None and not content_words(text) & topic:
            return "off topic"
        return reason
    return problem


# ---------------------------------------------------------------- statistics


@dataclass
class Tally:
    """One theme's (or kind's) counts: generations, prompts kept, drops by reason, and how many
    of the duplicates were of a seed prompt."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    dup_of_seed: int = 0
    examples: defaultdict = field(default_factory=lambda: defaultdict(list))   # reason -> texts

    def add(self, other: "Tally") -> None:
        self.generated += other.generated
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.dup_of_seed += other.dup_of_seed
        for reason, texts in other.examples.items():
            self.examples[reason].extend(texts[: 3 - len(self.examples[reason])])


@dataclass
class RedteamStats:
    """Counts per theme for the red-team prompts and the benign ones, the prompts wanted, and
    the slots (kind, theme) that ran out of attempts."""

    redteam: dict[str, Tally] = field(default_factory=dict)
    benign: dict[str, Tally] = field(default_factory=dict)
    wanted: int = 0
    resumed: int = 0
    generations: int = 0   # engine generations, including attempts made ahead of need and unused
    unfilled: list[tuple[str, str]] = field(default_factory=list)

    def tally(self, kind: str, theme: str) -> Tally:
        return (self.redteam if kind == "redteam" else self.benign).setdefault(theme, Tally())

    @staticmethod
    def total(tallies: dict[str, Tally]) -> Tally:
        out = Tally()
        for t in tallies.values():
            out.add(t)
        return out

    def as_dict(self) -> dict:
        def one(t: Tally) -> dict:
            return {"generated": t.generated, "kept": t.kept, "dropped": dict(t.dropped),
                    "dup_of_seed": t.dup_of_seed, "dropped_examples": dict(t.examples)}
        return {"wanted": self.wanted, "resumed": self.resumed, "generations": self.generations,
                "redteam": {k: one(v) for k, v in self.redteam.items()},
                "benign": {k: one(v) for k, v in self.benign.items()},
                "unfilled": [list(u) for u in self.unfilled]}

    def report(self) -> list[str]:
        """Lines for stderr: per kind a summary, then a table per theme."""
        lines: list[str] = []
        for kind, tallies in (("red-team", self.redteam), ("benign", self.benign)):
            if not tallies:
                continue
            total = self.total(tallies)
            per = f"{total.generated / total.kept:.2f}" if total.kept else "-"
            drops = ", ".join(f"{r} {total.dropped[r]}" for r in REASONS if total.dropped[r])
            dups = total.dropped["exact dup"] + total.dropped["near dup"]
            lines.append(f"{kind}: kept {total.kept} from {total.generated} generations ({per} per kept "
                         f"prompt); dropped {sum(total.dropped.values())}" + (f": {drops}" if drops else "")
                         + (f" ({total.dup_of_seed} of the {dups} duplicates were of a seed prompt)"
                            if dups else ""))
            reasons = [r for r in REASONS if total.dropped[r]]
            width = max(len(t) for t in tallies) + 2
            lines.append(("  " + "theme".ljust(width) + "generated  kept  " + "  ".join(reasons)).rstrip())
            for theme in sorted(tallies):
                t = tallies[theme]
                cells = "  ".join(str(t.dropped[r]).rjust(len(r)) for r in reasons)
                lines.append(("  " + theme.ljust(width) + f"{t.generated:>9}  {t.kept:>4}  {cells}").rstrip())
        unused = self.generations - sum(t.generated for t in [*self.redteam.values(), *self.benign.values()])
        if unused > 0:
            lines.append(f"({unused} more generations were made ahead of need, to fill batches, and not used)")
        if self.resumed:
            lines.append(f"(counts cover this run only: {self.resumed} records came from --resume)")
        return lines
