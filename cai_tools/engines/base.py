"""The engine interface every step generates through.

An engine takes whole batches, so a backend can batch and share prefixes without the
steps knowing. One item's failure (a prompt longer than the context, say) is returned in
its slot as an ``ItemError`` instead of failing the batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

from ..option_fields import option

Message = dict


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: the user's options for a whole step (``Sampling`` in the steps), and
    with a per-record ``seed`` (``params(seed)``) what one engine call gets."""

    max_tokens: int = option(256, "Most new tokens per answer.")
    temperature: float = option(0.7, "Sampling temperature (0 = greedy).")
    top_p: float = option(0.95, "Nucleus sampling mass.")
    top_k: int = option(40, "Sample among the K likeliest tokens (0: all).")
    seed: int = option(0, "Run seed; every record gets its own seed from it.")
    stop: tuple[str, ...] = ()

    def params(self, seed: int) -> "SamplingParams":
        """These options with one call's seed."""
        return replace(self, seed=seed)

    def as_dict(self) -> dict:
        """The options a user chose, for provenance (not the per-call seed or stops)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k}


@dataclass(frozen=True)
class EngineOptions:
    """Which model to run and how: filled once by the CLI and passed whole to the engine."""

    model: str | None = option(
        None, "GGUF model file (default: the bundled SmolLM2-135M-Instruct).", flags=("--model", "-m"))
    server: tuple[str, ...] = option(
        (), "OpenAI-compatible server URL (repeat, or @FILE of URLs); --model is then the served name.")
    server_timeout: float = option(
        120.0, "Seconds a server may take to answer one request (waiting in its queue included) before "
               "the request is retried.")
    server_retries: int | None = option(
        None, "Retries of a failed or timed-out request (after 1, 2, 4... s) before the step stops.",
        default_help="4; 1 per server with several")
    lora: str | None = option(
        None, "LoRA adapter GGUF to apply to the model (make one with 'cai export RUN --gguf FILE').")
    lora_scale: float = option(1.0, "Strength of the --lora adapter (1 = as trained).")
    ctx: int = option(4096, "Context length per sequence, in tokens.", flags=("--ctx",))
    n_gpu_layers: int | None = option(
        None, "Layers to offload to the GPU (default: all when llama.cpp has a GPU backend, else 0).")
    threads: int | None = option(None, "CPU threads (default: every core this process may use).")
    parallel: int = option(
        8, "Sequences llama.cpp decodes at once (continuous batching; KV memory grows with it).")
    prefix_cache: str | None = option(
        None, "Folder for an on-disk cache of shared prompt prefixes, so later runs start warm.", envvar="CAI_PREFIX_CACHE")
    chat_format: str | None = option(
        None, "Chat format when the GGUF has no template: a llama-cpp-python name, human-assistant or a Jinja file.")
    reasoning: str = option(
        "auto", "Reasoning models: auto (thinking off where possible), on (reasoning kept in provenance) or off.")
    max_thinking_tokens: int = option(512, "With --reasoning on: most tokens of reasoning before the answer.")

    def with_model(self, model: str | None, lora: str | None = None) -> "EngineOptions":
        return dataclasses.replace(self, model=model, lora=lora)


@dataclass
class Generation:
    """One completion: its text, the prompt and completion token counts, why it stopped
    ("stop", "length" at ``max_tokens``, or what a server reports) and a reasoning model's
    reasoning, taken out of the text."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    reasoning: str | None = None


@dataclass
class ItemError:
    """One item's failure (a prompt longer than the context, say), returned in its slot instead
    of a result so the rest of the batch still counts."""

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
    """What every backend provides: ``info`` for provenance, batched ``generate`` and
    ``choice_logprobs`` (an item's failure comes back as an ItemError in its slot), and ``close``."""

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
