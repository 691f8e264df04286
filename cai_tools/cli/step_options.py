"""The options every generating step takes, declared once.

``@generating_step(max_tokens=N)`` adds the engine, sampling and record-stream options to a
command's signature (typer reads the signature) and hands them to the command as one
``StepOptions`` object, so generate, critique, revise and judge cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Iterator, List, Optional

import typer

from ..engines.base import Engine
from ..sl.sampling import Sampling
from .options import (BatchOpt, ChatFormatOpt, CtxOpt, DebugOpt, GpuLayersOpt, LoraOpt,
                      LoraScaleOpt, MaxTokensOpt, ModelOpt, OnError, OnErrorOpt, ParallelOpt,
                      PrefixCacheOpt, QuietOpt, ResumeOpt, SeedOpt, ServerOpt, TemperatureOpt,
                      ThreadsOpt, TopKOpt, TopPOpt)
from .running import Console, check_positive


@dataclass
class StepOptions:
    model: Optional[str] | list[str] = None
    server: Optional[str] = None
    lora: Optional[str] = None
    lora_scale: float = 1.0
    seed: int = 0
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int = 256
    ctx: int = 4096
    n_gpu_layers: Optional[int] = None
    threads: Optional[int] = None
    parallel: int = 8
    prefix_cache: Optional[str] = None
    chat_format: Optional[str] = None
    batch_size: int = 32
    resume: Optional[Path] = None
    on_error: OnError = OnError.fail
    quiet: bool = False
    debug: bool = False

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                        top_p=self.top_p, top_k=self.top_k)

    @contextmanager
    def engine(self, console: Console) -> Iterator[Engine]:
        """The engine these options name, closed on the way out (even on errors)."""
        with self.engines(console) as engines:
            yield engines[0]

    @contextmanager
    def engines(self, console: Console) -> Iterator[list[Engine]]:
        """One engine per --model (a step that takes several, like judge), all closed after."""
        from ..engines import EngineOptions, open_engine

        check_positive("--batch-size", self.batch_size)
        check_positive("--parallel", self.parallel)
        check_positive("--max-tokens", self.max_tokens)
        models = self.model if isinstance(self.model, list) else [self.model]
        opened: list[Engine] = []
        try:
            for model in models or [None]:
                opened.append(open_engine(EngineOptions(
                    model=model, server=self.server, lora=self.lora, lora_scale=self.lora_scale,
                    ctx=self.ctx, n_gpu_layers=self.n_gpu_layers, threads=self.threads,
                    parallel=self.parallel, prefix_cache=self.prefix_cache,
                    chat_format=self.chat_format), note=console.note))
            yield opened
        finally:
            for engine in opened:
                engine.close()


_OPTION_TYPES = {
    "model": ModelOpt, "server": ServerOpt, "lora": LoraOpt, "lora_scale": LoraScaleOpt,
    "seed": SeedOpt, "temperature": TemperatureOpt,
    "top_p": TopPOpt, "top_k": TopKOpt, "max_tokens": MaxTokensOpt, "ctx": CtxOpt,
    "n_gpu_layers": GpuLayersOpt, "threads": ThreadsOpt, "parallel": ParallelOpt,
    "prefix_cache": PrefixCacheOpt, "chat_format": ChatFormatOpt, "batch_size": BatchOpt,
    "resume": ResumeOpt, "on_error": OnErrorOpt, "quiet": QuietOpt, "debug": DebugOpt,
}


MultiModelOpt = Annotated[Optional[List[str]], typer.Option(
    "--model", "-m", help="GGUF model file; repeat to average over several judge models "
                          "(default: the bundled SmolLM2-135M-Instruct).")]


def generating_step(*, multi_model: bool = False, **defaults):
    """Decorate a command ``fn(..., opts: StepOptions)``; ``defaults`` override StepOptions'.
    ``multi_model`` lets --model repeat (``opts.model`` is then a list)."""
    types = dict(_OPTION_TYPES, model=MultiModelOpt) if multi_model else _OPTION_TYPES

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "opts"]
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                    default=defaults.get(f.name, f.default),
                                    annotation=types[f.name])
                  for f in fields(StepOptions)]

        @functools.wraps(fn)
        def command(**kwargs):
            opts = StepOptions(**{f.name: kwargs.pop(f.name) for f in fields(StepOptions)})
            return fn(opts=opts, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
