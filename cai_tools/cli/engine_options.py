"""Opening the engine the user's --model and related options name."""

from __future__ import annotations

from ..engines.base import Engine
from ..errors import UsageError
from .common import Console

_URL_SCHEMES = ("http://", "https://")


def open_engine(model: str | None, console: Console, *, ctx: int, n_gpu_layers: int | None,
                threads: int | None, chat_format: str | None, parallel: int = 8,
                server: str | None = None, prefix_cache: str | None = None,
                lora: str | None = None, lora_scale: float = 1.0) -> Engine:
    """A llama.cpp engine for a GGUF file (the default model when none is named).

    ``fake`` names the deterministic test engine (no model; for tests and dry runs).
    An http(s):// ``model`` is the base URL of an OpenAI-compatible server (with or without
    the trailing /v1) whose served model is discovered; ``server`` gives the URL instead,
    ``model`` then being the served model's name (discovered when None). With a server,
    ``parallel`` is how many requests are in flight at once.
    """
    if server is None and model is not None and model.startswith(_URL_SCHEMES):
        server, model = model, None
    if server is not None:
        if lora is not None:
            raise UsageError("--lora applies to a local GGUF model; load the adapter in the "
                             "server instead (llama-server --lora FILE)")
        return _open_server(server, model, console, parallel=parallel, chat_format=chat_format,
                            n_gpu_layers=n_gpu_layers)
    if model == "fake":
        from ..engines.fake_engine import FakeEngine

        if lora is not None:
            raise UsageError("--lora needs a real GGUF model, not the fake engine")

        return FakeEngine()
    from ..engines.llama_cpp_engine import LlamaCppEngine
    from ..model_files import resolve_model

    path = resolve_model(model, announce=console.note)
    return LlamaCppEngine(path, n_ctx=ctx, n_gpu_layers=n_gpu_layers, n_threads=threads,
                          chat_format=chat_format, n_parallel=parallel, prefix_cache=prefix_cache,
                          lora=lora, lora_scale=lora_scale)


def _open_server(server: str, model: str | None, console: Console, *, parallel: int,
                 chat_format: str | None, n_gpu_layers: int | None) -> Engine:
    from ..engines.openai_http_engine import OpenAIHttpEngine, split_credentials

    if not server.startswith(_URL_SCHEMES):
        raise UsageError(f"--server must be an http:// or https:// URL, not '{split_credentials(server)[0]}'")
    if model is not None and model.startswith(_URL_SCHEMES):
        raise UsageError("with --server, --model is the served model's name, not a URL")
    # The server owns the model: its chat template and GPU placement are its business.
    if chat_format is not None:
        console.note("--chat-format is ignored with a server (it applies its own template)")
    if n_gpu_layers is not None:
        console.note("--n-gpu-layers is ignored with a server")
    engine = OpenAIHttpEngine(server, model, parallel=parallel)
    found = "" if model else " (discovered)"
    console.note(f"using server {engine.base_url}, model {engine.model_name}{found}, "
                 f"--parallel {engine.parallel}")
    return engine
