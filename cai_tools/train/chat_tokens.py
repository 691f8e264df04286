"""Chats to token ids for training, through the chat template sampling uses.

Training must see a prompt exactly as llama.cpp will see it when the model answers: the same
template, quirks folded the same way (no system role, alternation), the reasoning block of a
thinking model closed the same way, and a BOS token under the same rule (added when the
vocabulary asks for one and the template did not write it, as llama-server does). So nothing
here calls ``tokenizer.apply_chat_template``: prompts are rendered by ``ChatTemplate`` (from the
tokenizer's own template) and tokenized as text; an answer is followed by the template's end
of turn, so the model learns to stop.

For a GGUF base the text is tokenized by llama.cpp itself (the vocabulary alone, loaded in a
blink): transformers' conversion of a sentencepiece vocabulary differs from llama.cpp's around
control tokens (Mistral's ``[INST]`` followed by text, Phi-3's ``<|user|>\n``), and training on
other ids than sampling reads would teach a context the model never sees.
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


_VOCABS: dict[str, object] = {}   # GGUF path -> its llama.cpp vocabulary (NativeModel, vocab only)


def use_llama_cpp_vocab(tokenizer, gguf: str) -> None:
    """Encode this tokenizer's training text with ``gguf``'s llama.cpp vocabulary."""
    from pathlib import Path

    from ..engines.llama_native import NativeModel

    path = str(Path(gguf).resolve())
    if path not in _VOCABS:
        _VOCABS[path] = NativeModel(path, vocab_only=True)
    tokenizer._cai_vocab = _VOCABS[path]


def _adds_bos(tokenizer) -> bool:
    """Whether the (transformers) tokenizer puts BOS in front of a text by itself."""
    cached = getattr(tokenizer, "_cai_adds_bos", None)
    if cached is None:
        bos = tokenizer.bos_token_id
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        cached = bos is not None and bool(ids) and ids[0] == bos
        tokenizer._cai_adds_bos = cached
    return cached


def encode(tokenizer, text: str, *, bos: bool = True) -> list[int]:
    """Token ids of rendered text; with ``bos``, BOS in front when the model wants one and the text
    does not already start with it."""
    vocab = getattr(tokenizer, "_cai_vocab", None)
    if vocab is not None:   # llama.cpp's own tokenizer: the ids sampling reads
        ids = vocab.tokenize(text, add_special=False)
        if bos and vocab.add_bos and vocab.bos >= 0 and (not ids or ids[0] != vocab.bos):
            ids.insert(0, vocab.bos)
        return ids
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


def response_mask(response, eos_id: int, pad_id: int):
    """The generated part of ``generate``'s output (``response``, the prompt cut off): 1 for tokens up
    to and including the first end-of-sequence (or pad), else 0."""
    import torch

    is_end = (response == eos_id) | (response == pad_id)
    ended_before = torch.cumsum(is_end.long(), dim=1) - is_end.long()
    return (ended_before == 0).long()
