"""cai sft: LoRA fine-tuning on SL-CAI revisions (see cai_tools.sft)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .common import Console, DebugOpt, QuietOpt, cli_errors


def sft(
    base: Annotated[Optional[str], typer.Option(
        help="Base model: a GGUF file (dequantized for training) or a local Hugging Face model "
             "folder (default: the bundled SmolLM2-135M-Instruct GGUF).")] = None,
    data: Annotated[Optional[List[str]], typer.Option(
        help="SL-CAI records (after critique/revise); repeat for several files.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder for adapter, logs, checkpoints.")] = None,
    all_rounds: Annotated[Optional[bool], typer.Option(
        "--all-rounds/--final-only", help="Train on every round's revision (the paper) or only "
                                          "the final one (default).")] = None,
    mix: Annotated[Optional[List[str]], typer.Option(
        help="FILE:WEIGHT of helpfulness conversations to mix in ('messages' records); WEIGHT "
             "scales the file's share (0.5 = half of it, 2 = twice).")] = None,
    config: Annotated[Optional[str], typer.Option(
        help="YAML file of config keys (see config.yaml in a run folder); options given here "
             "override it.")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank [16].")] = None,
    lora_alpha: Annotated[Optional[int], typer.Option(help="LoRA alpha [32].")] = None,
    lora_dropout: Annotated[Optional[float], typer.Option(help="LoRA dropout [0.05].")] = None,
    target_modules: Annotated[Optional[List[str]], typer.Option(
        help="Modules to adapt (repeat); default: attention and MLP projections.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data [1].")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after N optimizer steps "
                                                          "(overrides --epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch [4].")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-batches per step [1].")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate [2e-4].")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warmup steps [0].")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Truncate examples to N tokens [512].")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps [50].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for data order, init and dropout [0].")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... [auto].")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="float32, bfloat16, float16 [auto: bfloat16 on a GPU that has it, else float32].")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --out from its last checkpoint, with its config.yaml "
             "(options given here override it, e.g. a larger --max-steps).")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune LoRA adapters on prompt → revision (SL-CAI); writes the adapter to --out."""
    console = Console("sft", quiet)
    with cli_errors("sft", debug):
        from ..model_files import resolve_model
        from ..sft import SFTConfig, train

        given = dict(base=base, data=data, out=out, all_rounds=all_rounds, mix=mix, lora_r=lora_r,
                     lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules,
                     epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
                     learning_rate=learning_rate, warmup_steps=warmup_steps, max_length=max_length,
                     save_every=save_every, seed=seed, device=device, dtype=dtype)
        if resume and config is None and out and (Path(out) / "config.yaml").is_file():
            config = str(Path(out) / "config.yaml")  # the run's own settings; options override
        if not base and not _base_in(config):
            given["base"] = resolve_model(None, announce=console.note, option="--base")
        cfg = SFTConfig.from_sources(config, given)
        with _Progress(console) as progress:
            summary = train(cfg, resume=resume, on_step=progress.update, on_note=console.note)
        console.note(f"{summary['steps']} steps on {summary.get('examples', '?')} examples; "
                     f"adapter in {cfg.out} (next: cai export {cfg.out} --gguf FILE.gguf)")


def _base_in(config: str | None) -> bool:
    """Whether a --config file names the base (so the default model is not announced)."""
    if not config:
        return False
    import yaml

    try:
        loaded = yaml.safe_load(open(config, encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # SFTConfig.from_sources reports it
    return isinstance(loaded, dict) and bool(loaded.get("base"))


class _Progress:
    """A rich progress bar on stderr with the loss and tokens/s; nothing when quiet."""

    def __init__(self, console: Console):
        self.enabled = not console.quiet
        self.bar = None

    def __enter__(self):
        return self

    def _start(self) -> None:
        # Started at the first step, so the loading notes and any error come out plainly.
        if self.enabled:
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("cai sft"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=RichConsole(file=sys.stderr))
            self.bar.start()
            self.task = self.bar.add_task("train", total=None, info="")

    def update(self, entry: dict) -> None:
        if self.bar is None:
            self._start()
        if self.bar is not None:
            self.bar.update(self.task, completed=entry["step"], total=entry["total_steps"],
                            info=f"loss {entry['loss']:.4f}  {entry['tokens_per_s']:.0f} tok/s")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
