"""cai export: an sft run back to llama.cpp (see cai_tools.export)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .options import DebugOpt, QuietOpt
from .running import Console, cli_errors


def export(
    run: Annotated[str, typer.Argument(help="A finished 'cai sft' run folder.")],
    gguf: Annotated[str, typer.Option("--gguf", help="Output GGUF file.")],
    merged: Annotated[bool, typer.Option(
        help="Write the whole model with the adapter merged in, instead of a LoRA adapter GGUF.")] = False,
    type_: Annotated[str, typer.Option(
        "--type", "--quant", help="Merged model's type: f16, f32, q8_0 or a llama.cpp quant type such as q4_k_m.")] = "f16",
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a LoRA adapter GGUF for llama.cpp (use it with --lora), or a merged model GGUF."""
    console = Console("export", quiet)
    with cli_errors("export", debug):
        from ..train.export import export_lora, export_merged

        start = time.perf_counter()
        if merged:
            summary = export_merged(run, gguf, type_)
            console.note(f"wrote {gguf}: merged {summary['type']} model, {summary['merged_tensors']} "
                         f"adapted weights ({time.perf_counter() - start:.1f} s)")
        else:
            summary = export_lora(run, gguf)
            console.note(f"wrote {gguf}: LoRA adapter, {summary['tensors']} tensors, rank "
                         f"{summary['rank']}, alpha {summary['alpha']} ({time.perf_counter() - start:.1f} s); "
                         f"use it with --lora {gguf}")
