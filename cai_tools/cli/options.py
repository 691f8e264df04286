"""The options every subcommand shares, declared once (typer annotations)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"



InputArg = Annotated[str, typer.Argument(help="Input JSONL file, or - for stdin.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="GGUF model file (default: the bundled SmolLM2-135M-Instruct).")]
ServerOpt = Annotated[Optional[str], typer.Option(
    help="Base URL of an OpenAI-compatible server (llama-server, vLLM); --model is then the "
         "served model's name. Or pass the URL as --model. API key: $CAI_API_KEY.")]
PrefixCacheOpt = Annotated[Optional[str], typer.Option(
    envvar="CAI_PREFIX_CACHE",
    help="Folder for an on-disk cache of shared prompt prefixes (system prompt, few-shot "
         "examples), so later runs and pipe stages start warm.")]
LoraOpt = Annotated[Optional[str], typer.Option(
    help="LoRA adapter GGUF to apply to the model (make one with 'cai export RUN --gguf FILE').")]
LoraScaleOpt = Annotated[float, typer.Option(help="Strength of the --lora adapter (1 = as trained).")]
SeedOpt = Annotated[int, typer.Option(help="Run seed; every record gets its own seed from it.")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Sample among the K likeliest tokens (0: all).")]
MaxTokensOpt = Annotated[int, typer.Option(help="Most new tokens per answer.")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="Context length per sequence, in tokens.")]
GpuLayersOpt = Annotated[Optional[int], typer.Option(
    "--n-gpu-layers", help="Layers to offload to the GPU (default: all when llama.cpp has a GPU "
                           "backend, else 0).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores).")]
ChatFormatOpt = Annotated[Optional[str], typer.Option(
    help="Chat format for a GGUF without a chat template: a llama-cpp-python name "
         "(chatml, llama-2, ...) or a Jinja template file.")]
BatchOpt = Annotated[int, typer.Option(
    help="Records handed to the engine at once (output is written per batch, in input order).")]
ParallelOpt = Annotated[int, typer.Option(
    help="Sequences llama.cpp decodes at once (continuous batching; KV memory grows with it).")]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    help="Output file of an interrupted run: records whose id is in it are skipped, so "
         "'cai STEP --resume out.jsonl >> out.jsonl' continues it.")]
OnErrorOpt = Annotated[OnError, typer.Option(
    help="fail: stop at the first bad record; skip: write it with _cai.error and go on.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks.")]
ConstitutionOpt = Annotated[str, typer.Option(
    "--constitution", "-c", help="Constitution YAML file, or a bundled name (harmless, "
                                 "medical_assistant, customer_service).")]
PrincipleOpt = Annotated[Optional[str], typer.Option(
    help="Use this principle id every round instead of sampling one.")]
