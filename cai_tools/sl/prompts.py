"""The conversations SL-CAI sends to the model, and cleaning what comes back.

Critique and revision are asked as follow-up turns of the original conversation, after
the constitution's worked examples (shown as earlier turns: small models confuse critique
and revision without them, as the paper notes). The system prompt and the examples come
first and are the same for every record, so an engine can decode them once and share them.
"""

from __future__ import annotations

import re

from ..constitutions.constitution import Constitution

Message = dict


def few_shot_turns(constitution: Constitution) -> list[Message]:
    """The constitution's system prompt and worked examples as chat turns (prompt, answer,
    critique request, critique, revision request, revision), to go before a record's conversation."""
    turns: list[Message] = []
    if constitution.system_prompt:
        turns.append({"role": "system", "content": constitution.system_prompt})
    for ex in constitution.few_shot:
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": ex.critique_request},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": ex.revision_request},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


def _conversation(constitution: Constitution, messages: list[Message]) -> list[Message]:
    # A record's own system turn would sit after the examples, where templates reject it.
    body = [m for m in messages if m["role"] != "system"]
    return few_shot_turns(constitution) + body


def critique_chat(constitution: Constitution, messages: list[Message], response: str,
                  critique_request: str) -> list[Message]:
    """The chat asking for a critique: the few-shot turns, the record's conversation (its system
    turns dropped), the ``response`` and then the ``critique_request``."""
    return _conversation(constitution, messages) + [
        {"role": "assistant", "content": response},
        {"role": "user", "content": critique_request},
    ]


def revision_chat(constitution: Constitution, messages: list[Message], response: str,
                  critique_request: str, critique: str, revision_request: str) -> list[Message]:
    """The critique chat continued with the ``critique`` and then the ``revision_request``."""
    return critique_chat(constitution, messages, response, critique_request) + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": revision_request},
    ]


# What a critique says when it finds nothing to fix (``--until-clean``).
_CLEAN = re.compile(
    r"\b(no (further )?(changes?|revisions?|edits?) (is |are )?(needed|necessary|required)"
    r"|nothing (needs to be |to )?(fix|change|revise|correct)(ed)?"
    r"|no (issues|problems) (were )?(found|to (fix|address))"
    r"|(does not|doesn't) contain anything (harmful|problematic|objectionable))\b",
    re.I)


def critique_is_clean(critique: str) -> bool:
    """Whether a critique says there is nothing to fix ("no changes are needed"...), for
    ``until_clean``."""
    return bool(_CLEAN.search(critique))


_SCAFFOLD = [
    re.compile(r"^\s*(revision|revised (response|answer|version)|rewritten (response|answer)"
               r"|rewrite|new response)\s*:\s*", re.I),
    re.compile(r"^\s*((sure|okay|ok|certainly|of course|absolutely)[,!.]?\s*)?"
               r"(here('s| is)|below is)\s+(a|an|the|my)\s+(revised|rewritten|new|updated|improved)"
               r"[^:\n]*[:.]\s*", re.I),
]
# A model that runs on into the next turn of the examples' pattern.
_RUN_ON = re.compile(r"\n\s*(critique( request)?|revision( request)?)\s*:", re.I)


def clean_revision(text: str) -> str:
    """Strip leaked scaffolding ('Revision:', 'Sure, here is a revised response:')."""
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for pat in _SCAFFOLD:
            new = pat.sub("", text, count=1).lstrip()
            if new != text and new:
                text, changed = new, True
    cut = _RUN_ON.search(text)
    if cut:
        text = text[:cut.start()].rstrip()
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def clean_critique(text: str) -> str:
    """The critique without a leading 'Critique:' label, cut where the model runs on into a
    revision or critique request."""
    text = text.strip()
    text = re.sub(r"^\s*critique\s*:\s*", "", text, flags=re.I)
    cut = re.search(r"\n\s*(revision( request)?|critique request)\s*:", text, re.I)
    return text[:cut.start()].rstrip() if cut else text
