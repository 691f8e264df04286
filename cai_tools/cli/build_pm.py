"""cai build-pm: a preference model from soft labels (see cai_tools.train.pm)."""

from __future__ import annotations

from ..train.pm import PMConfig
from .training_options import TrainingRun, training_step


@training_step("build-pm", PMConfig)
def build_pm(*, run: TrainingRun) -> None:
    """Train a preference model (LoRA + score head) on soft preference labels."""
    from ..train.pm import train_pm

    cfg = run.config()
    with run.progress(cfg) as progress:
        summary = train_pm(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
    report = summary.get("eval")
    held = ""
    if report and report["accuracy"] is not None:
        low, high = report["accuracy_interval"]
        held = (f"; held out: accuracy {report['accuracy']:.3f} [{low:.3f}, {high:.3f}] ({report['verdict']}"
                f"{': too few held-out pairs or no signal to tell' if report['verdict'] == 'at chance' else ''}), "
                f"ECE {report['ece']:.3f} on {report['pairs']} pairs")
    run.console.note(f"{summary['steps']} steps on {summary.get('pairs', '?')} pairs{held}; "
                     f"PM in {cfg.out} (next: cai score --pm {cfg.out})")
    if report and report.get("warning"):
        run.console.note(f"warning: {report['warning']}")
