"""cai rl: RL-CAI against a preference model (PPO), or TRL's RLOO/GRPO/DPO (see cai_tools.train)."""

from __future__ import annotations

from ..train.rl_config import RLConfig
from .training_options import TrainingRun, training_step


@training_step("rl", RLConfig)
def rl(*, run: TrainingRun) -> None:
    """Optimize the policy against the preference model with a KL penalty (RL-CAI)."""
    # The policy is also the base unless --base names another (RLConfig.check links them).
    cfg = run.config(base=run.given["policy"] or run.given["base"])
    with run.progress(cfg) as progress:
        if cfg.algo == "ppo":
            from ..train.rl_ppo import train_ppo

            summary = train_ppo(cfg, resume=run.resume, on_step=progress.update, on_note=run.console.note)
        else:
            from ..train.rl_trl import train_trl

            summary = train_trl(cfg, resume=run.resume, on_step=progress.update,
                                     on_note=run.console.note)
    run.console.note(f"{cfg.algo}: {summary['steps']} steps; policy adapter in {cfg.out} "
                     f"(next: cai export {cfg.out} --gguf FILE.gguf)")
