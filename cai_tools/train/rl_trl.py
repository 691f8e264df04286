"""``rl --algo rloo | grpo | dpo``: TRL 1.16's trainers, wired to cai's runs and records.

- RLOO and GRPO sample ``num_generations`` answers per prompt and use the PM as a reward
  function that scores *text* (prompt + answer through the PM's own tokenizer), so the PM
  may come from another base than the policy. ``kl_coef`` is TRL's ``beta``; the reference is
  the policy with its LoRA disabled (TRL does that for PEFT models).
- DPO trains on preference records (``cai judge`` / ``cai pairs``). TRL's DPO takes hard
  pairs, so the judge's soft labels act as a filter: pairs whose label is below
  ``min_label`` (the judge was unsure) are dropped; ``label`` is P(chosen better) ≥ 0.5.

The starting policy and the saved adapter are handled as for PPO (``rl_policy``). TRL
checkpoints only the adapter (safetensors; no pickled optimizer state), so ``--resume``
continues from the last adapter checkpoint with a fresh optimizer for the remaining steps.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

from ..errors import InputError, UsageError
from .monitors import (MONITORS, PolicyProbe, boilerplate_phrases, first_stop, monitored, parse_stop_when,
                       stop_note)
from .quantized import CHECKPOINTING_KWARGS
from .rl_config import RLConfig, load_pm, load_prompts
from .runs import RunFolder, check_adapter_folder, checkpoint_step, peft_config


def train_trl(cfg: RLConfig, *, resume: bool = False, on_step: Callable[[dict], None] | None = None,
                   on_note: Callable[[str], None] = lambda message: None) -> dict:
    """Train (or resume) an RLOO, GRPO or DPO run with TRL (``cfg.algo``) and write its folded adapter
    and ``cai_run.json``; returns the run info. UsageError when a resumed run has no steps left."""
    from .hf_models import load_tokenizer, pick_device_and_dtype, quiet_libraries
    from .rl_policy import finish_rl_run, load_policy, policy_source

    quiet_libraries()
    import torch
    from datasets import Dataset
    from peft import PeftModel

    run = RunFolder(cfg.out)
    checkpoint = run.start(resume)
    # Under accelerate launch TRL's trainer spreads the batches over the processes; the run folder
    # (log, checkpoints, adapter) is written by the first one alone.
    main = int(os.environ.get("RANK", "0")) == 0
    base, sft_run = policy_source(cfg.policy)
    device, dtype = pick_device_and_dtype(cfg.device, cfg.dtype)
    tokenizer = load_tokenizer(str(sft_run) if sft_run else base, base)
    if cfg.algo == "dpo":
        dataset = _dpo_dataset(cfg, tokenizer)
        on_note(f"DPO on {len(dataset)} preference pairs (label ≥ {cfg.min_label}), "
                + ("soft labels: each pair's label is its target" if cfg.labels == "soft" else "hard labels"))
    elif cfg.judge and cfg.judge_against == "reference":
        from .judge_reward import prompts_with_references

        dataset = Dataset.from_list(_as_text(tokenizer, prompts_with_references(cfg.prompts)))
        on_note(f"{cfg.algo.upper()} on {len(dataset)} prompts, {cfg.num_generations} answers each")
    else:
        dataset = Dataset.from_list(_as_text(tokenizer, [{"prompt": p} for p in load_prompts(cfg.prompts)]))
        on_note(f"{cfg.algo.upper()} on {len(dataset)} prompts, {cfg.num_generations} answers each")
    torch.manual_seed(cfg.seed)
    model = load_policy(cfg.policy, dtype, cfg.load_in, device, on_note)
    lora = peft_config(cfg, model.config.model_type, "CAUSAL_LM")
    done = 0
    if checkpoint is not None:
        check_adapter_folder(checkpoint)
        done = checkpoint_step(checkpoint)
        if main:
            run.truncate_log(done)
        model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
        lora = None
    remaining = max((cfg.max_steps or 20) - done, 0)
    if remaining == 0:
        raise UsageError(f"the run already has {done} steps: raise --max-steps to continue it")
    judge = None
    if cfg.judge:   # direct RLAIF: the judge model is the reward, no PM
        from .judge_reward import JudgeReward

        judge = JudgeReward(cfg, on_note)
    pm = None if cfg.algo == "dpo" or judge or not cfg.pm else load_pm(cfg, base, device, on_note)
    if cfg.algo != "dpo" and not judge and cfg.pm and pm is None:
        # Shared base: the PM's adapter joins the policy's PeftModel, so that is built here, not in TRL.
        from peft import get_peft_model

        from .rl_shared_pm import SharedRewardModel

        if lora is not None:
            model, lora = get_peft_model(model, lora), None
        pm = SharedRewardModel(model, cfg.pm, sft_run)
    common = dict(output_dir=str(run.path / "trl"), max_steps=remaining, learning_rate=cfg.learning_rate,
                  per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                  logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, bf16=dtype == torch.bfloat16,
                  use_cpu=device == "cpu", gradient_checkpointing=cfg.checkpointing_on(device),
                  gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS, disable_tqdm=True,
                  ddp_find_unused_parameters=False)  # only the RL adapter trains (several processes)
    trainer = _trainer(cfg, model, tokenizer, dataset, lora, common,
                       None if cfg.algo == "dpo" else _reward_function(judge, pm, cfg.reward_rules()))
    _reference_is_starting_policy(trainer.model)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints log dicts on stdout
    checkpoints = _Checkpoints(run, cfg, done, done + remaining, on_step, on_note, dataset)
    trainer.add_callback(checkpoints)
    if main:
        run.write_config(cfg)  # so --resume continues with the same algorithm and options
    try:
        trainer.train()
    finally:
        if judge is not None:
            judge.close()
    if not main:
        return {"steps": done + trainer.state.global_step}
    shutil.rmtree(run.path / "trl", ignore_errors=True)  # TRL's output_dir: nothing of ours in it
    run.save_adapter(trainer.model, tokenizer)
    _write_log(run, trainer.state.log_history, done)
    extra = {}
    if cfg.algo == "dpo":
        from .soft_dpo import margins_by_label

        extra = {"labels": cfg.labels, "margins_by_label": margins_by_label(trainer)}
        for band in extra["margins_by_label"]:
            on_note("labels {:.1f}-{:.1f}: {} pairs, mean implicit reward margin {:+.4f}, chosen preferred in "
                    "{:.0%}".format(*band["labels"], band["pairs"], band["mean_margin"], band["prefers_chosen"]))
    if judge is not None:   # what the judge cost: its comparisons, how many the cache answered, its time
        extra["judge"] = {**judge.stats, "judge_s": round(judge.stats["judge_s"], 2)}
        on_note("judge: {comparisons} comparisons, {cached} from the cache, {judge_s:.0f} s".format(**judge.stats))
    extra["stopped_by"] = checkpoints.stopped
    return finish_rl_run(run, cfg, base, model.config.model_type, cfg.algo, done + trainer.state.global_step,
                         extra)


def _reference_is_starting_policy(model) -> None:
    """Given a PeftModel (a resumed run, or the shared-PM mode), TRL keeps a copy of the adapter as
    it was at the start, "ref", for the KL term. The reference is the starting policy, as in PPO: the
    model with no RL adapter, so that copy's B is zeroed (a fresh adapter's already is)."""
    import torch

    if "ref" not in getattr(model, "peft_config", {}):
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B.ref." in name:
                param.zero_()


def _trainer(cfg: RLConfig, model, tokenizer, dataset, lora, common: dict, reward=None):
    """TRL's trainer for ``cfg.algo``; ``reward`` is the reward function of rloo and grpo."""
    if cfg.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=cfg.dpo_beta, max_length=cfg.max_length, **common)
        trainer_class = DPOTrainer
        if cfg.labels == "soft":
            from .soft_dpo import soft_dpo_trainer_class

            trainer_class = soft_dpo_trainer_class()
        return _with_cai_tokens(trainer_class)(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, peft_config=lora)
    reward = monitored(reward, boilerplate_phrases(cfg.boilerplate))  # its answers' monitors, logged by TRL
    gen = dict(num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
               beta=cfg.kl_coef, temperature=cfg.temperature,
               # --batch-size is per process, as in sft: each generates for its own prompts
               generation_batch_size=cfg.batch_size * cfg.num_generations * int(os.environ.get("WORLD_SIZE", "1")))
    common = dict(common, per_device_train_batch_size=cfg.batch_size * cfg.num_generations)
    if cfg.algo == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return _with_cai_tokens(GRPOTrainer)(model=model, reward_funcs=[reward], args=GRPOConfig(**gen, **common),
                                             train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    from trl import RLOOConfig, RLOOTrainer

    return _with_cai_tokens(RLOOTrainer)(model=model, reward_funcs=[reward], args=RLOOConfig(**gen, **common),
                                         train_dataset=dataset, processing_class=tokenizer, peft_config=lora)


def _with_cai_tokens(trainer_class):
    """``trainer_class`` taking token ids from cai (``chat_tokens``) instead of tokenizing text itself:
    DPO's rows come tokenized (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), and RLOO's and GRPO's
    rendered prompts are encoded as sampling encodes them (llama.cpp's vocabulary for a GGUF base)."""
    from .chat_tokens import encode

    class CaiTokens(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            # as TRL does: a prompt that fills max_length leaves no completion token to learn from
            return dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length) \
                if args.max_length is not None else dataset

        def _tokenize_prompts(self, prompts):
            if prompts and all(isinstance(p, str) for p in prompts):
                return [encode(self.processing_class, p) for p in prompts], None, {}
            return super()._tokenize_prompts(prompts)

    CaiTokens.__name__ = CaiTokens.__qualname__ = f"Cai{trainer_class.__name__}"
    return CaiTokens


def _reward_function(judge, pm, rules):
    """One TRL reward function over text: the judge's (direct RLAIF) or the PM's (a RewardModel or
    SharedRewardModel), plus the weighted rule rewards; ``messages`` (a dataset column) are the
    prompts as conversations."""

    def reward(prompts, completions, messages=None, **kwargs):
        convs = []
        for prompt, completion in zip(messages or prompts, completions):
            answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            convs.append((prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]) + answer)
        if judge is not None:
            total = judge(prompts, completions, messages=messages, **kwargs)
        elif pm is not None:
            total = pm.rewards(convs)
        else:
            total = [0.0] * len(convs)
        if rules is not None:
            total = [a + b for a, b in zip(total, rules.rewards(convs))]
        return total

    reward.__name__ = "judge_reward" if judge is not None else "pm_reward" if pm is not None else "rule_reward"
    return reward


def _as_text(tokenizer, rows: list[dict]) -> list[dict]:
    """TRL rows with the prompt rendered as sampling renders it (TRL would apply the template its
    own way, without the quirks and reasoning handling; ``_with_cai_tokens`` encodes it); the
    conversation stays in ``messages`` for the reward functions and the monitors."""
    from .chat_tokens import prompt_text

    return [{**row, "prompt": prompt_text(tokenizer, row["prompt"]), "messages": row["prompt"]} for row in rows]


def _dpo_dataset(cfg: RLConfig, tokenizer):
    from datasets import Dataset

    from .chat_tokens import answer_ids, prompt_ids
    from .preferences import load_preferences

    pairs, _ = load_preferences(cfg.data, eval_fraction=0.0, seed=cfg.seed)
    # the label rides along either way: soft labels train on it, and the end-of-run margins use it
    rows = [{"messages": p.chosen[:-1], "prompt_ids": prompt_ids(tokenizer, p.chosen[:-1]),
             "chosen_ids": answer_ids(tokenizer, p.chosen[-1]["content"]),
             "rejected_ids": answer_ids(tokenizer, p.rejected[-1]["content"]), "label": p.label}
            for p in pairs if p.label >= cfg.min_label and p.chosen[:-1] == p.rejected[:-1]]
    if not rows:
        raise InputError(f"no preference pairs with a shared prompt and label ≥ {cfg.min_label}",
                         where=", ".join(cfg.data))
    return Dataset.from_list(rows)


def _write_log(run: RunFolder, history: list[dict], done: int) -> None:
    """TRL's per-step log lines, as cai's log.jsonl (appended after a resume)."""
    with run.open_log() as log:
        for entry in history:
            if "step" in entry and "loss" in entry:
                log.write(json.dumps({**entry, "step": done + entry["step"]}) + "\n")


class _Checkpoints:
    """Adapter-only checkpoints every N steps, in cai's checkpoints/step-N layout, TRL's log
    lines turned into cai's progress entries with the reward-hacking monitors, and --stop-when
    (``stopped`` says which condition ended the run, if one did)."""

    def __new__(cls, run: RunFolder, cfg: RLConfig, done: int, total: int, on_step,
                on_note: Callable[[str], None], dataset):
        from transformers import TrainerCallback

        every, stop_when = cfg.save_every, parse_stop_when(cfg.stop_when, cfg.algo)
        # rloo/grpo's reward function reports the monitors of the answers it scores; DPO samples none
        probe = (PolicyProbe(dataset["messages"], cfg.max_new_tokens, boilerplate_phrases(cfg.boilerplate))
                 if cfg.algo == "dpo" else None)

        class Callback(TrainerCallback):
            stopped = None

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step = done + state.global_step
                if model is not None and step % every == 0 and state.is_world_process_zero:
                    run.save_checkpoint(model, step)

            def on_log(self, args, state, control, logs=None, model=None, processing_class=None, **kwargs):
                if not logs or "loss" not in logs:
                    return
                entry = {"step": done + state.global_step, "total_steps": total, "loss": logs["loss"]}
                if "reward" in logs:
                    entry.update(reward=logs["reward"], kl=logs.get("kl", 0.0),
                                 response_length=logs.get("completions/mean_length", 0.0))
                entry.update({k: logs[k] for k in MONITORS if logs.get(k) is not None})
                if probe is not None:
                    entry.update(probe.monitors(model, processing_class))
                if state.log_history and state.log_history[-1].get("step") == state.global_step:
                    # the line TRL just logged, which _write_log turns into log.jsonl
                    state.log_history[-1].update({k: entry[k] for k in ("response_length", *MONITORS) if k in entry})
                # the entry is the whole step's (TRL averages over processes): all of them stop together
                self.stopped = first_stop(stop_when, entry)
                if self.stopped:
                    control.should_training_stop = True
                    on_note(stop_note(self.stopped))
                if on_step is not None:
                    on_step(entry)

        return Callback()
