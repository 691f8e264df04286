"""cai rl: RL-CAI against a preference model (PPO), or TRL's RLOO/GRPO/DPO (see cai_tools.rl_*)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .running import cli_errors
from ..train.rl_ppo import RLConfig
from .training_options import TrainingRun, training_step


@training_step("rl", RLConfig)
def rl(
    policy: Annotated[Optional[str], typer.Option(
        help="Starting policy: a 'cai sft' run or a base model (GGUF / HF folder); default: "
             "--base or the bundled model. It is also the KL reference.")] = None,
    pm: Annotated[Optional[str], typer.Option(help="A 'cai build-pm' run (ppo, rloo, grpo).")] = None,
    prompts: Annotated[Optional[List[str]], typer.Option(
        help="Prompt records ('prompt' or 'messages'); repeat for several files.")] = None,
    data: Annotated[Optional[List[str]], typer.Option(
        help="Preference records for --algo dpo (from 'cai judge' or 'cai pairs').")] = None,
    algo: Annotated[Optional[str], typer.Option(
        help="ppo (the paper's, default), rloo, grpo or dpo.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Answer length in tokens [48].")] = None,
    kl_coef: Annotated[Optional[float], typer.Option(help="KL penalty to the reference [0.05].")] = None,
    ppo_epochs: Annotated[Optional[int], typer.Option(help="PPO passes per batch [2].")] = None,
    clip_range: Annotated[Optional[float], typer.Option(help="PPO ratio clip [0.2].")] = None,
    num_generations: Annotated[Optional[int], typer.Option(
        help="Answers per prompt for rloo/grpo [4].")] = None,
    dpo_beta: Annotated[Optional[float], typer.Option(help="DPO beta [0.1].")] = None,
    min_label: Annotated[Optional[float], typer.Option(
        help="dpo: keep pairs whose soft label is at least this [0.5: all].")] = None,
    *, run: TrainingRun,
) -> None:
    """Optimize the policy against the preference model with a KL penalty (RL-CAI)."""
    with cli_errors("rl", run.options["debug"]):
        from ..train.rl_ppo import RLConfig

        cfg = run.config(RLConfig, policy=policy, base=policy or run.options["base"], pm=pm,
                         prompts=prompts, data=data, algo=algo, max_new_tokens=max_new_tokens,
                         kl_coef=kl_coef, ppo_epochs=ppo_epochs, clip_range=clip_range,
                         num_generations=num_generations, dpo_beta=dpo_beta, min_label=min_label)
        with run.progress() as progress:
            if cfg.algo == "ppo":
                from ..train.rl_ppo import train_ppo

                summary = train_ppo(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
            else:
                from ..train.rl_trl import train_with_trl

                summary = train_with_trl(cfg, resume=run.resume, on_step=progress.update,
                                         on_note=run.console.note)
        run.console.note(f"{cfg.algo}: {summary['steps']} steps; policy adapter in {cfg.out} "
                         f"(next: cai export {cfg.out} --gguf FILE.gguf)")
