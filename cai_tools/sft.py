"""``sft``: LoRA fine-tuning on the model's own revisions (SL-CAI), with PEFT.

A plain training loop (AdamW, linear warmup and decay, gradient accumulation) rather than
a Trainer, so that everything a run writes is safetensors/JSON/YAML (no pickled optimizer
state) and a resumed run replays exactly the batches and dropout masks it would have seen.
``accelerate launch`` runs it on several GPUs: each process takes its share of every step's
examples and accelerate averages the gradients.

A run folder holds: ``config.yaml`` (the resolved config), ``log.jsonl`` (one line per
step), ``checkpoints/step-N/`` (adapter, optimizer state, step), and at the end the
adapter (``adapter_model.safetensors`` + ``adapter_config.json``), the tokenizer and
``cai_run.json`` (what ``export`` needs to know about the base).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .errors import InputError, UsageError
from .hf_models import (base_kind, load_causal_lm, load_tokenizer, pick_device_and_dtype, quiet_libraries,
                        targets_for)
from .sft_data import IGNORE, load_examples, tokenize_example


@dataclass
class SFTConfig:
    base: str = ""
    data: list[str] = field(default_factory=list)
    out: str = ""
    all_rounds: bool = False
    mix: list[str] = field(default_factory=list)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None   # None: the architecture's default
    epochs: float = 1.0
    max_steps: int | None = None              # overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_length: int = 512
    save_every: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"                       # float32 on CPU, bfloat16 on a GPU that has it

    @classmethod
    def from_sources(cls, yaml_path: str | None, overrides: dict) -> "SFTConfig":
        """Defaults, then the YAML file, then the options given on the command line."""
        values: dict = {}
        if yaml_path:
            try:
                loaded = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise InputError(f"cannot read config: {exc}", where=yaml_path) from None
            if not isinstance(loaded, dict):
                raise InputError("config must be a mapping of option: value", where=yaml_path)
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v not in (None, [], ())})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                             where=yaml_path or "options")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.base:
            raise UsageError("no base model: pass --base (a GGUF file or a HF model folder)")
        if not self.data and not self.mix:
            raise UsageError("no training data: pass --data FILE (and/or --mix FILE:WEIGHT)")
        if not self.out:
            raise UsageError("no run folder: pass --out RUN")
        for name in ("lora_r", "batch_size", "grad_accum", "max_length", "save_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError("max_steps must be at least 1")


CHECKPOINTS = "checkpoints"


def latest_checkpoint(run: Path) -> Path | None:
    steps = sorted((p for p in (run / CHECKPOINTS).glob("step-*") if (p / "state.json").is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None


def train(cfg: SFTConfig, *, resume: bool = False, on_step: Callable[[dict], None] | None = None,
          on_note: Callable[[str], None] = lambda message: None) -> dict:
    """Run (or resume) one SFT run; returns its summary. ``on_step`` gets each log line,
    ``on_note`` what is happening before the first step (loading takes a while)."""
    quiet_libraries()
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    run = Path(cfg.out)
    checkpoint = latest_checkpoint(run) if resume else None
    if resume and checkpoint is None:
        raise InputError("nothing to resume: no checkpoint in this run folder", where=str(run))
    if not resume and (run / "log.jsonl").exists():
        raise UsageError(f"{run} already holds a training run: pass --resume to continue it, "
                         "or another --out")
    kind = base_kind(cfg.base)
    examples = load_examples(cfg.data, all_rounds=cfg.all_rounds, mix=cfg.mix, seed=cfg.seed)

    on_note(f"{len(examples)} training examples; loading {cfg.base}")
    device, dtype = pick_device_and_dtype(cfg.device, cfg.dtype)
    accelerator = Accelerator(cpu=device == "cpu")
    tokenizer = load_tokenizer(cfg.base)
    encoded = [tokenize_example(tokenizer, ex, cfg.max_length) for ex in examples]
    model = load_causal_lm(cfg.base, dtype)
    model_type = model.config.model_type
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules or targets_for(model_type), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(encoded) / per_step))
    step = 0
    if checkpoint is not None:
        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        _load_optimizer(optimizer, params, checkpoint / "optimizer.safetensors")
        step = json.loads((checkpoint / "state.json").read_text())["step"]
        if accelerator.is_main_process:
            _truncate_log(run / "log.jsonl", step)
    on_note(f"training {total} steps of {per_step} examples on {accelerator.device} ({dtype}), "
            f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha}" + (f", resuming after step {step}" if step else ""))
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    main = accelerator.is_main_process
    if main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    order = _example_order(len(encoded), total * per_step, cfg.seed)
    log = open(run / "log.jsonl", "a", encoding="utf-8") if main else None
    started, tokens_seen = time.perf_counter(), 0
    try:
        while step < total:
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks: same after a resume
            ids = order[step * per_step:(step + 1) * per_step]
            mine = ids[accelerator.process_index::accelerator.num_processes]
            batches = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
            n_target = sum(sum(1 for x in encoded[i][1] if x != IGNORE) for i in mine) or 1
            loss_sum, step_tokens = 0.0, 0
            for micro in batches:
                input_ids, labels, mask = _pad([encoded[i] for i in micro], tokenizer.pad_token_id,
                                               accelerator.device)
                logits, targets = _target_logits(model, input_ids, mask, labels)
                loss = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=IGNORE,
                                                         reduction="sum") / n_target
                accelerator.backward(loss)
                loss_sum += loss.item()
                step_tokens += int(mask.sum())
            lr = _lr(cfg, step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += step_tokens
            elapsed = time.perf_counter() - started
            entry = {"step": step, "total_steps": total, "loss": round(loss_sum, 6), "lr": lr,
                     "tokens": step_tokens, "tokens_per_s": round(tokens_seen / elapsed, 2),
                     "elapsed_s": round(elapsed, 3)}
            if main:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if step % cfg.save_every == 0 or step == total:
                    _save_checkpoint(accelerator.unwrap_model(model), optimizer, params, run, step)
            if on_step:
                on_step(entry)
    finally:
        if log:
            log.close()
    if main:
        final = accelerator.unwrap_model(model)
        final.save_pretrained(str(run), safe_serialization=True)
        tokenizer.save_pretrained(str(run))
        summary = {"base": str(Path(cfg.base).resolve()), "base_kind": kind, "model_type": model_type,
                   "steps": step, "examples": len(encoded), "lora_r": cfg.lora_r,
                   "lora_alpha": cfg.lora_alpha}
        (run / "cai_run.json").write_text(json.dumps(summary, indent=2))
        return summary
    return {"steps": step}


def _target_logits(model, input_ids, mask, labels):
    """Logits at the positions that predict a reply token, and those tokens.

    The LM head (vocabulary × hidden, a fifth of the tiny model's FLOPs) runs only where a
    label follows, through transformers' boolean ``logits_to_keep``; a model that does not
    take that gets the full logits instead.
    """
    import torch

    follows = labels[:, 1:] != IGNORE
    keep = torch.cat([follows, torch.zeros_like(follows[:, :1])], dim=1)
    targets = labels[:, 1:][follows]
    try:
        logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits
        if logits.dim() == 2 and logits.shape[0] == targets.shape[0]:
            return logits, targets
    except (TypeError, IndexError, RuntimeError):
        pass
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    return logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after the checkpoint (a killed run logged them, then lost them)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _example_order(n: int, needed: int, seed: int) -> list[int]:
    """Example indices for the whole run: a fresh seeded permutation per epoch."""
    import torch

    order: list[int] = []
    epoch = 0
    while len(order) < needed:
        gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        order += torch.randperm(n, generator=gen).tolist()
        epoch += 1
    return order


def _pad(items, pad_id: int, device):
    import torch

    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(items):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        mask[row, :len(ids)] = 1
    return input_ids.to(device), labels.to(device), mask.to(device)


def _lr(cfg: SFTConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    return cfg.learning_rate * max(0.0, 1.0 - (step - cfg.warmup_steps) / span)


def _save_checkpoint(model, optimizer, params, run: Path, step: int) -> None:
    """Written to a temporary folder and renamed, so a kill mid-save leaves the last good one."""
    from safetensors.torch import save_file

    final = run / CHECKPOINTS / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    index = {id(p): i for i, p in enumerate(params)}
    tensors = {}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            tensors[f"{index[id(p)]}.{key}"] = value.detach().clone().cpu().contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _load_optimizer(optimizer, params, path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        param = params[int(index)]
        optimizer.state[param][key] = value if key == "step" else value.to(param.device)
