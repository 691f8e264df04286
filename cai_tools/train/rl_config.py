"""``cai rl``'s options and the inputs every algorithm (``rl_ppo``, ``rl_trl``) loads.

``RLConfig`` holds the training options plus the starting policy, the PM, judge or rule rewards,
the algorithm and its settings, and checks them before anything loads; ``load_prompts`` and
``load_pm`` read the prompts and the preference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..conversation import prompt_messages
from ..errors import InputError, UsageError
from ..option_fields import option
from ..records import error_of, read_records
from .lora import TrainingConfig
from .monitors import STOP_STATS, parse_stop_when
from .rl_shared_pm import PM_BASE_MODES

ALGOS = ("ppo", "rloo", "grpo", "dpo")


@dataclass
class RLConfig(TrainingConfig):
    """Options of an ``rl`` run: the training options plus the starting policy, the PM or preference
    data, the algorithm and its settings; ``check`` fills ``policy`` and ``base`` from each other."""

    policy: str = option(
        "", "Starting policy and KL reference: a 'cai sft' run or a base model (default: --base).")
    pm: str = option("", "A 'cai build-pm' run (ppo, rloo, grpo).")
    pm_base: str = option(
        "auto", "Where the PM runs: shared (on the policy's base weights), separate, or auto.")
    prompts: list[str] = option(
        default_factory=list, help="Prompt records ('prompt' or 'messages'); repeat for several files.")
    data: list[str] = option(
        default_factory=list, help="Preference records for --algo dpo (from 'cai judge' or 'cai pairs').")
    algo: str = option("ppo", "ppo (the paper's), rloo, grpo or dpo.")
    max_steps: int | None = 20
    batch_size: int = 4                 # prompts per step
    learning_rate: float = 2e-5
    # PPO's ratios must be exactly 1 at the start of each update, so it trains without dropout
    lora_dropout: float = option(0.05, default_help="0.05; --algo ppo uses 0")
    max_new_tokens: int = option(48, "Answer length in tokens.")
    temperature: float = 1.0
    kl_coef: float = option(0.05, "KL penalty to the reference.")
    ppo_epochs: int = option(2, "PPO passes per batch.")
    clip_range: float = option(0.2, "PPO ratio clip.")
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    gae_lambda: float = 0.95
    num_generations: int = option(4, "Answers per prompt for rloo/grpo.")
    dpo_beta: float = option(0.1, "DPO beta.")
    min_label: float = option(0.5, "dpo --labels hard: keep pairs whose soft label is at least this.",
                              default_help="0.5: all")
    labels: str = option("hard", "dpo: hard (TRL's loss on the kept pairs) or soft (each pair's judge label "
                                 "is its target).")
    judge: str = option("", "rloo/grpo: direct RLAIF, no PM: this model (or rule:...) judges the answers of "
                            "a group.")
    judge_against: str = option("group", "--judge: compare each answer with its group, or with the record's 'response'.")
    judge_constitution: str = option("harmless", "--judge: the constitution whose judge principles it uses.")
    judge_gpu_layers: int | None = option(
        None, "--judge: llama.cpp layers on the GPU (default: all when llama.cpp has a GPU backend).")
    reward: list[str] = option(
        default_factory=list, help="ppo/grpo/rloo: a rule:NAME[=ARG] or py:MODULE:FUNCTION reward, alone or "
                                   "beside --pm/--judge.")
    reward_weight: float = option(1.0, "Weight of each --reward rule against the PM or judge (which counts 1).")
    stop_when: list[str] = option(
        default_factory=list, help="Stop once a logged statistic crosses a bound, e.g. 'kl>8'. Repeatable.")
    boilerplate: list[str] = option(
        default_factory=list, help="A phrase the boilerplate monitor counts, besides the built-in ones. Repeatable.")

    def check(self) -> None:
        from ..models.refs import resolve

        # either may be a model reference (hf:, ollama:, lmstudio:); the policy may also be a run
        self.base = resolve(self.base) if self.base else ""
        self.policy = resolve(self.policy) if self.policy else self.base
        self.base = self.base or self.policy
        super().check()
        if self.algo not in ALGOS:
            raise UsageError(f"--algo must be one of {', '.join(ALGOS)}")
        if self.pm_base not in PM_BASE_MODES:
            raise UsageError(f"--pm-base must be one of {', '.join(PM_BASE_MODES)}")
        if self.algo == "ppo" and self.temperature <= 0:
            raise UsageError("--temperature must be positive (PPO samples its answers)")
        if self.algo == "dpo":
            if not self.data:
                raise UsageError("--algo dpo trains on preference records: pass --data FILE")
            if self.reward:
                raise UsageError("--reward is a reward for ppo, grpo and rloo; DPO learns from preference "
                                 "pairs: relabel them by a rule with 'cai label --rule' instead")
        else:
            if not self.pm and not self.judge and not self.reward:
                raise UsageError(f"--algo {self.algo} needs a reward: a preference model (--pm RUN), a judge "
                                 "(--judge MODEL, direct RLAIF) or a rule (--reward rule:NAME)")
            if not self.prompts:
                raise UsageError("no prompts: pass --prompts FILE")
        self._check_rewards()
        if self.labels not in ("hard", "soft"):
            raise UsageError(f"--labels must be hard or soft, got {self.labels!r}")
        if self.judge:
            if self.algo not in ("rloo", "grpo"):
                raise UsageError("--judge (direct RLAIF) is a reward for --algo rloo or grpo")
            if self.pm:
                raise UsageError("give --pm or --judge, not both: they are two kinds of reward")
            from ..engines.registry import registered
            from .judge_reward import is_rule_judge
            from .rule_rewards import parse_reward

            if is_rule_judge(self.judge):
                parse_reward(self.judge)   # a rule in the judge's place: checked here
            elif not self.judge.startswith(("http://", "https://")) and not registered(self.judge):
                from ..models.files import check_gguf_file

                # before the policy loads: a wrong judge path is one line, not a minute later
                self.judge = str(check_gguf_file(resolve(self.judge)))
            if self.judge_against not in ("group", "reference"):
                raise UsageError(f"--judge-against must be group or reference, got {self.judge_against!r}")
            if self.judge_against == "group" and self.num_generations < 2:
                raise UsageError("--judge-against group compares answers within a group: "
                                 "--num-generations must be at least 2")
        parse_stop_when(self.stop_when, self.algo)  # a bad condition fails here, before anything loads

    def _check_rewards(self) -> None:
        """--reward specs parse (an unknown rule lists the rules) and --reward-weight has a use."""
        from .rule_rewards import parse_reward

        for spec in self.reward:
            parse_reward(spec)
        if self.reward_weight != 1.0 and not self.reward:
            raise UsageError("--reward-weight weighs --reward rules: give --reward rule:NAME as well")
        if self.reward_weight != 1.0 and not (self.pm or self.judge):
            raise UsageError("--reward-weight weighs the --reward rules against --pm or --judge; with rules "
                             "alone there is nothing to weigh them against")
        if self.reward_weight <= 0 and self.reward:
            raise UsageError(f"--reward-weight must be positive, got {self.reward_weight}")

    def reward_rules(self):
        """The --reward rules as one weighted reward (None without any)."""
        from .rule_rewards import RuleRewards

        return RuleRewards(self.reward, self.reward_weight) if self.reward else None


def load_prompts(paths: list[str]) -> list[list[dict]]:
    """The prompt conversations of every file, in order (records carrying an error skipped);
    InputError for a missing file or one without prompts."""
    prompts = []
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise InputError("no such prompt file", where=path)
        found = [prompt_messages(r) for r in read_records(path) if error_of(r) is None]
        if not found:
            raise InputError("no prompts in this file (is it empty?)", where=path)
        prompts += found
    return prompts


def load_pm(cfg: RLConfig, base: str, device: str, on_note: Callable[[str], None]):
    """The PM on its own base (``--pm-base separate``, or auto with another base), else None: it
    is attached to the policy once that is loaded (``SharedRewardModel``). Says which mode."""
    from .rl_shared_pm import choose_pm_base
    from .score import RewardModel

    mode = choose_pm_base(cfg.pm_base, cfg.pm, base)
    if mode == "shared":
        on_note("PM: shared base (its adapter and score head ride on the policy's base weights: one copy in memory)")
        return None
    on_note("PM: separate base (a second copy of base weights in memory"
            + (")" if cfg.pm_base == "separate" else "; the PM was built on another base)"))
    return RewardModel(cfg.pm, device=device, load_in=cfg.load_in)
