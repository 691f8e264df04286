"""A small, checked wrapper over llama-cpp-python's low-level model API.

The high-level ``Llama`` object owns one single-sequence context; batched decoding needs a
context of our own with several sequences, so the model is loaded here directly and
shared by every context made from it. Every pointer llama.cpp returns is checked: a NULL
becomes a ModelError instead of a segfault later.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

from ..errors import ModelError


@contextlib.contextmanager
def quiet_native_stderr():
    """llama.cpp prints load diagnostics on fd 2; keep them off the user's terminal unless
    CAI_LLAMA_VERBOSE is set."""
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


def _silence_llama_log() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _ignore(level, text, user_data):  # noqa: ARG001
        if os.environ.get("CAI_LLAMA_VERBOSE"):
            sys.stderr.write(text.decode("utf-8", "replace"))

    global _LOG_CALLBACK  # keep a reference: llama.cpp holds the pointer
    _LOG_CALLBACK = _ignore
    llama_cpp.llama_log_set(_ignore, ctypes.c_void_p(0))


_LOG_CALLBACK = None


class NativeModel:
    """A loaded GGUF: weights, vocabulary, metadata and tokenizer."""

    def __init__(self, path: str, *, n_gpu_layers: int = 0, vocab_only: bool = False):
        """Load ``path``; ``vocab_only``: its vocabulary and metadata alone (no weights, instant)."""
        import llama_cpp as L

        self.L = L
        _silence_llama_log()
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.vocab_only = vocab_only
        with quiet_native_stderr():
            self.model = L.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            raise ModelError(f"llama.cpp could not load {path} (truncated or unsupported GGUF?)")
        self.adapters: list = []
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(self.model)
        self.metadata = self._read_metadata()

    def _read_metadata(self) -> dict[str, str]:
        L, out = self.L, {}
        buf = ctypes.create_string_buffer(1 << 16)
        for i in range(L.llama_model_meta_count(self.model)):
            if L.llama_model_meta_key_by_index(self.model, i, buf, len(buf)) < 0:
                continue
            key = buf.value.decode("utf-8", "replace")
            n = L.llama_model_meta_val_str_by_index(self.model, i, None, 0)
            val = ctypes.create_string_buffer(max(n, 0) + 1)
            L.llama_model_meta_val_str_by_index(self.model, i, val, len(val))
            out[key] = val.value.decode("utf-8", "replace")
        return out

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.L.llama_token * cap)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (self.L.llama_token * cap)()
            n = self.L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special,
                                      parse_special)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""

    def is_eog(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    @property
    def bos(self) -> int:
        return self.L.llama_vocab_bos(self.vocab)

    @property
    def eos(self) -> int:
        return self.L.llama_vocab_eos(self.vocab)

    @property
    def add_bos(self) -> bool:
        return bool(self.L.llama_vocab_get_add_bos(self.vocab))

    def load_lora(self, path: str):
        """A LoRA adapter for this model (checked beforehand by ``check_lora_file``)."""
        with quiet_native_stderr():
            adapter = self.L.llama_adapter_lora_init(self.model, path.encode())
        if not adapter:
            raise ModelError(f"llama.cpp could not load the LoRA adapter {path}")
        self.adapters.append(adapter)
        return adapter

    def close(self) -> None:
        for adapter in getattr(self, "adapters", []):
            self.L.llama_adapter_lora_free(adapter)
        self.adapters = []
        if getattr(self, "model", None):
            self.L.llama_model_free(self.model)
            self.model = None
