"""The llama.cpp engine: local GGUF models through llama-cpp-python.

Prompts are rendered with the model's own chat template (from the GGUF metadata); a GGUF
without one is an error unless ``chat_format`` names a format, because llama-cpp-python
would otherwise fall back to the llama-2 format silently and produce garbage.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ModelError
from ..model_files import check_gguf_file, fingerprint
from .base import EngineInfo, Generation, ItemError, Message, SamplingParams


@contextlib.contextmanager
def _quiet_native_stderr():
    """llama.cpp prints load diagnostics on fd 2 even with verbose=False; keep them off
    the user's terminal unless CAI_LLAMA_VERBOSE is set."""
    if os.environ.get("CAI_LLAMA_VERBOSE"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _named_formatter(name: str):
    from llama_cpp import llama_chat_format as cf

    key = name.replace("-", "").replace("_", "").lower()
    for attr in dir(cf):
        if attr.startswith("format_") and attr[7:].replace("_", "").lower() == key:
            return getattr(cf, attr)
    known = sorted(a[7:] for a in dir(cf) if a.startswith("format_"))
    raise ModelError(f"unknown chat format '{name}' (known: {', '.join(known)}, or a Jinja "
                     "template file)")


class LlamaCppEngine:
    """Generation on a local GGUF. Items of a batch are decoded one after another here;
    the interface takes batches so a batched decoder can replace this without the steps
    noticing."""

    def __init__(self, model_path: str, *, n_ctx: int = 4096, n_gpu_layers: int | None = None,
                 n_threads: int | None = None, chat_format: str | None = None):
        path = check_gguf_file(model_path)
        import llama_cpp
        from llama_cpp import llama_chat_format as cf

        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        try:
            with _quiet_native_stderr():
                self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx,
                                           n_gpu_layers=n_gpu_layers, n_threads=n_threads,
                                           verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load {path} (truncated or unsupported "
                             f"GGUF?): {exc}") from None
        self.n_ctx = self.llm.n_ctx()
        template = self.llm.metadata.get("tokenizer.chat_template")
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        eos = self.llm._model.token_get_text(eos_id) if eos_id >= 0 else ""
        bos = self.llm._model.token_get_text(bos_id) if bos_id >= 0 else ""
        if chat_format and Path(chat_format).is_file():
            template, chat_format = Path(chat_format).read_text(encoding="utf-8"), None
        if chat_format:
            self.formatter = _named_formatter(chat_format)
        elif template:
            self.formatter = cf.Jinja2ChatFormatter(template=template, eos_token=eos,
                                                    bos_token=bos, stop_token_ids=[eos_id])
        else:
            self.close()
            raise ModelError(f"{path} has no chat template in its metadata; pass --chat-format "
                             "(e.g. chatml, llama-2, or a Jinja template file)")
        self.info = EngineInfo(backend="llama.cpp", model=path.name, fingerprint=fingerprint(path),
                               options={"n_ctx": self.n_ctx, "n_gpu_layers": n_gpu_layers,
                                        "chat_format": chat_format or "gguf"})

    def render(self, chat: list[Message]) -> tuple[list[int], list[str]]:
        """The token ids of a chat prompt, and any stop strings its format adds."""
        formatted = self.formatter(messages=chat)
        add_bos = not getattr(formatted, "added_special", False) and \
            self.llm.metadata.get("tokenizer.ggml.add_bos_token", "true") != "false"
        tokens = self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=add_bos, special=True)
        stop = formatted.stop or []
        return tokens, [stop] if isinstance(stop, str) else list(stop)

    def generate(self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]):
        out: list[Generation | ItemError] = []
        for chat, p in zip(chats, params):
            tokens, stop = self.render(chat)
            if len(tokens) >= self.n_ctx:
                out.append(ItemError(f"prompt is {len(tokens)} tokens, longer than the context "
                                     f"({self.n_ctx}); raise --ctx or shorten the input"))
                continue
            result = self.llm.create_completion(
                prompt=tokens, max_tokens=min(p.max_tokens, self.n_ctx - len(tokens)),
                temperature=p.temperature, top_p=p.top_p, seed=p.seed,
                stop=[*stop, *p.stop] or None)
            choice = result["choices"][0]
            usage = result.get("usage", {})
            out.append(Generation(text=choice["text"], prompt_tokens=usage.get("prompt_tokens", 0),
                                  completion_tokens=usage.get("completion_tokens", 0),
                                  finish_reason=choice.get("finish_reason") or "stop"))
        return out

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
