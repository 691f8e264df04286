"""What an evaluation compares and how: the models (``ModelSpec``), the settings (``EvalSettings``),
the two prompt sets (``PROMPT_SETS``, ``load_eval_prompts``) and the progress hook (``Tracker``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..conversation import prompt_messages
from ..errors import InputError, UsageError
from ..records import read_records, where
from ..sl.judge import JudgeSettings
from ..sl.sampling import Sampling

PROMPT_SETS = ("harmless", "helpful")   # red-team prompts, ordinary requests
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# track(items, stage, total) -> the same items; the CLI shows progress through it.
Tracker = Callable[[Iterable, str, int], Iterable]


def untracked(items: Iterable, stage: str, total: int) -> Iterable:
    return items


@dataclass(frozen=True)
class ModelSpec:
    """One model under evaluation: ``NAME=MODEL[+LORA]`` on the command line."""

    name: str
    model: str | None          # GGUF path (None: the default model) or a server URL
    lora: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        name, sep, rest = text.partition("=")
        if not sep:
            rest = text
        # MODEL.gguf+LORA.gguf (the last '.gguf+' splits); an empty MODEL is the default one
        split = re.match(r"^(.*\.gguf|)\+(.+)$", rest)
        model, lora = (split.group(1), split.group(2)) if split else (rest, "")
        if not sep:  # a bare path is named after its file (the adapter's, when there is one)
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(lora or model).stem)
        if not _NAME.match(name):
            raise UsageError(f"--model {text!r}: the name must be letters, digits, '_', '.' or '-' "
                             "(write NAME=MODEL.gguf[+LORA.gguf])")
        return cls(name, model or None, lora or None)

    def as_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "lora": self.lora}


@dataclass
class EvalSettings:
    """Options of one evaluation: the answers' seed and sampling, judge principles per comparison
    (``ensemble``), batch size, and the bootstrap's resamples and confidence level."""

    seed: int = 0
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=96))
    ensemble: int = 1
    batch_size: int = 16
    bootstrap: int = 1000
    level: float = 0.95

    def judge_settings(self) -> JudgeSettings:
        """How the judge reads every comparison (and the labelled pairs of the judge check)."""
        return JudgeSettings(ensemble=self.ensemble, seed=self.seed)


def load_eval_prompts(path: str, split: str | None, limit: int | None = None) -> list[dict]:
    """The prompts of ``split`` (records without a 'split' field all count), in file order."""
    kept, seen = [], set()
    for rec in read_records(path):
        if split is not None and rec.get("split", split) != split:
            continue
        messages = prompt_messages(rec)          # raises a RecordError naming file:line
        if not isinstance(rec.get("id"), str):
            raise InputError("eval prompts need a string 'id'", where=where(rec))
        if rec["id"] in seen:
            raise InputError(f"duplicate prompt id '{rec['id']}'", where=where(rec))
        seen.add(rec["id"])
        kept.append({"id": rec["id"], "prompt": messages, "category": rec.get("category")})
        if limit and len(kept) >= limit:
            break
    if not kept:
        which = f" in split '{split}'" if split else ""
        raise InputError(f"no prompts{which}", where=path)
    return kept


def check_models(models: Sequence[ModelSpec]) -> None:
    """UsageError unless there are at least two models, each with its own name."""
    if len(models) < 2:
        raise UsageError("eval compares two or more models: repeat --model NAME=MODEL.gguf[+LORA.gguf]")
    names = [m.name for m in models]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"two models are named '{dup}': give each --model its own NAME=")
