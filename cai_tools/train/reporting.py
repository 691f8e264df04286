"""``--report-to tensorboard|wandb|none``: each training step's log line, also sent to a dashboard.

Every training loop (sft, build-pm, PPO, TRL's RLOO/GRPO/DPO) already hands each step's log
entry to one callback; the reporter sits there, so every algorithm reports the same numbers
its ``log.jsonl`` holds, under ``STEP/NAME`` (e.g. ``rl/reward``, ``rl/kl``), at its step.
TensorBoard writes event files into ``RUN/tensorboard/``; W&B logs to the project
``cai_tools`` (``WANDB_PROJECT`` overrides; ``WANDB_MODE=offline`` keeps it local). Under
``accelerate launch`` the first process alone reports.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from ..errors import UsageError

REPORT_TO = ("none", "tensorboard", "wandb")
_NOT_METRICS = {"step", "total_steps"}


def check_report_to(report_to: str) -> None:
    """UsageError for an unknown value or a dashboard whose library is not installed."""
    if report_to not in REPORT_TO:
        raise UsageError(f"--report-to must be one of {', '.join(REPORT_TO)}")
    needs = {"tensorboard": ("tensorboard", "pip install 'cai_tools[report]'"),
             "wandb": ("wandb", "pip install wandb")}.get(report_to)
    if needs:
        import importlib.util

        if importlib.util.find_spec(needs[0]) is None:
            raise UsageError(f"--report-to {report_to} needs the {needs[0]} package: {needs[1]}")


class StepReporter:
    """Sends log entries ({"step": N, name: number, ...}) to the chosen dashboard."""

    def __init__(self, report_to: str, step_name: str, cfg):
        self.kind, self.step_name, self.cfg = report_to, step_name, cfg
        self.writer = self.wandb_run = None
        if os.environ.get("RANK", "0") != "0":
            self.kind = "none"

    def _open(self) -> None:
        """At the first step: a run that fails before training leaves no dashboard files behind."""
        out = Path(self.cfg.out)
        if self.kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        elif self.kind == "wandb":
            import wandb

            self.wandb_run = wandb.init(project=os.environ.get("WANDB_PROJECT", "cai_tools"), name=out.name,
                                        dir=str(out), config=dataclasses.asdict(self.cfg), job_type=self.step_name)

    def log(self, entry: dict) -> None:
        if self.kind == "none":
            return
        if self.writer is None and self.wandb_run is None:
            self._open()
        step = entry.get("step")
        metrics = {f"{self.step_name}/{key}": float(value) for key, value in entry.items()
                   if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
                   and math.isfinite(value)}
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
        elif self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
