"""``rl --algo ppo``: the paper's RL-CAI — clipped PPO against the preference model.

Each step: sample a batch of prompts, generate answers with the policy, score them with the
PM (text in, so the PM may use another tokenizer), and turn the score into per-token rewards
with a KL penalty to the reference (the starting policy = the policy with its RL LoRA
disabled). GAE (γ, λ) over a value head on the policy's last hidden state gives advantages;
``ppo_epochs`` passes of the clipped surrogate and a clipped value loss update the LoRA and the
value head. TRL 1.16 has no PPO trainer, hence this compact one.

Under ``accelerate launch`` each process rolls out and scores ``batch_size`` prompts of the
step; the advantage whitening, the loss's token mean and the gradients are summed over the
processes, so the update is the one a single process makes on the whole step's batch. Sampling
draws per prompt (``row_sampling``), so the answers, too, are the single process's.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..conversation import prompt_messages
from ..errors import InputError, UsageError
from ..option_fields import option
from .chat_tokens import left_padded_prompts, response_mask
from .lora import TrainingConfig
from .monitors import (STOP_STATS, boilerplate_phrases, first_stop, monitor_means, monitor_sums, parse_stop_when,
                       stop_note)
from .quantized import CHECKPOINTING_KWARGS
from ..records import error_of, read_records
from .rl_shared_pm import PM_BASE_MODES
from .row_sampling import RowGumbelSampler, row_seed
from .runs import RunFolder, load_safetensors, peft_config

ALGOS = ("ppo", "rloo", "grpo", "dpo")


@dataclass
class RLConfig(TrainingConfig):
    """Options of an ``rl`` run: the training options plus the starting policy, the PM or preference
    data, the algorithm and its settings; ``check`` fills ``policy`` and ``base`` from each other."""

    policy: str = option(
        "", "Starting policy: a 'cai sft' run or a base model (GGUF / HF folder); default: --base "
            "or the bundled model. It is also the KL reference.")
    pm: str = option("", "A 'cai build-pm' run (ppo, rloo, grpo).")
    pm_base: str = option(
        "auto", "shared: the PM's adapter and score head ride on the policy's base weights (one copy in "
                "memory; the PM must be built on the same base); separate: the PM loads its own base; "
                "auto: shared when the bases are the same model.")
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
    labels: str = option("hard", "dpo: hard (each kept pair's chosen is certain, TRL's loss) or soft (the "
                                 "judge's label p is the pair's target: -[p log s(bD) + (1-p) log s(-bD)]).")
    judge: str = option("", "rloo/grpo: direct RLAIF, no PM: this GGUF model (or server URL) judges each "
                            "answer against the others of its group, as 'cai judge' does, and its win "
                            "probability is the reward.")
    judge_against: str = option("group", "--judge: compare each answer with the others of its group, or "
                                         "with the prompt record's 'response' (reference).")
    judge_constitution: str = option("harmless", "--judge: the constitution whose judge principles it uses.")
    judge_gpu_layers: int | None = option(
        None, "--judge: llama.cpp layers on the GPU (default: all when llama.cpp has a GPU backend).")
    reward: list[str] = option(
        default_factory=list, help="ppo/grpo/rloo: a rule reward, rule:NAME[=ARG] (length=N, no-refusal, "
                                   "no-boilerplate, regex=P, not-regex=P) or py:MODULE:FUNCTION; alone, or "
                                   "added to --pm or --judge. Repeatable.")
    reward_weight: float = option(1.0, "Weight of each --reward rule against the PM or judge (which counts 1).")
    stop_when: list[str] = option(
        default_factory=list, help="Stop after the first step at which this holds, e.g. 'kl>8', "
                                   "'response_length>120', 'repeated_ngram_share>=0.5' (any of "
                                   f"{', '.join(STOP_STATS)}); the adapter is saved as at a normal end. Repeatable.")
    boilerplate: list[str] = option(
        default_factory=list, help="A phrase the boilerplate_share monitor counts, besides the built-in "
                                   "ones (the paper's 'you are valid, valued, and cared for', ...). Repeatable.")

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


def train_ppo(cfg: RLConfig, *, resume: bool = False, on_step: Callable[[dict], None] | None = None,
              on_note: Callable[[str], None] = lambda message: None) -> dict:
    """Train (or resume) a PPO run and write its folded adapter and ``cai_run.json``; returns the
    run info (on processes other than the first, just the steps). ``on_step`` gets each log line,
    ``on_note`` what is happening."""
    from .hf_models import load_tokenizer, peak_memory_mib, pick_device_and_dtype, quiet_libraries
    from .rl_policy import finish_rl_run, load_policy, policy_source

    quiet_libraries()
    import torch
    from accelerate import PartialState
    from peft import get_peft_model
    from safetensors.torch import save_file

    run = RunFolder(cfg.out)
    checkpoint = run.start(resume)
    prompts = load_prompts(cfg.prompts)
    base, sft_run = policy_source(cfg.policy)
    device, dtype = pick_device_and_dtype(cfg.device, cfg.dtype)
    processes = _Processes(PartialState(cpu=device == "cpu"))
    if processes.count > 1:
        device = str(processes.state.device)  # this process's GPU (or the CPU)
        if processes.count > len(prompts):
            raise UsageError(f"{processes.count} processes but only {len(prompts)} prompts: "
                             "launch at most as many processes as there are prompts")
    rules = cfg.reward_rules()
    on_note(f"{len(prompts)} prompts; loading the policy ({cfg.policy})" + (f" and the PM ({cfg.pm})" if cfg.pm else "")
            + (f"; rule rewards {', '.join(cfg.reward)}" + (f" (weight {cfg.reward_weight})" if cfg.pm else "")
               if rules else ""))
    pm = load_pm(cfg, base, device, on_note) if cfg.pm else None
    tokenizer = load_tokenizer(str(sft_run) if sft_run else base, base)
    tokenizer.padding_side = "left"

    torch.manual_seed(cfg.seed)  # LoRA's A: the same in every process
    model = load_policy(cfg.policy, dtype, cfg.load_in, device, on_note)
    model_type = model.config.model_type
    # no dropout: the probability ratios must be 1 at the start of every update
    model = get_peft_model(model, peft_config(cfg, model_type, "CAUSAL_LM", dropout=0.0))
    checkpointing = cfg.checkpointing_on(device)
    if checkpointing:  # the PPO updates recompute activations; rollouts (eval mode) do not checkpoint
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    if not cfg.load_in:  # a quantized base was loaded onto the device (bitsandbytes forbids moving it)
        model = model.to(device)
    if pm is None and cfg.pm:
        from .rl_shared_pm import SharedRewardModel

        pm = SharedRewardModel(model, cfg.pm, sft_run)
    if rules is not None:
        from .rule_rewards import HybridReward

        pm = rules if pm is None else HybridReward(pm, rules)
    value_head = torch.nn.Linear(model.config.hidden_size, 1).to(device)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    step = 0
    if checkpoint is not None:
        step = run.load_checkpoint(checkpoint, model, optimizer=optimizer, params=params,
                                   truncate_log=processes.main)
        value_head.load_state_dict(load_safetensors(checkpoint / "value_head.safetensors"))
    total = cfg.max_steps or 20
    weights = _weights_mib(model, value_head, getattr(pm, "model", None))
    per_step = cfg.batch_size * processes.count
    on_note(f"PPO: {total} steps of {per_step} prompts"
            + (f" ({cfg.batch_size} in each of {processes.count} processes)" if processes.count > 1 else "")
            + f", up to {cfg.max_new_tokens} new tokens, KL coef {cfg.kl_coef}, on {device}"
            + (", gradient checkpointing" if checkpointing else "")
            + (f", resuming after step {step}" if step else ""))
    if processes.main:
        run.write_config(cfg)
    order = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(order)
    stop_when, stopped = parse_stop_when(cfg.stop_when), None
    started = time.perf_counter()
    log = run.open_log() if processes.main else None
    try:
        while step < total and stopped is None:
            # this process's share of the step's prompts, with their place in the step (row seeds)
            places = list(range(step * per_step, (step + 1) * per_step))[processes.index::processes.count]
            batch = [prompts[order[place % len(order)]] for place in places]
            seeds = [row_seed(cfg.seed, step, place - step * per_step) for place in places]
            stats = _ppo_step(model, value_head, optimizer, tokenizer, pm, batch, seeds, cfg, device, processes)
            step += 1
            entry = {"step": step, "total_steps": total, **stats,
                     "elapsed_s": round(time.perf_counter() - started, 3), "peak_mib": peak_memory_mib(device),
                     "weights_mib": weights}
            # the entry's numbers are the whole step's, the same in every process: all stop together
            stopped = first_stop(stop_when, entry)
            if processes.main:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if step % cfg.save_every == 0 or step == total or stopped:
                    run.save_checkpoint(model, step, optimizer=optimizer, params=params,
                                        extra={"value_head.safetensors": value_head.state_dict()})
            if on_step:
                on_step(entry)
            if stopped:
                on_note(stop_note(stopped))
    finally:
        if log:
            log.close()
    if not processes.main:
        return {"steps": step}
    tokenizer.padding_side = "right"
    run.save_adapter(model, tokenizer)
    save_file({k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()},
              str(run.path / "value_head.safetensors"))
    return finish_rl_run(run, cfg, base, model_type, "ppo", step, {"stopped_by": stopped})


def _weights_mib(*models) -> float:
    """MiB of the tensors the policy, value head and PM hold, each storage counted once (a PM on
    the shared base adds only its adapter and head): unlike peak RSS, free of allocator noise."""
    seen, total = set(), 0
    for m in models:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            key = (t.device, t.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return round(total / 2**20, 1)


class _Processes:
    """The processes of an ``accelerate launch`` (or just this one): who writes the run, and sums
    over all of them."""

    def __init__(self, state):
        self.state = state
        self.count, self.index, self.main = state.num_processes, state.process_index, state.is_main_process

    def sum(self, tensor):
        """``tensor`` summed over the processes (in place)."""
        if self.count > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def sum_gradients(self, params) -> None:
        """Each parameter's gradient summed over the processes: one flat all-reduce."""
        if self.count == 1:
            return
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()


def _ppo_step(model, value_head, optimizer, tokenizer, pm, batch, seeds, cfg: RLConfig, device,
              processes: _Processes) -> dict:
    import torch
    from transformers import LogitsProcessorList

    # 1. roll out: the policy answers the prompts, each sampled from its own seed
    enc = left_padded_prompts(tokenizer, batch, device)
    model.eval()
    with torch.no_grad():
        sampler = RowGumbelSampler(seeds, cfg.temperature, enc["input_ids"].device)
        full = model.generate(**enc, do_sample=False, logits_processor=LogitsProcessorList([sampler]),
                              max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              temperature=None, top_k=None, top_p=None)
    n_prompt = enc["input_ids"].shape[1]
    response = full[:, n_prompt:]
    resp_mask = response_mask(response, tokenizer.eos_token_id, tokenizer.pad_token_id)
    attention = torch.cat([enc["attention_mask"], resp_mask], dim=1)
    texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, resp_mask)]

    # 2. score (text, with the PM's own tokenizer) and shape per-token rewards
    scores = torch.tensor(pm.rewards([p + [{"role": "assistant", "content": t}] for p, t in zip(batch, texts)]),
                          device=device)
    with torch.no_grad():
        old_logp, values, _ = _forward(model, value_head, full, attention, n_prompt)
        with model.disable_adapter():
            ref_logp, _, _ = _forward(model, None, full, attention, n_prompt)
    kl = (old_logp - ref_logp) * resp_mask
    rewards = -cfg.kl_coef * kl
    last = resp_mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(batch)), last] += scores
    # every token of the step, in all processes: the means below are the whole batch's
    n_tokens = processes.sum(resp_mask.sum().double()).clamp(min=1)
    advantages, returns = _gae(rewards, values, resp_mask, cfg.gamma, cfg.gae_lambda,
                               lambda x: processes.sum(x.double()) / n_tokens)

    # 3. clipped PPO updates
    model.train()
    for _ in range(cfg.ppo_epochs):
        logp, new_values, entropy = _forward(model, value_head, full, attention, n_prompt)
        ratio = torch.exp(logp - old_logp)
        pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
        v_clipped = values + (new_values - values).clamp(-cfg.value_clip, cfg.value_clip)
        vf = 0.5 * torch.max((new_values - returns) ** 2, (v_clipped - returns) ** 2)
        # this process's token sums over the step's token count: summed gradients are the batch mean's
        loss = (((pg + cfg.vf_coef * vf) * resp_mask).sum() / n_tokens).float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        processes.sum_gradients(params := [p for g in optimizer.param_groups for p in g["params"]])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    with torch.no_grad():
        totals = processes.sum(torch.cat([torch.stack([
            torch.tensor(float(len(batch)), dtype=torch.float64, device=device), scores.sum().double(),
            kl.sum().double(), (entropy * resp_mask).sum().double(), attention.sum().double(),
            (pg * resp_mask).sum().double(), (vf * resp_mask).sum().double()]),
            torch.tensor(monitor_sums(texts, boilerplate_phrases(cfg.boilerplate)), dtype=torch.float64,
                         device=device)]))
    answers, score_sum, kl_sum, entropy_sum, tokens, pg_sum, vf_sum = totals[:7].tolist()
    n = n_tokens.item()
    return {"reward": round(score_sum / answers, 6), "kl": round(kl_sum / answers, 6),
            "entropy": round(entropy_sum / n, 6), "response_length": round(n / answers, 2),
            **monitor_means(totals[7:].tolist()),
            "tokens": int(tokens),   # prompt + answer tokens the step processed
            "pg_loss": round(pg_sum / n, 6), "value_loss": round(vf_sum / n, 6)}


def _forward(model, value_head, full, attention, n_prompt):
    """Per response token: log-prob under the model, the value of the state before it, entropy."""
    import torch

    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=full, attention_mask=attention, position_ids=positions,
                output_hidden_states=value_head is not None)
    logits = out.logits[:, n_prompt - 1:-1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, full[:, n_prompt:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    values = None
    if value_head is not None:
        values = value_head(out.hidden_states[-1][:, n_prompt - 1:-1].float()).squeeze(-1)
    return logp, values, entropy


def _gae(rewards, values, mask, gamma: float, lam: float, token_mean=None):
    """Generalized advantage estimation over the response tokens; advantages whitened with
    ``token_mean`` (a masked tensor's sum -> the mean over every token of the step; default: this
    batch's tokens)."""
    import torch

    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = advantages + values
    token_mean = token_mean or (lambda total: total / mask.sum().clamp(min=1))
    mean = token_mean((advantages * mask).sum()).to(advantages.dtype)
    var = token_mean(((advantages - mean) ** 2 * mask).sum()).to(advantages.dtype)
    return (advantages - mean) * mask / (var.sqrt() + 1e-8), returns

