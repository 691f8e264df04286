"""cai sft: LoRA fine-tuning on SL-CAI revisions (see cai_tools.sft)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .running import cli_errors
from ..train.sft import SFTConfig
from .training_options import TrainingRun, training_step


@training_step("sft", SFTConfig)
def sft(
    data: Annotated[Optional[List[str]], typer.Option(
        help="SL-CAI records (after critique/revise); repeat for several files.")] = None,
    all_rounds: Annotated[Optional[bool], typer.Option(
        "--all-rounds/--final-only", help="Train on every round's revision (the paper) or only "
                                          "the final one (default).")] = None,
    mix: Annotated[Optional[List[str]], typer.Option(
        help="FILE:WEIGHT of helpfulness conversations to mix in ('messages' records); WEIGHT "
             "scales the file's share (0.5 = half of it, 2 = twice).")] = None,
    *, run: TrainingRun,
) -> None:
    """Fine-tune LoRA adapters on prompt → revision (SL-CAI); writes the adapter to --out."""
    with cli_errors("sft", run.options["debug"]):
        from ..train.sft import SFTConfig, train

        cfg = run.config(SFTConfig, data=data, all_rounds=all_rounds, mix=mix)
        with run.progress() as progress:
            summary = train(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
        run.console.note(f"{summary['steps']} steps on {summary.get('examples', '?')} examples; "
                         f"adapter in {cfg.out} (next: cai export {cfg.out} --gguf FILE.gguf)")
