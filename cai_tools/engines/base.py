"""The engine interface every step generates through.

An engine takes whole batches, so a backend can batch and share prefixes without the
steps knowing. One item's failure (a prompt longer than the context, say) is returned in
its slot as an ``ItemError`` instead of failing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

Message = dict


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: the user's options for a whole step (``Sampling`` in the steps), and
    with a per-record ``seed`` (``params(seed)``) what one engine call gets."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0
    stop: tuple[str, ...] = ()

    def params(self, seed: int) -> "SamplingParams":
        """These options with one call's seed."""
        return replace(self, seed=seed)

    def as_dict(self) -> dict:
        """The options a user chose, for provenance (not the per-call seed or stops)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k}


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


@dataclass
class ItemError:
    message: str


@dataclass
class EngineInfo:
    """What provenance records about the engine that produced a text."""

    backend: str
    model: str
    fingerprint: str | None = None
    options: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"backend": self.backend, "model": self.model,
                "fingerprint": self.fingerprint, **self.options}


class Engine(Protocol):
    info: EngineInfo

    def generate(
        self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]
    ) -> list[Generation | ItemError]:
        """One completion per chat, in order; ``params[i]`` (with its seed) for ``chats[i]``."""
        ...

    def choice_logprobs(
        self, chats: Sequence[list[Message]], options: Sequence[Sequence[str]], *, cue: str = ""
    ) -> list[list[float] | ItemError]:
        """For each chat, the log-probability of each of its option strings as the start of
        the assistant's reply, after ``cue`` (e.g. "The answer is:"). Options are scored as
        whole strings (however the tokenizer splits "(A)" or " (A)"), in one forward pass per
        option and no text generation. Returned in the order of ``options[i]``."""
        ...

    def close(self) -> None: ...
