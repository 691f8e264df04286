"""cai critique: the model criticises its answers against a sampled principle."""

from __future__ import annotations

from .. import critique as critique_step
from ..constitution import load_constitution
from ..step_common import Sampling
from .common import (BatchOpt, ParallelOpt, PrefixCacheOpt, ServerOpt, ChatFormatOpt, Console, ConstitutionOpt, CtxOpt, DebugOpt,
                     GpuLayersOpt, InputArg, MaxTokensOpt, ModelOpt, OnError, OnErrorOpt,
                     PrincipleOpt, QuietOpt, ResumeOpt, SeedOpt, TemperatureOpt, ThreadsOpt, TopKOpt,
                     TopPOpt, check_positive, cli_errors, run_records)
from .engine_options import open_engine


def critique(
    input: InputArg = "-",
    model: ModelOpt = None,
    server: ServerOpt = None,
    constitution: ConstitutionOpt = "harmless",
    principle: PrincipleOpt = None,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 40,
    max_tokens: MaxTokensOpt = 192,
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
    """Critique each record's current 'response' against one principle sampled per record
    and round; appends {round, principle, critique_request, critique} to 'history'."""
    console = Console("critique", quiet)
    with cli_errors("critique", debug):
        check_positive("--batch-size", batch_size)
        check_positive("--parallel", parallel)
        const = load_constitution(constitution)
        if principle:
            const.principle(principle)
        if not const.few_shot:
            console.note(f"constitution {const.name} has no few-shot examples; small models "
                         "critique poorly without them")
        engine = open_engine(model, console, ctx=ctx, n_gpu_layers=n_gpu_layers, threads=threads,
                             chat_format=chat_format, parallel=parallel,
                             server=server, prefix_cache=prefix_cache)
        try:
            sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k)
            run_records("critique", input, lambda recs: critique_step.critique(
                recs, engine, const, principle_id=principle, seed=seed, sampling=sampling,
                batch_size=batch_size, on_error=on_error.value), resume=resume, quiet=quiet)
        finally:
            engine.close()
