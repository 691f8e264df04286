"""Opening the engine the user's --model and related options name."""

from __future__ import annotations

from ..engines.base import Engine
from .common import Console


def open_engine(model: str | None, console: Console, *, ctx: int, n_gpu_layers: int | None,
                threads: int | None, chat_format: str | None, parallel: int = 8) -> Engine:
    """A llama.cpp engine for a GGUF file (the default model when none is named).

    ``fake`` names the deterministic test engine (no model; for tests and dry runs).
    """
    if model == "fake":
        from ..engines.fake_engine import FakeEngine

        return FakeEngine()
    from ..engines.llama_cpp_engine import LlamaCppEngine
    from ..model_files import resolve_model

    path = resolve_model(model, announce=console.note)
    return LlamaCppEngine(path, n_ctx=ctx, n_gpu_layers=n_gpu_layers, n_threads=threads,
                          chat_format=chat_format, n_parallel=parallel)
