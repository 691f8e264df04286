"""cai generate: answer prompts with a local model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import generate as generate_step
from ..step_common import Sampling
from .common import (BatchOpt, ParallelOpt, PrefixCacheOpt, ServerOpt, ChatFormatOpt, Console, CtxOpt, DebugOpt, GpuLayersOpt, InputArg,
                     MaxTokensOpt, ModelOpt, OnError, OnErrorOpt, QuietOpt, ResumeOpt, SeedOpt,
                     TemperatureOpt, ThreadsOpt, TopKOpt, TopPOpt, check_positive, cli_errors, run_records)
from .engine_options import open_engine


def generate(
    input: InputArg = "-",
    model: ModelOpt = None,
    server: ServerOpt = None,
    n: Annotated[int, typer.Option("-n", help="Samples per prompt, kept together in 'responses'.")] = 1,
    system: Annotated[Optional[str], typer.Option(help="System prompt for every conversation.")] = None,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 40,
    max_tokens: MaxTokensOpt = 256,
    ctx: CtxOpt = 4096,
    n_gpu_layers: GpuLayersOpt = None,
    threads: ThreadsOpt = None,
    parallel: ParallelOpt = 8,
    prefix_cache: PrefixCacheOpt = None,
    chat_format: ChatFormatOpt = None,
    batch_size: BatchOpt = 32,
    resume: ResumeOpt = None,
    on_error: OnErrorOpt = OnError.fail,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Answer each record's 'prompt' (or chat 'messages'): adds 'response' and 'init_response'
    ('responses' too with -n K), an 'id' if missing, and provenance under '_cai'."""
    console = Console("generate", quiet)
    with cli_errors("generate", debug):
        check_positive("-n", n)
        check_positive("--batch-size", batch_size)
        check_positive("--parallel", parallel)
        engine = open_engine(model, console, ctx=ctx, n_gpu_layers=n_gpu_layers, threads=threads,
                             chat_format=chat_format, parallel=parallel,
                             server=server, prefix_cache=prefix_cache)
        try:
            sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k)
            run_records("generate", input, lambda recs: generate_step.generate(
                recs, engine, n=n, sampling=sampling, seed=seed, system=system,
                batch_size=batch_size, on_error=on_error.value), resume=resume, quiet=quiet)
        finally:
            engine.close()
