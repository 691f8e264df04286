"""The options every LoRA training step takes (sft, build-pm), declared once.

``@training_step`` adds them to a command's signature (typer reads the signature) and hands
the command a ``TrainingRun`` that resolves the config (defaults < --config YAML < options;
with --resume the run's own config.yaml) and shows progress.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..train.runs import CONFIG_FILE
from .options import DebugOpt, QuietOpt
from .running import Console

_SHARED = {
    "base": (Annotated[Optional[str], typer.Option(
        help="Base model: a GGUF file (dequantized for training) or a local Hugging Face model "
             "folder (default: the bundled SmolLM2-135M-Instruct GGUF).")], None),
    "out": (Annotated[Optional[str], typer.Option(help="Run folder for adapter, logs, checkpoints.")], None),
    "config": (Annotated[Optional[str], typer.Option(
        help="YAML file of config keys (see config.yaml in a run folder); options given here "
             "override it.")], None),
    "lora_r": (Annotated[Optional[int], typer.Option(help="LoRA rank.")], None),
    "lora_alpha": (Annotated[Optional[int], typer.Option(help="LoRA alpha.")], None),
    "lora_dropout": (Annotated[Optional[float], typer.Option(help="LoRA dropout.")], None),
    "target_modules": (Annotated[Optional[List[str]], typer.Option(
        help="Modules to adapt (repeat); default: attention and MLP projections.")], None),
    "epochs": (Annotated[Optional[float], typer.Option(help="Passes over the data.")], None),
    "max_steps": (Annotated[Optional[int], typer.Option(
        help="Stop after N optimizer steps (overrides --epochs).")], None),
    "batch_size": (Annotated[Optional[int], typer.Option(help="Items per micro-batch.")], None),
    "grad_accum": (Annotated[Optional[int], typer.Option(help="Micro-batches per step.")], None),
    "learning_rate": (Annotated[Optional[float], typer.Option(
        "--lr", help="Peak learning rate.")], None),
    "warmup_steps": (Annotated[Optional[int], typer.Option(help="Linear warmup steps.")], None),
    "max_length": (Annotated[Optional[int], typer.Option(help="Truncate to N tokens.")], None),
    "save_every": (Annotated[Optional[int], typer.Option(help="Checkpoint every N steps.")], None),
    "seed": (Annotated[Optional[int], typer.Option(
        help="Seed for data order, splits, init and dropout.")], None),
    "device": (Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, ...")], None),
    "dtype": (Annotated[Optional[str], typer.Option(
        help="float32, bfloat16, float16 (auto: bfloat16 on a GPU that has it, else float32).")], None),
    "resume": (Annotated[bool, typer.Option(
        help="Continue the run in --out from its last checkpoint, with its config.yaml "
             "(options given here override it, e.g. a larger --max-steps).")], False),
    "quiet": (QuietOpt, False),
    "debug": (DebugOpt, False),
}


@dataclass
class TrainingRun:
    step: str
    options: dict
    console: Console

    @property
    def resume(self) -> bool:
        return self.options["resume"]

    def config(self, config_cls, **own):
        """The resolved config: defaults < --config (or the run's config.yaml on --resume) <
        options given; the default model when no base is named anywhere."""
        from ..model_files import resolve_model

        opts = self.options
        given = {k: v for k, v in opts.items() if k not in ("config", "resume", "quiet", "debug")}
        given.update(own)
        config, out = opts["config"], opts["out"]
        if opts["resume"] and config is None and out and (Path(out) / CONFIG_FILE).is_file():
            config = str(Path(out) / CONFIG_FILE)
        if not given.get("base") and not _base_in(config):
            given["base"] = resolve_model(None, announce=self.console.note, option="--base")
        return config_cls.from_sources(config, given)

    def progress(self) -> "_Progress":
        return _Progress(self.step, self.console)


def _with_default(annotation, field):
    """The option's help with the config's real default appended ("(default: 2e-05)"), so --help
    cannot drift from the code; a field's ``metadata["default_help"]`` says more."""
    if field is None:
        return annotation
    shown = field.metadata.get("default_help")
    if shown is None:
        if field.default in (None, "", dataclasses.MISSING):
            return annotation
        shown = field.default
    base, option = annotation.__origin__, annotation.__metadata__[0]
    option = copy.copy(option)
    option.help = f"{option.help} (default: {shown})"
    return Annotated[base, option]


def training_step(step: str, config_cls):
    """Decorate ``fn(..., run: TrainingRun)``; the shared options join its own, their help
    showing ``config_cls``'s defaults."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}

    def decorate(fn):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "run"]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                    annotation=_with_default(ann, fields.get(name)))
                  for name, (ann, default) in _SHARED.items()]

        @functools.wraps(fn)
        def command(**kwargs):
            from ..train.hf_models import quiet_libraries

            quiet_libraries()  # before torch/transformers load tqdm and their loggers
            options = {name: kwargs.pop(name) for name in _SHARED}
            return fn(run=TrainingRun(step, options, Console(step, options["quiet"])), **kwargs)

        params = own + shared
        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _base_in(config: str | None) -> bool:
    """Whether a config file names the base (so the default model is not announced)."""
    if not config:
        return False
    import yaml

    try:
        loaded = yaml.safe_load(open(config, encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # from_sources reports it
    return isinstance(loaded, dict) and bool(loaded.get("base"))


class _Progress:
    """A rich progress bar on stderr with the loss and tokens/s; nothing when quiet."""

    def __init__(self, step: str, console: Console):
        self.step = step
        self.enabled = not console.quiet
        self.bar = None

    def __enter__(self):
        return self

    def _start(self) -> None:
        # Started at the first step, so the loading notes and any error come out plainly.
        from rich.console import Console as RichConsole
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn(f"cai {self.step}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                            console=RichConsole(file=sys.stderr))
        self.bar.start()
        self.task = self.bar.add_task("train", total=None, info="")

    def update(self, entry: dict) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self._start()
        self.bar.update(self.task, completed=entry["step"], total=entry["total_steps"],
                        info=self._info(entry))

    @staticmethod
    def _info(entry: dict) -> str:
        if "reward" in entry:  # RL steps
            return f"reward {entry['reward']:.3f}  KL {entry['kl']:.3f}  len {entry['response_length']:.0f}"
        speed = f"  {entry['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in entry else ""
        return f"loss {entry['loss']:.4f}{speed}"

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
