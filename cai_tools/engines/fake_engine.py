"""A deterministic engine for unit tests of the record logic. Not a model.

Its text is a hash of the conversation and the sampling seed (so seeding is testable);
tests can pass ``responder`` to script replies, and inspect ``calls``.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import orjson

from .base import EngineInfo, Generation, ItemError, Message, SamplingParams


class FakeEngine:
    def __init__(self, responder: Callable[[list[Message], SamplingParams], str] | None = None,
                 max_prompt_chars: int = 100_000):
        self.responder = responder
        self.max_prompt_chars = max_prompt_chars
        self.calls: list[tuple[list[Message], SamplingParams]] = []
        self.batch_sizes: list[int] = []
        self.info = EngineInfo(backend="fake", model="fake")
        self.closed = False

    def generate(self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]):
        self.batch_sizes.append(len(chats))
        out: list[Generation | ItemError] = []
        for chat, p in zip(chats, params):
            self.calls.append((chat, p))
            if sum(len(m["content"]) for m in chat) > self.max_prompt_chars:
                out.append(ItemError(f"prompt is longer than the context "
                                     f"({self.max_prompt_chars} characters)"))
                continue
            if self.responder is not None:
                text = self.responder(chat, p)
            else:
                key = orjson.dumps([chat, p.seed if p.temperature > 0 else 0])
                text = f"fake reply {hashlib.sha256(key).hexdigest()[:12]}"
            out.append(Generation(text=text, prompt_tokens=len(chat), completion_tokens=len(text.split())))
        return out

    def close(self) -> None:
        self.closed = True
