"""The options of the LoRA training steps (sft, build-pm, rl), generated from their configs.

``@training_step(step, ConfigCls)`` turns every option field of the step's config dataclass
into an option whose help shows the real default, adds --config, --resume, --quiet and
--debug, and hands the command a ``TrainingRun`` that resolves the config (defaults <
--config YAML < options; with --resume the run's own config.yaml) and shows progress.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..option_fields import option
from ..train.runs import CONFIG_FILE
from .options import StreamOptions, dataclass_options
from .running import Console, cli_errors


_CONFIG_HELP = "YAML file of config keys (see config.yaml in a run folder); options given here override it."
_RESUME_HELP = ("Continue the run in --out from its last checkpoint; options given here override.")


@dataclass
class RunControl:
    """How to start the run, beside its config."""

    config: str | None = option(None, _CONFIG_HELP)
    resume: bool = option(False, _RESUME_HELP)
    dry_run: bool = option(False, "Print the estimated peak memory and time per step, then stop.")


class _DryRunDone(Exception):
    """Raised once the dry run's estimate is printed: the step stops there."""


@dataclass
class TrainingRun:
    step: str
    config_cls: type
    given: dict            # the config options given on the command line (None: not given)
    control: RunControl
    console: Console

    @property
    def resume(self) -> bool:
        return self.control.resume

    def config(self, **own):
        """The resolved config: defaults < --config (or the run's config.yaml on --resume) <
        options given (``own`` overrides them); the default model when no base is named."""
        from ..models.refs import resolve_model

        given = {**self.given, **own}
        config, out = self.control.config, given.get("out")
        if self.resume and config is None and out and (Path(out) / CONFIG_FILE).is_file():
            config = str(Path(out) / CONFIG_FILE)
        if not given.get("base") and not _base_in(config):
            given["base"] = resolve_model(None, announce=self.console.note, option="--base")
        cfg = self.config_cls.from_sources(config, given)
        if self.control.dry_run:
            from ..train.cost_model import dry_run_report

            print(dry_run_report(self.step, cfg), file=sys.stderr)
            raise _DryRunDone
        return cfg

    def progress(self, cfg) -> "_Progress":
        """The progress bar, which also sends each step's log entry to --report-to's dashboard."""
        from ..train.reporting import StepReporter

        return _Progress(self.step, self.console, StepReporter(cfg.report_to, self.step, cfg))


def training_step(step: str, config_cls):
    """Decorate ``fn(run: TrainingRun)``: the option fields of ``config_cls`` (help showing its
    defaults), --config/--resume and --quiet/--debug become fn's options."""

    def decorate(fn):
        @functools.wraps(fn)
        def command(*, given: dict, control: RunControl, stream: StreamOptions):
            from ..train.hf_models import quiet_libraries

            quiet_libraries()  # before torch/transformers load tqdm and their loggers
            with cli_errors(step, stream.debug):
                try:
                    # under accelerate launch the first process alone speaks: N copies of each note help no one
                    quiet = stream.quiet or os.environ.get("RANK", "0") != "0"
                    return fn(run=TrainingRun(step, config_cls, given, control, Console(step, quiet)))
                except _DryRunDone:
                    return None

        command.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in ("given", "control", "stream")])
        command = dataclass_options("given", config_cls, given_only=True)(command)
        command = dataclass_options("control", RunControl)(command)
        return dataclass_options("stream", StreamOptions, names=("quiet", "debug"))(command)

    return decorate


def _base_in(config: str | None) -> bool:
    """Whether a config file names the base (so the default model is not announced)."""
    if not config:
        return False
    import yaml

    try:
        loaded = yaml.safe_load(open(config, encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # from_sources reports it, naming the file
    return isinstance(loaded, dict) and bool(loaded.get("base"))


class _Progress:
    """A rich progress bar on stderr with the loss and tokens/s; nothing when quiet."""

    def __init__(self, step: str, console: Console, reporter=None):
        self.step = step
        self.enabled = not console.quiet
        self.bar = None
        self.reporter = reporter

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
        if self.reporter is not None:
            self.reporter.log(entry)
        if not self.enabled:
            return
        if self.bar is None:
            self._start()
        self.bar.update(self.task, completed=entry["step"], total=entry["total_steps"],
                        info=self._info(entry))

    @staticmethod
    def _info(entry: dict) -> str:
        if "reward" in entry:  # RL steps
            info = f"reward {entry['reward']:.3f}  KL {entry['kl']:.3f}  len {entry['response_length']:.0f}"
        else:
            speed = f"  {entry['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in entry else ""
            info = f"loss {entry['loss']:.4f}{speed}"
            if "response_length" in entry:  # DPO's probe answers
                info += f"  len {entry['response_length']:.0f}"
        if "repeated_ngram_share" in entry:  # rl's reward-hacking monitors
            info += f"  rep {entry['repeated_ngram_share']:.2f}"
        return info

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        if self.reporter is not None:
            self.reporter.close()
