"""``format --to hf``: the Hugging Face CAI dataset columns, ready for TRL.

Columns as in Hugging Face's CAI recipe: ``init_prompt``, ``init_response``,
``critic_prompt``, ``critic_response``, ``revision_prompt``, ``revision_response`` (of the
last round), ``prompt``, ``messages`` (prompt + final revision, for SFT), ``chosen``
(same as messages) and ``rejected`` (prompt + initial answer), for DPO.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from ..conversation import prompt_messages
from ..errors import RecordError
from ..records import content_id, error_of, require_text, where

HF_COLUMNS = ("id", "init_prompt", "init_response", "critic_prompt", "critic_response",
              "revision_prompt", "revision_response", "prompt", "messages", "chosen", "rejected")


def to_hf(record: dict, *, keep: bool = False) -> dict:
    messages = prompt_messages(record)
    prompt = messages[-1]["content"]
    history = record.get("history")
    if not isinstance(history, list) or not history or "revision" not in history[-1]:
        raise RecordError("no completed critique/revision round to export "
                          "(run 'cai critique | cai revise' first)", where=where(record))
    last = history[-1]
    init = require_text(record, "init_response")
    final = require_text(record, "response")
    row = {
        "id": record.get("id") or content_id(record),
        "init_prompt": prompt,
        "init_response": init,
        "critic_prompt": last.get("critique_request", ""),
        "critic_response": last.get("critique", ""),
        "revision_prompt": last.get("revision_request", ""),
        "revision_response": last["revision"],
        "prompt": prompt,
        "messages": messages + [{"role": "assistant", "content": final}],
        "chosen": messages + [{"role": "assistant", "content": final}],
        "rejected": messages + [{"role": "assistant", "content": init}],
    }
    if keep:
        row = {**record, **row}
    return row


def format_hf(records: Iterable[dict], *, keep: bool = False, on_error: str = "fail",
              on_skip: Callable[[str], None] = lambda why: None) -> Iterator[dict]:
    """HF rows; a record that failed upstream or (with skip) cannot be converted is left
    out, not written with an error (a dataset wants rows only), and reported to ``on_skip``."""
    for rec in records:
        error = error_of(rec)
        if error is not None:
            on_skip(error.get("message", "an earlier error"))  # nothing to train on
            continue
        try:
            yield to_hf(rec, keep=keep)
        except RecordError as exc:
            if on_error == "skip":
                on_skip(str(exc))
                continue
            raise
