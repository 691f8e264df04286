"""Preference records (chosen vs rejected, with a soft label) in the layouts users have.

- ``cai judge`` / ``cai pairs`` and TRL's explicit-prompt form: ``prompt`` (a string or a
  list of messages), ``chosen`` / ``rejected`` (a string or a list of assistant messages),
  ``label`` = P(chosen is better) (default 1);
- TRL's implicit-prompt form: ``chosen`` / ``rejected`` are whole conversations sharing
  their first turns;
- Anthropic HH strings: ``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` in ``chosen`` / ``rejected``.

Each becomes a ``Preference``: the two full conversations (ending in the compared answers)
and the label.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

from ..conversation import ROLES
from ..errors import InputError, RecordError
from ..records import error_of, read_records, where
from .sft_data import parse_mix


@dataclass
class Preference:
    """One comparison: the two whole conversations, ending in the chosen and the rejected answer,
    and ``label`` = P(chosen is better); ``where`` locates its record."""

    chosen: list[dict]      # the conversation ending in the chosen answer
    rejected: list[dict]    # ... and in the rejected one
    label: float            # P(chosen is better), in [0, 1]
    where: str


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_messages(text: str) -> list[dict] | None:
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))  # ["", role, text, role, text, ...]
    if len(parts) < 3:
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts) - 1, 2)]


def _messages(value, field: str, record: dict) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise RecordError(f"field '{field}' must be a string or a list of {{role, content}} messages",
                      where=where(record))


def preference_of(record: dict) -> Preference:
    """A Preference from a record in any layout the module docstring lists (``label`` defaults to 1);
    RecordError naming the record when a field is missing or malformed."""
    if "chosen" not in record or "rejected" not in record:
        raise RecordError("a preference record needs 'chosen' and 'rejected' (make them with "
                          "'cai judge' or 'cai pairs')", where=where(record))
    label = record.get("label", 1.0)
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0.0 <= label <= 1.0:
        raise RecordError(f"field 'label' must be a probability in [0, 1], got {label!r}", where=where(record))
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" not in record and isinstance(chosen, str) and isinstance(rejected, str):
        c, r = _hh_messages(chosen), _hh_messages(rejected)
        if c is None or r is None:
            raise RecordError("string 'chosen'/'rejected' without a 'prompt' must be Human:/Assistant: "
                              "dialogues", where=where(record))
        return Preference(c, r, float(label), where(record))
    prompt = record.get("prompt", [])
    prompt_msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else \
        _messages(prompt, "prompt", record) if prompt else []
    c, r = _messages(chosen, "chosen", record), _messages(rejected, "rejected", record)
    if c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
        raise RecordError("'chosen' and 'rejected' must end in an assistant answer", where=where(record))
    # Implicit prompt: full conversations already start with the prompt.
    if len(c) > 1:
        prompt_msgs = []
    return Preference(prompt_msgs + c, prompt_msgs + r, float(label), where(record))


def _split_by_source(pool: list[Preference], groups: list[str], fraction: float,
                     rng: random.Random) -> tuple[list[Preference], list[Preference]]:
    """(held out, rest): about ``fraction`` of the pairs, whole groups at a time, so pairs judged
    from one prompt's answers ('source_id') never sit on both sides."""
    by_group: dict[str, list[Preference]] = {}
    for pref, group in zip(pool, groups):
        by_group.setdefault(group, []).append(pref)
    order = list(by_group)
    rng.shuffle(order)
    target = round(fraction * len(pool))
    held: list[Preference] = []
    rest: list[Preference] = []
    for group in order:
        (held if len(held) < target else rest).extend(by_group[group])
    return held, rest


def load_preferences(specs: list[str], *, eval_fraction: float, seed: int,
                     skipped: list | None = None) -> tuple[list[Preference], list[Preference]]:
    """(train, held-out) pairs from ``FILE[:WEIGHT]`` specs. The held-out split is drawn per
    file before weighting (seeded), whole prompts at a time (``source_id``: the pairs ``cai
    judge`` made from one record); WEIGHT resamples the file's training share. Records the
    judge marked ``low_confidence`` are left out (appended to ``skipped`` when given)."""
    train: list[Preference] = []
    held: list[Preference] = []
    for spec in specs:
        path, weight = parse_mix(spec)
        pool, unsure, groups = [], [], []
        for rec in read_records(path):
            if error_of(rec) is not None:
                continue
            if rec.get("low_confidence") is True:
                unsure.append(where(rec))
                continue
            pool.append(preference_of(rec))
            groups.append(rec.get("source_id") or where(rec))
        if skipped is not None:
            skipped += unsure
        if not pool and unsure:
            raise InputError(f"all {len(unsure)} pairs are marked low_confidence by the judge "
                             "('cai judge --min-confidence'): nothing confident to train on", where=path)
        if not pool:
            raise InputError("no preference records in this file (is it empty?)", where=path)
        # Seeded by the file's name, not its folder: the same file elsewhere (a copy, a fresh
        # temporary folder) gets the same split, so --seed repeats a run wherever its data lies.
        rng = random.Random(f"{seed}:{os.path.basename(path)}")
        held_out, rest = _split_by_source(pool, groups, eval_fraction, rng)
        held += held_out
        whole, frac = divmod(weight, 1.0)
        train += rest * int(whole) + rng.sample(rest, round(frac * len(rest)))
    if not train:
        raise InputError("no training pairs left after the held-out split", where=", ".join(specs))
    return train, held
