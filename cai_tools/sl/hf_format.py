"""``format --to hf``: the Hugging Face CAI dataset columns, ready for TRL.

Columns as in Hugging Face's CAI recipe: ``init_prompt``, ``init_response``,
``critic_prompt``, ``critic_response``, ``revision_prompt``, ``revision_response`` (of the
last round, or of the last one ``revise --keep-better`` kept), ``prompt``, ``messages``
(prompt + final revision, for SFT), ``chosen`` (same as messages) and ``rejected`` (prompt +
initial answer), for DPO.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from ..conversation import prompt_messages
from ..errors import RecordError
from ..records import content_id, error_of, require_text, where, with_error
from ..record_batches import OnError

HF_COLUMNS = ("id", "init_prompt", "init_response", "critic_prompt", "critic_response",
              "revision_prompt", "revision_response", "prompt", "messages", "chosen", "rejected")


def to_hf(record: dict, *, keep: bool = False) -> dict:
    """One record's Hugging Face row (``HF_COLUMNS``) from ``prompt``/``messages``, ``init_response``,
    ``response`` and the last ``history`` round; ``keep`` keeps the record's other fields too.
    RecordError when there is no completed critique/revision round."""
    messages = prompt_messages(record)
    prompt = messages[-1]["content"]
    history = record.get("history")
    if not isinstance(history, list) or not history or "revision" not in history[-1]:
        raise RecordError("no completed critique/revision round to export "
                          "(run 'cai critique | cai revise' first)", where=where(record))
    # a round 'revise --keep-better' rejected never became the answer: export the last kept one
    kept = [h for h in history if isinstance(h, dict) and "revision" in h and h.get("kept") is not False]
    if not kept:
        raise RecordError("every revision round was rejected by 'revise --keep-better': no revision "
                          "to export", where=where(record))
    last = kept[-1]
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


def format_hf(records: Iterable[dict], *, keep: bool = False, on_error: OnError = OnError.fail) -> Iterator[dict]:
    """HF rows, one per record. As in every step, a record that failed upstream passes on
    untouched and (with skip) one that cannot be converted is written with ``_cai.error``;
    ``cai sft`` and TRL loaders skip such rows."""
    for rec in records:
        if error_of(rec) is not None:
            yield rec
            continue
        try:
            yield to_hf(rec, keep=keep)
        except RecordError as exc:
            if on_error == OnError.skip:
                yield with_error(rec, "format", str(exc))
                continue
            raise
