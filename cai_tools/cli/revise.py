"""cai revise: rewrite answers to address their critiques (one round, or --rounds N)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import revise as revise_step
from ..constitution import load_constitution
from ..step_common import Sampling
from .common import (BatchOpt, ParallelOpt, PrefixCacheOpt, ServerOpt, ChatFormatOpt, Console, ConstitutionOpt, CtxOpt, DebugOpt,
                     GpuLayersOpt, InputArg, MaxTokensOpt, ModelOpt, OnError, OnErrorOpt,
                     PrincipleOpt, QuietOpt, ResumeOpt, SeedOpt, TemperatureOpt, ThreadsOpt, TopKOpt,
                     TopPOpt, check_positive, cli_errors, run_records)
from .engine_options import open_engine


def revise(
    input: InputArg = "-",
    model: ModelOpt = None,
    server: ServerOpt = None,
    constitution: ConstitutionOpt = "harmless",
    rounds: Annotated[Optional[int], typer.Option(
        help="Run N full critique+revision rounds here (the paper used 4), instead of "
             "answering the critique already in each record.")] = None,
    until_clean: Annotated[bool, typer.Option(
        help="Stop a record's rounds when its critique finds nothing to fix.")] = False,
    principle: PrincipleOpt = None,
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
    """Revise each record's answer to address its latest critique; the revision becomes
    'response'. With --rounds N, run N critique+revision rounds per record."""
    console = Console("revise", quiet)
    with cli_errors("revise", debug):
        check_positive("--batch-size", batch_size)
        check_positive("--parallel", parallel)
        if rounds is not None:
            check_positive("--rounds", rounds)
        const = load_constitution(constitution)
        if principle:
            const.principle(principle)
        engine = open_engine(model, console, ctx=ctx, n_gpu_layers=n_gpu_layers, threads=threads,
                             chat_format=chat_format, parallel=parallel,
                             server=server, prefix_cache=prefix_cache)
        try:
            sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k)
            run_records("revise", input, lambda recs: revise_step.revise(
                recs, engine, const, rounds=rounds, principle_id=principle,
                until_clean=until_clean, seed=seed, sampling=sampling, batch_size=batch_size,
                on_error=on_error.value), resume=resume, quiet=quiet)
        finally:
            engine.close()
