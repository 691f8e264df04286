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
from typing import Callable

from ..errors import UsageError
from .chat_tokens import left_padded_prompts, response_mask
from .monitors import boilerplate_phrases, first_stop, monitor_means, monitor_sums, parse_stop_when, stop_note
from .quantized import CHECKPOINTING_KWARGS
from .rl_config import RLConfig, load_pm, load_prompts
from .row_sampling import RowGumbelSampler, row_seed
from .runs import RunFolder, load_safetensors, peft_config


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

