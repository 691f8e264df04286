"""Constitutions: the principles critiques, revisions and judgements are made against.

YAML format (all keys but ``critique_revision`` optional; unknown keys are errors, so a
typo never silently drops a principle)::

    name: harmless
    description: free text
    system_prompt: text put before every critique/revision conversation
    critique_revision:            # principle pairs for SL-CAI
      - id: harmful
        critique: "Identify specific ways in which the last response is harmful ..."
        revision: "Rewrite the response to remove everything harmful ..."
        weight: 1.0               # optional sampling weight, > 0
    judge:                        # multiple-choice principles for RL-CAI labels
      - id: less-harmful
        text: "Which of these responses is less harmful? ..."
        weight: 1.0
    few_shot:                     # worked examples shown before every critique/revision
      - prompt: "..."
        response: "..."
        principle: harmful        # id of a critique_revision pair (its texts are used)
        critique: "..."
        revision: "..."
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConstitutionError
from ..yaml_files import error_line, load_yaml

# the bundled YAML files: the checkout's constitutions/ (this file is cai_tools/constitutions/constitution.py)
CONSTITUTIONS_DIR = Path(__file__).resolve().parents[2] / "constitutions"

TOP_KEYS = {"name", "description", "system_prompt", "critique_revision", "judge", "few_shot",
            "judge_few_shot"}
JUDGE_FEW_SHOT_KEYS = {"prompt", "response_a", "response_b", "answer", "principle"}
PAIR_KEYS = {"id", "critique", "revision", "weight"}
JUDGE_KEYS = {"id", "text", "weight"}
FEW_SHOT_KEYS = {"prompt", "response", "principle", "critique_request", "critique",
                 "revision_request", "revision"}


@dataclass(frozen=True)
class CritiqueRevisionPrinciple:
    """A critique request and its revision request (a ``critique_revision`` entry), sampling weight."""

    id: str
    critique: str
    revision: str
    weight: float = 1.0

    def as_judge(self) -> "JudgePrinciple":
        """This pair as a multiple-choice judge question: which answer has fewer of the problems its
        critique looks for (``revise --keep-better`` judges a round under the round's principle)."""
        return JudgePrinciple(f"round:{self.id}", f'Which of these answers has fewer of the problems '
                                                  f'this asks about? "{self.critique}"')


@dataclass(frozen=True)
class JudgePrinciple:
    """A multiple-choice question for comparing two answers (a ``judge`` entry); ``weight`` is its
    sampling weight."""

    id: str
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class FewShotExample:
    """A worked critique/revision example shown before every critique and revision, with its
    request texts resolved (from its principle when it names one)."""

    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


@dataclass(frozen=True)
class JudgeExample:
    """A worked comparison shown before each judgement: ``answer`` is "A" or "B";
    ``principle`` a judge principle id."""

    prompt: str
    response_a: str
    response_b: str
    answer: str
    principle: str


@dataclass
class Constitution:
    """A validated constitution: principle pairs, judge principles and worked examples; ``path`` is
    where it was read from, for error messages."""

    name: str
    critique_revision: list[CritiqueRevisionPrinciple]
    judge: list[JudgePrinciple] = field(default_factory=list)
    few_shot: list[FewShotExample] = field(default_factory=list)
    judge_few_shot: list[JudgeExample] = field(default_factory=list)
    system_prompt: str | None = None
    description: str | None = None
    path: str | None = None

    def principle(self, principle_id: str) -> CritiqueRevisionPrinciple:
        for p in self.critique_revision:
            if p.id == principle_id:
                return p
        known = ", ".join(p.id for p in self.critique_revision)
        raise ConstitutionError(f"unknown principle id '{principle_id}' (known: {known})",
                                where=self.path)

    def judge_principle(self, principle_id: str) -> JudgePrinciple:
        for j in self.judge:
            if j.id == principle_id:
                return j
        known = ", ".join(j.id for j in self.judge) or "none"
        raise ConstitutionError(f"unknown judge principle id '{principle_id}' (known: {known})",
                                where=self.path)

    def sample_judge_principles(self, rng: random.Random, k: int) -> list[JudgePrinciple]:
        """k judge principles by weight, distinct while there are enough of them."""
        pool, out = list(self.judge), []
        while len(out) < k:
            if not pool:
                pool = list(self.judge)
            pick = rng.choices(pool, weights=[j.weight for j in pool])[0]
            pool.remove(pick)
            out.append(pick)
        return out

    def sample_principle(self, rng: random.Random) -> CritiqueRevisionPrinciple:
        """One critique/revision pair, drawn with replacement by weight (the paper's choice)."""
        return rng.choices(self.critique_revision, weights=[p.weight for p in self.critique_revision])[0]

    def to_dict(self) -> dict:
        out: dict = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.system_prompt:
            out["system_prompt"] = self.system_prompt
        out["critique_revision"] = [_drop_default_weight(vars(p)) for p in self.critique_revision]
        if self.judge:
            out["judge"] = [_drop_default_weight(vars(p)) for p in self.judge]
        if self.few_shot:
            out["few_shot"] = [dict(vars(e)) for e in self.few_shot]
        if self.judge_few_shot:
            out["judge_few_shot"] = [dict(vars(e)) for e in self.judge_few_shot]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)


def _drop_default_weight(d: dict) -> dict:
    d = dict(d)
    if d.get("weight") == 1.0:
        d.pop("weight")
    return d


def find_constitution(name_or_path: str) -> Path:
    """A path as given, or a bundled constitution by name ('harmless' -> constitutions/harmless.yaml)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    bundled = CONSTITUTIONS_DIR / f"{name_or_path}.yaml"
    if bundled.exists() and "/" not in name_or_path:
        return bundled
    raise ConstitutionError("constitution file not found", where=str(p))


def load_constitution(name_or_path: str) -> Constitution:
    """Read and validate a constitution file, or a bundled one by name (see ``find_constitution``);
    ConstitutionError naming the file (and line) when it is missing, unreadable or invalid."""
    path = find_constitution(name_or_path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problem, line = error_line(exc)
        raise ConstitutionError(f"not valid YAML: {problem}", where=f"{path}:{line}" if line else str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConstitutionError(f"cannot read: {exc}", where=str(path)) from None
    return parse_constitution(data, str(path))


def parse_constitution(data: object, source: str) -> Constitution:
    """Validate a parsed YAML/JSON object; errors name the source and the offending entry."""

    def fail(msg: str, entry: str | None = None):
        raise ConstitutionError(f"{entry}: {msg}" if entry else msg, where=source)

    if not isinstance(data, dict):
        fail("the top level must be a mapping with a 'critique_revision' list")
    unknown = set(data) - TOP_KEYS
    if unknown:
        fail(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
             f"(allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "description", "system_prompt"):
        if data.get(key) is not None and not isinstance(data[key], str):
            fail(f"'{key}' must be a string")

    pairs = _entries(data, "critique_revision", PAIR_KEYS, ("id", "critique", "revision"), fail,
                     required=True)
    judges = _entries(data, "judge", JUDGE_KEYS, ("id", "text"), fail)
    by_id = {p["id"]: p for p in pairs}

    few_shot = []
    for i, ex in enumerate(data.get("few_shot") or []):
        entry = f"few_shot[{i}]"
        _check_example(ex, entry, FEW_SHOT_KEYS, ("prompt", "response", "critique", "revision"), fail)
        principle = ex.get("principle")
        if principle is not None:
            if not isinstance(principle, str) or principle not in by_id:
                fail(f"principle {principle!r} is not a critique_revision id", entry)
            crit_req = ex.get("critique_request", by_id[principle]["critique"])
            rev_req = ex.get("revision_request", by_id[principle]["revision"])
        else:
            crit_req, rev_req = ex.get("critique_request"), ex.get("revision_request")
        if not isinstance(crit_req, str) or not isinstance(rev_req, str):
            fail("needs 'principle' or string 'critique_request' and 'revision_request'", entry)
        few_shot.append(FewShotExample(ex["prompt"], ex["response"], crit_req, ex["critique"],
                                       rev_req, ex["revision"]))

    judge_ids = {j["id"] for j in judges}
    judge_few_shot = []
    for i, ex in enumerate(data.get("judge_few_shot") or []):
        entry = f"judge_few_shot[{i}]"
        _check_example(ex, entry, JUDGE_FEW_SHOT_KEYS, ("prompt", "response_a", "response_b"), fail)
        if ex.get("answer") not in ("A", "B"):
            fail(f"'answer' must be \"A\" or \"B\", got {ex.get('answer')!r}", entry)
        principle = ex.get("principle", judges[0]["id"] if judges else None)
        if not isinstance(principle, str) or principle not in judge_ids:
            fail(f"principle {principle!r} is not a judge id", entry)
        judge_few_shot.append(JudgeExample(ex["prompt"], ex["response_a"], ex["response_b"],
                                           ex["answer"], principle))

    return Constitution(
        name=data.get("name") or Path(source).stem,
        description=data.get("description"),
        system_prompt=data.get("system_prompt"),
        critique_revision=[CritiqueRevisionPrinciple(**p) for p in pairs],
        judge=[JudgePrinciple(**j) for j in judges],
        few_shot=few_shot,
        judge_few_shot=judge_few_shot,
        path=source,
    )


def _check_example(ex, entry: str, allowed: set, required_texts: tuple, fail) -> None:
    """An entry (a principle, a few-shot example) is a mapping of known keys with the
    required non-empty strings."""
    if not isinstance(ex, dict):
        fail("must be a mapping", entry)
    unknown = set(ex) - allowed
    if unknown:
        fail(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}", entry)
    for key in required_texts:
        if not isinstance(ex.get(key), str) or not ex[key].strip():
            fail(f"needs a non-empty string '{key}'", entry)


def _entries(data: dict, key: str, allowed: set, required_fields: tuple, fail, required=False):
    items = data.get(key)
    if items is None:
        if required:
            fail(f"'{key}' is missing: a constitution needs at least one principle pair")
        return []
    if not isinstance(items, list) or (required and not items):
        fail(f"'{key}' must be a non-empty list")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        entry = f"{key}[{i}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            entry += f" (id '{item['id']}')"
        _check_example(item, entry, allowed, required_fields, fail)
        if item["id"] in seen:
            fail(f"duplicate id '{item['id']}'", entry)
        seen.add(item["id"])
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            fail(f"'weight' must be a positive number (and finite), got {weight!r}", entry)
        out.append({**{f: item[f] for f in required_fields}, "weight": float(weight)})
    if not math.isfinite(sum(item["weight"] for item in out)):   # sampling adds them up
        fail(f"the weights of '{key}' add up to more than a number can hold: use smaller ones")
    return out
