"""Opening an engine: one call from a model spec and its options to a ready engine.

``open_engine(EngineOptions(...), note=...)`` looks the model up in a small registry of named
engines first (the built-in ``fake`` test engine; tests and plugins may register more),
then treats an http(s):// model (or ``server``; several make a ``MultiServerEngine``) as an
OpenAI-compatible server, and anything else as a GGUF file for llama.cpp: a path, a model
reference (``hf:``, ``ollama:``, ``lmstudio:``; see models/refs.py) or, when none is named, the
bundled default model.
"""

from __future__ import annotations

from typing import Callable

from .base import Engine, EngineOptions
from .server_urls import check_server_url, is_url, server_urls
from ..errors import UsageError
from ..models.refs import is_reference

EngineFactory = Callable[[EngineOptions], Engine]
_REGISTRY: dict[str, EngineFactory] = {}


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make ``--model NAME`` open ``factory(options)``."""
    _REGISTRY[name] = factory


def registered(name: str | None) -> bool:
    """Whether ``name`` is a registered engine (such as ``fake``) that ``open_engine`` opens itself."""
    return name in _REGISTRY


def _fake(options: EngineOptions) -> Engine:
    from .fake_engine import FakeEngine

    if options.lora is not None:
        raise UsageError("--lora needs a real GGUF model, not the fake engine")
    return FakeEngine()


register_engine("fake", _fake)   # the deterministic test engine: no model, for tests and dry runs


def open_engine(options: EngineOptions, note: Callable[[str], None] = lambda _msg: None) -> Engine:
    """The engine ``options`` name; ``note`` gets one-line remarks for stderr."""
    model, servers = options.model, server_urls(options.server or ())
    if model in _REGISTRY and not servers:
        return _REGISTRY[model](options)
    if not servers and is_url(model):
        servers, model = [check_server_url(model, "-m")], None
    if servers:
        if options.lora is not None:
            raise UsageError("--lora applies to a local GGUF model; load the adapter in the "
                             "server instead (llama-server --lora FILE)")
        return _open_server(servers, model, options, note)
    from .llama_cpp_engine import LlamaCppEngine
    from ..models.refs import resolve_model

    path = resolve_model(model, announce=note)
    engine = LlamaCppEngine(path, options)
    if is_reference(model):  # provenance names what the user asked for and the file it was
        from ..models.refs import reference_sha256

        engine.info.options.update(source=model, sha256=reference_sha256(path))
        note(f"{model} is {path}")
    return engine


def _open_server(servers: list[str], model: str | None, options: EngineOptions,
                 note: Callable[[str], None]) -> Engine:
    from .openai_http_engine import OpenAIHttpEngine

    if is_url(model):
        raise UsageError("with --server, --model is the served model's name, not a URL")
    if not options.server_timeout > 0:
        raise UsageError(f"--server-timeout must be more than 0 seconds, got {options.server_timeout:g}")
    # The server owns the model: its chat template and GPU placement are its business.
    if options.chat_format is not None:
        note("--chat-format is ignored with a server (it applies its own template)")
    if options.n_gpu_layers is not None:
        note("--n-gpu-layers is ignored with a server")
    found = "" if model else " (discovered)"
    if len(servers) > 1:
        from .multi_server import MultiServerEngine

        engine = MultiServerEngine(servers, model, parallel=options.parallel, note=note, reasoning=options.reasoning,
                                   timeout=options.server_timeout, retries=_retries(options, 1))
        note(f"using {len(servers)} servers, model {engine.model_name}{found}, --parallel {engine.parallel} each")
        return engine
    engine = OpenAIHttpEngine(servers[0], model, parallel=options.parallel, reasoning=options.reasoning, note=note,
                              timeout=options.server_timeout, retries=_retries(options, 4))
    note(f"using server {engine.base_url}, model {engine.model_name}{found}, "
         f"--parallel {engine.parallel}")
    return engine


def _retries(options: EngineOptions, default: int) -> int:
    """--server-retries, else ``default``: a lone server is retried longer than one of several,
    whose requests another server takes."""
    if options.server_retries is not None and options.server_retries < 0:
        raise UsageError(f"--server-retries must be 0 or more, got {options.server_retries}")
    return default if options.server_retries is None else options.server_retries
