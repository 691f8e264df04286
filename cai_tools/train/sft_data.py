"""Training examples for ``sft``: chat conversations whose last turn is the target.

From CAI records: the prompt and the final revision, or (``all_rounds``, the paper's
choice) one example per round's revision. From ``--mix`` files: any record that already
is a conversation ending in an assistant turn (Hugging Face ``messages``, ``chosen``) or
a prompt with a ``response``. Each example is tokenized with the base's chat template
(rendered as sampling renders it) and the loss covers the assistant reply only.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..conversation import ROLES, prompt_messages
from ..errors import InputError, RecordError, UsageError
from ..records import error_of, read_records, where
from ..sl.quality import history_quality

IGNORE = -100  # label id the loss skips (PyTorch's cross-entropy default)


@dataclass
class Example:
    """One training chat whose last (assistant) turn is the target; ``where`` locates its record."""

    messages: list[dict]   # ..., {"role": "assistant", "content": target}
    where: str


def _conversation(record: dict, field: str) -> list[dict] | None:
    msgs = record.get(field)
    if not isinstance(msgs, list) or len(msgs) < 2:
        return None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError(f"{field}[{i}] must be an object with a role and string content",
                              where=where(record))
    if msgs[-1]["role"] != "assistant":
        return None
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def cai_examples(record: dict, all_rounds: bool, dropped: Counter | None = None) -> list[Example]:
    """prompt → final revision (or → each round's revision) of one CAI record. With ``dropped``
    given, rounds with a quality flag (``sl.quality``) are left out and counted there by flag."""
    history = record.get("history")
    rounds = [h for h in history if isinstance(h, dict) and isinstance(h.get("revision"), str)] \
        if isinstance(history, list) else []
    if not rounds:
        raise RecordError("no revision to train on (run 'cai critique | cai revise' first, or "
                          "pass conversations with --mix)", where=where(record))
    prompt = prompt_messages(record)
    quality = history_quality(record) if dropped is not None else [None] * len(rounds)  # one per round
    # a revision --keep-better's judge rejected never became the answer: nothing to learn from it
    kept = [(h["revision"], q) for h, q in zip(rounds, quality) if h.get("kept") is not False]
    if not kept:
        # every revision rejected: the answer is the unrevised one, which SL-CAI must not teach
        if dropped is not None:
            dropped[ALL_REJECTED] += 1
        return []
    targets = kept if all_rounds else \
        [(record.get("response", rounds[-1]["revision"]), kept[-1][1])]
    examples = []
    for text, q in targets:
        if q is not None and not q["usable"]:
            dropped["rounds"] += 1
            dropped.update(set(q["critique"]) | set(q["revision"]))
        elif isinstance(text, str) and text.strip():
            examples.append(Example(prompt + [{"role": "assistant", "content": text}], where(record)))
    return examples


def mix_examples(record: dict) -> list[Example]:
    """A helpfulness record: a conversation ending in the assistant's reply."""
    for field in ("messages", "chosen"):
        conv = _conversation(record, field)
        if conv is not None:
            return [Example(conv, where(record))]
    if isinstance(record.get("response"), str) and record["response"].strip():
        return [Example(prompt_messages(record) + [{"role": "assistant", "content": record["response"]}],
                        where(record))]
    if "history" in record:
        return cai_examples(record, all_rounds=False)
    raise RecordError("no conversation to train on: expected 'messages' (ending in an assistant "
                      "turn), 'chosen', or 'prompt' + 'response'", where=where(record))


def parse_mix(spec: str) -> tuple[str, float]:
    """'FILE:WEIGHT' (weight defaults to 1)."""
    path, sep, weight = spec.rpartition(":")
    if not sep or not weight.replace(".", "", 1).isdigit():
        return spec, 1.0
    if float(weight) <= 0:
        raise UsageError(f"--mix {spec}: the weight must be positive")
    return path, float(weight)


ALL_REJECTED = "records with every revision rejected"   # a key of the ``dropped`` counter


def left_out_summary(dropped: Counter) -> str:
    """What the quality filter and --keep-better's verdicts left out, in words."""
    flags = ", ".join(f"{f} {n}" for f, n in dropped.most_common() if f not in ("rounds", ALL_REJECTED))
    parts = []
    if dropped[ALL_REJECTED]:
        parts.append(f"{dropped[ALL_REJECTED]} records whose every revision 'revise --keep-better' rejected")
    if dropped["rounds"]:
        parts.append(f"{dropped['rounds']} flagged SL-CAI rounds ({flags}); --keep-flagged keeps them")
    return " and ".join(parts)


def load_examples(data: list[str], *, all_rounds: bool, mix: list[str], seed: int,
                  dropped: Counter | None = None) -> list[Example]:
    """Every training example, with mix files resampled to WEIGHT × their size (seeded). With
    ``dropped``, flagged SL-CAI rounds are left out and counted there (``rounds`` and per flag)."""
    examples: list[Example] = []
    for path in data:
        examples += _read(path, lambda r: cai_examples(r, all_rounds, dropped), dropped)
    for spec in mix:
        path, weight = parse_mix(spec)
        pool = _read(path, mix_examples)
        whole, frac = divmod(weight, 1.0)
        rng = random.Random(f"{seed}:{Path(path).name}")   # the file's name, not its folder: a copy samples alike
        examples += pool * int(whole) + rng.sample(pool, round(frac * len(pool)))
    if not examples:
        raise InputError("no training examples in the data files", where=", ".join(data + mix))
    return examples


def _read(path: str, convert, dropped: Counter | None = None) -> list[Example]:
    if path != "-" and not Path(path).is_file():
        raise InputError("no such data file", where=path)
    out: list[Example] = []
    for rec in read_records(path):
        if error_of(rec) is not None:
            continue  # failed upstream: nothing to learn from
        out += convert(rec)
    if not out and dropped:
        raise InputError(f"no usable SL-CAI rounds to train on: left out {left_out_summary(dropped)}",
                         where=path)
    if not out:
        raise InputError("no training examples in this file (is it empty?)", where=path)
    return out


def tokenize_example(tokenizer, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE outside the final assistant reply (and its end of
    turn). The prompt is rendered as sampling renders it (``chat_tokens``)."""
    from .chat_tokens import example_ids

    prompt_ids, answer_ids = example_ids(tokenizer, example.messages)
    full_ids = (prompt_ids + answer_ids)[:max_length]
    labels = [IGNORE] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
    return full_ids, labels
