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
    """The deterministic test engine (no model): replies hash chat and seed, or come from
    ``responder(chat, params)``; a chat over ``max_prompt_chars`` characters is an ItemError.
    Every call is kept in ``calls`` and every batch size in ``batch_sizes``."""

    def __init__(self, responder: Callable[[list[Message], SamplingParams], str] | None = None,
                 max_prompt_chars: int = 100_000,
                 chooser: Callable[[list[Message], list[str]], list[float]] | None = None):
        self.responder = responder
        self.chooser = chooser
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

    def choice_logprobs(self, chats, options, *, cue: str = ""):
        """Deterministic log-probabilities from a hash of (chat, cue, option); ``chooser``
        (chat, options) -> list of floats overrides them in tests."""
        out: list[list[float] | ItemError] = []
        for chat, opts in zip(chats, options):
            self.calls.append((chat, ("choice", tuple(opts), cue)))
            if self.chooser is not None:
                out.append(list(self.chooser(chat, list(opts))))
                continue
            scores = []
            for o in opts:
                h = hashlib.sha256(orjson.dumps([chat, cue, o])).digest()
                scores.append(-0.1 - 5.0 * int.from_bytes(h[:4], "little") / 2**32)
            out.append(scores)
        return out

    def close(self) -> None:
        self.closed = True
