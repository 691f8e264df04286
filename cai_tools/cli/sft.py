"""cai sft: LoRA fine-tuning on SL-CAI revisions (see cai_tools.train.sft)."""

from __future__ import annotations

from ..train.sft import SFTConfig
from .training_options import TrainingRun, training_step


@training_step("sft", SFTConfig)
def sft(*, run: TrainingRun) -> None:
    """Fine-tune LoRA adapters on prompt → revision (SL-CAI); writes the adapter to --out."""
    from ..train.sft import train_sft

    cfg = run.config()
    with run.progress(cfg) as progress:
        summary = train_sft(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
    run.console.note(f"{summary['steps']} steps on {summary.get('examples', '?')} examples; "
                     f"adapter in {cfg.out} (next: cai export {cfg.out} --gguf FILE.gguf)")
