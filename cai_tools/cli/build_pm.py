"""cai build-pm: a preference model on soft labels (see cai_tools.build_pm)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .running import cli_errors
from ..train.pm import PMConfig
from .training_options import TrainingRun, training_step


@training_step("build-pm", PMConfig)
def build_pm(
    data: Annotated[Optional[List[str]], typer.Option(
        help="Preference records, FILE or FILE:WEIGHT (repeat to mix, e.g. judge labels with "
             "human helpfulness comparisons); WEIGHT scales the file's share.")] = None,
    eval_fraction: Annotated[Optional[float], typer.Option(
        help="Share of each file held out for the accuracy/calibration report [0.1].")] = None,
    *, run: TrainingRun,
) -> None:
    """Train a preference model (LoRA + score head) on soft preference labels."""
    with cli_errors("build-pm", run.options["debug"]):
        from ..train.pm import PMConfig, train_pm

        cfg = run.config(PMConfig, data=data, eval_fraction=eval_fraction)
        with run.progress() as progress:
            summary = train_pm(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
        report = summary.get("eval")
        held = (f"; held out: accuracy {report['accuracy']:.3f}, ECE {report['ece']:.3f} on "
                f"{report['pairs']} pairs" if report and report["accuracy"] is not None else "")
        run.console.note(f"{summary['steps']} steps on {summary.get('pairs', '?')} pairs{held}; "
                         f"PM in {cfg.out} (next: cai score --pm {cfg.out})")
