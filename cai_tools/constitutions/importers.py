"""Importing the two public constitution formats users already have.

- Hugging Face llm-swarm JSON: ``{"constitutions": [{"critic": ..., "revision": ...}],
  "system_chat": [[messages...], ...]}``; each system_chat conversation is a worked
  example: user prompt, answer, critique request, critique, revision request, revision.
- Anthropic's prompt repository: ``CritiqueRevisionInstructions.json`` (an object of
  ``{"prompt": [critique request], "edit_request": revision request}``) and
  ``RLMadisonInstructions.json`` (a list of multiple-choice principle strings).

The format of each file is recognised from its content.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConstitutionError
from .constitution import Constitution, parse_constitution


def detect_format(data: object) -> str:
    """Which public format parsed JSON is in: "llm-swarm", "anthropic-critique-revision",
    "anthropic-judge", or "unknown"."""
    if isinstance(data, dict) and "constitutions" in data:
        return "llm-swarm"
    if isinstance(data, dict) and data and all(
            isinstance(v, dict) and "edit_request" in v for v in data.values()):
        return "anthropic-critique-revision"
    if isinstance(data, list) and data and all(isinstance(v, str) for v in data):
        return "anthropic-judge"
    return "unknown"


def import_constitution(paths: list[str], name: str = "imported") -> Constitution:
    """Merge one or more files of the public formats into one validated Constitution."""
    merged: dict = {"name": name, "critique_revision": [], "judge": [], "few_shot": []}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConstitutionError("file not found", where=path) from None
        except OSError as exc:
            raise ConstitutionError(f"cannot read: {exc.strerror}", where=path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConstitutionError(f"not valid JSON: {exc}", where=path) from None
        fmt = detect_format(data)
        if fmt == "llm-swarm":
            _from_llm_swarm(data, path, merged)
        elif fmt == "anthropic-critique-revision":
            _from_anthropic_pairs(data, path, merged)
        elif fmt == "anthropic-judge":
            for i, text in enumerate(data):
                merged["judge"].append({"id": f"judge-{len(merged['judge']) + 1:02d}", "text": text})
        else:
            raise ConstitutionError(
                "unrecognised format: expected llm-swarm JSON ({\"constitutions\": [...]}), "
                "Anthropic CritiqueRevisionInstructions.json or RLMadisonInstructions.json",
                where=path)
    if not merged["critique_revision"]:
        raise ConstitutionError("no critique/revision principles found in "
                                + ", ".join(paths) + " (a constitution needs at least one)")
    for key in ("judge", "few_shot"):
        if not merged[key]:
            merged.pop(key)
    return parse_constitution(merged, "+".join(paths))


def _from_llm_swarm(data: dict, path: str, merged: dict) -> None:
    pairs = data.get("constitutions")
    if not isinstance(pairs, list):
        raise ConstitutionError("'constitutions' must be a list", where=path)
    for i, item in enumerate(pairs):
        if not isinstance(item, dict) or not isinstance(item.get("critic"), str) \
                or not isinstance(item.get("revision"), str):
            raise ConstitutionError(f"constitutions[{i}]: needs string 'critic' and 'revision'",
                                    where=path)
        merged["critique_revision"].append({
            "id": f"p{len(merged['critique_revision']) + 1:02d}",
            "critique": item["critic"], "revision": item["revision"]})
    chats = data.get("system_chat") or []
    if not isinstance(chats, list):
        raise ConstitutionError("'system_chat' must be a list of conversations", where=path)
    if chats and isinstance(chats[0], dict):  # one flat conversation
        chats = [chats]
    for i, chat in enumerate(chats):
        ok = isinstance(chat, list) and all(isinstance(m, dict) for m in chat)
        turns = [m.get("content") for m in chat] if ok else []
        if not ok or not turns or len(turns) % 6 or not all(isinstance(t, str) for t in turns):
            raise ConstitutionError(
                f"system_chat[{i}]: expected groups of 6 messages (prompt, answer, critique "
                "request, critique, revision request, revision)", where=path)
        for k in range(0, len(turns), 6):
            p, r, cq, c, rq, rv = turns[k:k + 6]
            merged["few_shot"].append({
                "prompt": p, "response": r, "critique_request": cq,
                "critique": _strip_label(c, "Critique"), "revision_request": rq,
                "revision": _strip_label(rv, "Revision")})


def _from_anthropic_pairs(data: dict, path: str, merged: dict) -> None:
    for key, item in data.items():
        prompt = item.get("prompt")
        critique = prompt[0] if isinstance(prompt, list) and prompt else prompt
        if not isinstance(critique, str) or not isinstance(item.get("edit_request"), str):
            raise ConstitutionError(f"entry '{key}': needs 'prompt' and a string 'edit_request'",
                                    where=path)
        merged["critique_revision"].append({"id": _slug(key), "critique": critique,
                                            "revision": item["edit_request"]})


def _strip_label(text: str, label: str) -> str:
    return re.sub(rf"^\s*{label}( Request)?\s*:\s*", "", text, flags=re.I)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "principle"
