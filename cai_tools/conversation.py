"""Turning records into chat conversations (lists of {role, content} messages)."""

from __future__ import annotations

from .errors import RecordError
from .records import where

Message = dict  # {"role": str, "content": str}
ROLES = {"system", "user", "assistant"}


def prompt_messages(record: dict) -> list[Message]:
    """The conversation a record asks the model to answer: its ``messages`` or ``prompt``.

    Raises RecordError naming the record and field on a missing or mistyped field.
    """
    if "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise RecordError("field 'messages' must be a non-empty list", where=where(record))
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                    or not isinstance(m.get("content"), str):
                raise RecordError(
                    f"messages[{i}] must be an object with string 'role' and 'content'",
                    where=where(record),
                )
            if m["role"] not in ROLES:
                raise RecordError(f"messages[{i}].role '{m['role']}' is not one of "
                                  f"{', '.join(sorted(ROLES))}", where=where(record))
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise RecordError("the last of 'messages' must be a user turn", where=where(record))
        return out
    if "prompt" not in record:
        raise RecordError("record has neither 'prompt' nor 'messages'", where=where(record))
    prompt = record["prompt"]
    if not isinstance(prompt, str):
        raise RecordError(f"field 'prompt' must be a string, got {type(prompt).__name__}",
                          where=where(record))
    if not prompt.strip():
        raise RecordError("field 'prompt' is empty", where=where(record))
    return [{"role": "user", "content": prompt}]


def prompt_text(record: dict) -> str:
    """The user's (last) request as plain text, for dataset columns."""
    return prompt_messages(record)[-1]["content"]


def with_system(messages: list[Message], system: str | None) -> list[Message]:
    """``messages`` with a ``system`` turn put first, unless ``system`` is empty or the
    conversation already starts with a system turn (then ``messages`` as given)."""
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]
