"""Chats to token ids for training, through the chat template sampling uses.

Training must see a prompt exactly as llama.cpp will see it when the model answers: the same
template, quirks folded the same way (no system role, alternation), the reasoning block of a
thinking model closed the same way, and a BOS token under the same rule (added when the
vocabulary asks for one and the template did not write it, as llama-server does). So nothing
here calls ``tokenizer.apply_chat_template``: prompts are rendered by ``ChatTemplate`` (from the
tokenizer's own template) and tokenized as text; an answer is followed by the template's end
of turn, so the model learns to stop.
"""

from __future__ import annotations

from ..models.chat_template import ChatTemplate


def chat_template(tokenizer) -> ChatTemplate:
    """The tokenizer's template as a ChatTemplate (thinking off), made once per tokenizer."""
    template = getattr(tokenizer, "_cai_template", None)
    if template is None:
        source = tokenizer.chat_template
        if isinstance(source, dict):   # named templates (tool use, RAG...): the default one
            source = source.get("default") or next(iter(source.values()), "")
        template = ChatTemplate(source, bos_token=tokenizer.bos_token or "",
                                eos_token=tokenizer.eos_token or "",
                                name=getattr(tokenizer, "name_or_path", "") or "the model")
        tokenizer._cai_template = template
    return template


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts BOS in front of a text by itself (``add_special_tokens``)."""
    cached = getattr(tokenizer, "_cai_adds_bos", None)
    if cached is None:
        bos = tokenizer.bos_token_id
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        cached = bos is not None and bool(ids) and ids[0] == bos
        tokenizer._cai_adds_bos = cached
    return cached


def encode(tokenizer, text: str, *, bos: bool = True) -> list[int]:
    """Token ids of rendered text; with ``bos``, BOS in front when the tokenizer adds one and the
    text does not already start with it."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if bos and _adds_bos(tokenizer) and (not ids or ids[0] != tokenizer.bos_token_id):
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The text the model continues to answer ``messages`` (ending where the answer starts)."""
    return chat_template(tokenizer).prompt(messages, thinking=False)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    return encode(tokenizer, prompt_text(tokenizer, messages))


def answer_ids(tokenizer, answer: str) -> list[int]:
    """An answer's ids, the template's end of turn included (no BOS)."""
    return encode(tokenizer, answer + chat_template(tokenizer).completion_suffix(), bos=False)


def example_ids(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of a conversation whose last turn is the assistant's answer."""
    return prompt_ids(tokenizer, messages[:-1]), answer_ids(tokenizer, messages[-1]["content"])


def conversation_ids(tokenizer, messages: list[dict], max_length: int) -> list[int]:
    """A whole conversation ending in the assistant's answer, its end kept when too long (a PM
    reads its reward at the last token)."""
    prompt, answer = example_ids(tokenizer, messages)
    return (prompt + answer)[-max_length:]


def text_for_trl(tokenizer, text: str) -> str:
    """A rendered prompt for TRL's text datasets, which tokenize with special tokens on: without
    the template's BOS when the tokenizer adds its own (else there would be two)."""
    bos = tokenizer.bos_token or ""
    if bos and _adds_bos(tokenizer) and text.startswith(bos):
        return text[len(bos):]
    return text


def left_padded_prompts(tokenizer, prompts: list[list[dict]], device) -> dict:
    """``input_ids`` and ``attention_mask`` of prompt conversations, left-padded for ``generate``."""
    import torch

    rows = [prompt_ids(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
