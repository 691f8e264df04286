"""The LoRA training loop shared by ``sft`` and ``build-pm``.

A plain loop (AdamW, linear warmup and decay, gradient accumulation) rather than a Trainer,
so that everything a run writes is safetensors/JSON/YAML (no pickled optimizer state) and a
resumed run replays exactly the batches and dropout masks it would have seen. ``accelerate
launch`` runs it on several GPUs: each process takes its share of every step's items and
accelerate averages the gradients.

A run folder holds: ``config.yaml`` (the resolved config), ``log.jsonl`` (one line per
step), ``checkpoints/step-N/`` (adapter, optimizer state, step), and at the end the adapter
(``adapter_model.safetensors`` + ``adapter_config.json``), the tokenizer and ``cai_run.json``
(what ``export``, ``score`` and ``rl`` need to know about the base).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import InputError, UsageError
from ..option_fields import option, typed_values
from ..yaml_files import error_line, load_yaml
from .hf_models import base_kind, peak_memory_mib, pick_device_and_dtype, quiet_libraries
from .gguf_cache import announce_copy
from .quantized import CHECKPOINTING_KWARGS, prepare_for_lora
from .runs import RunFolder, peft_config


@dataclass
class TrainingConfig:
    """Options every LoRA training step has; a step's own config adds its data options."""

    base: str = option(
        "", "Base model: a GGUF file or a Hugging Face folder (default: the bundled SmolLM2).")
    out: str = option("", "Run folder for adapter, logs, checkpoints.")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: int = option(32, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    target_modules: list[str] | None = option(
        None, "Modules to adapt (repeat); default: attention and MLP projections.")
    epochs: float = option(1.0, "Passes over the data.")
    max_steps: int | None = option(None, "Stop after N optimizer steps (overrides --epochs).")
    batch_size: int = option(4, "Items per micro-batch.")
    grad_accum: int = option(1, "Micro-batches per step.")
    learning_rate: float = option(2e-4, "Peak learning rate.", flags=("--lr",))
    warmup_steps: int = option(0, "Linear warmup steps.")
    weight_decay: float = 0.0
    max_length: int = option(512, "Truncate to N tokens.")
    save_every: int = option(50, "Checkpoint every N steps.")
    seed: int = option(0, "Seed for data order, splits, init and dropout.")
    device: str = option("auto", "cpu, cuda, cuda:1, ...")
    dtype: str = option("auto", "float32, bfloat16, float16 (auto: bfloat16 on a GPU that has it, "
                                "else float32).")
    load_in: str = option(
        "", "Load the base quantized by bitsandbytes: 4bit (QLoRA) or 8bit.", default_help="full precision")
    gradient_checkpointing: bool | None = option(
        None, "Recompute activations in the backward pass: less memory, about a third more compute.", default_help="on with a GPU, off on the CPU",
        flags=("--gradient-checkpointing/--no-gradient-checkpointing",))
    report_to: str = option("none", "Also log each step to tensorboard or wandb (or none).")

    def checkpointing_on(self, device: str) -> bool:
        """--gradient-checkpointing, or by default on with CUDA: memory is what a GPU runs out of."""
        return device.startswith("cuda") if self.gradient_checkpointing is None else self.gradient_checkpointing

    @classmethod
    def from_sources(cls, yaml_path: str | None, overrides: dict):
        """Defaults, then the YAML file, then the options given on the command line."""
        values: dict = {}
        if yaml_path:
            try:
                loaded = load_yaml(Path(yaml_path).read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read config: {exc}", where=yaml_path) from None
            except yaml.YAMLError as exc:
                problem, line = error_line(exc)
                raise InputError(f"not valid YAML: {problem}", where=f"{yaml_path}:{line}" if line else yaml_path) from None
            if not isinstance(loaded, dict):
                raise InputError("config must be a mapping of option: value", where=yaml_path)
            try:
                values.update(typed_values(cls, loaded))
            except ValueError as exc:
                raise InputError(str(exc), where=yaml_path) from None
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
        from ..models.refs import resolve

        self.base = resolve(self.base)   # hf:/ollama:/lmstudio: -> the local file or folder
        if not self.out:
            raise UsageError("no run folder: pass --out RUN")
        for name in ("lora_r", "batch_size", "grad_accum", "max_length", "save_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError("max_steps must be at least 1")
        from .quantized import check_load_in
        from .reporting import check_report_to

        check_report_to(self.report_to)

        check_load_in(self.load_in, "cpu" if self.device == "auto" else self.device)


@dataclass
class Task:
    """What a training step plugs into the loop."""

    peft_task_type: str                          # "CAUSAL_LM" or "SEQ_CLS"
    n_items: int                                 # training items (examples, pairs)
    load_model: Callable[[Any, str], Any]        # (dtype, device) -> transformers model
    micro_loss: Callable[[Any, list[int], Any], tuple[Any, int]]
    """(model, item indices, device) -> (summed loss tensor, tokens processed)."""
    denominator: Callable[[list[int]], float]    # a step's items -> what the loss is divided by


def prepare_run(cfg: TrainingConfig, resume: bool) -> Path | None:
    """Check the run folder against --resume and the base model; the checkpoint to resume from."""
    quiet_libraries()
    checkpoint = RunFolder(cfg.out).start(resume)
    base_kind(cfg.base)
    return checkpoint


def run_training(cfg: TrainingConfig, task: Task, tokenizer, checkpoint: Path | None, *,
                 on_step: Callable[[dict], None] | None = None,
                 on_note: Callable[[str], None] = lambda message: None, summary: dict | None = None):
    """Train (or resume) LoRA adapters for ``task``; returns (summary, trained model or None
    on processes other than the main one)."""
    import torch
    from accelerate import Accelerator
    from peft import get_peft_model

    run = RunFolder(cfg.out)
    device, dtype = pick_device_and_dtype(cfg.device, cfg.dtype)
    accelerator = Accelerator(cpu=device == "cpu")
    torch.manual_seed(cfg.seed)  # a PM's fresh score head and LoRA's A start from this
    announce_copy(cfg.base, dtype, cfg.load_in, on_note)
    model = task.load_model(dtype, str(accelerator.device))
    model_type = model.config.model_type
    checkpointing = cfg.checkpointing_on(device)
    model = prepare_for_lora(model, checkpointing)   # a quantized base only
    model = get_peft_model(model, peft_config(cfg, model_type, task.peft_task_type))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    if accelerator.num_processes > task.n_items:
        raise UsageError(f"{accelerator.num_processes} processes but only {task.n_items} training items: "
                         "launch at most as many processes as there are items")
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * task.n_items / per_step))
    step = 0
    main = accelerator.is_main_process
    if checkpoint is not None:
        step = run.load_checkpoint(checkpoint, model, optimizer=optimizer, params=params,
                                   truncate_log=main)
    on_note(f"training {total} steps of {per_step} items on {accelerator.device} ({dtype}), "
            f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha}" + (f", base in {cfg.load_in}" if cfg.load_in else "")
            + (", gradient checkpointing" if checkpointing else "")
            + (f", resuming after step {step}" if step else ""))
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    if main:
        run.write_config(cfg)
    order = _item_order(task.n_items, total * per_step, cfg.seed)
    log = run.open_log() if main else None
    started, tokens_seen = time.perf_counter(), 0
    try:
        while step < total:
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks: same after a resume
            ids = order[step * per_step:(step + 1) * per_step]
            mine = ids[accelerator.process_index::accelerator.num_processes]
            # The whole step's denominator, times the processes accelerate averages gradients over:
            # the update is then the single-process one, whatever the split.
            denominator = (task.denominator(ids) or 1.0) / accelerator.num_processes
            loss_sum, step_tokens = 0.0, 0
            for i in range(0, len(mine), cfg.batch_size):
                loss, tokens = task.micro_loss(model, mine[i:i + cfg.batch_size], accelerator.device)
                loss = loss / denominator
                accelerator.backward(loss)
                loss_sum += loss.item()
                step_tokens += tokens
            if accelerator.num_processes > 1:  # log the whole step, not this process's share
                totals = accelerator.reduce(torch.tensor([loss_sum, step_tokens], dtype=torch.float64,
                                                         device=accelerator.device), "sum")
                loss_sum, step_tokens = totals[0].item() / accelerator.num_processes, int(totals[1].item())
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
                     "elapsed_s": round(elapsed, 3), "peak_mib": peak_memory_mib(str(accelerator.device))}
            if main:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if step % cfg.save_every == 0 or step == total:
                    run.save_checkpoint(accelerator.unwrap_model(model), step, optimizer=optimizer,
                                        params=params)
            if on_step:
                on_step(entry)
    finally:
        if log:
            log.close()
    if not main:
        return {"steps": step}, None
    final = accelerator.unwrap_model(model)
    run.save_adapter(final, tokenizer)
    info = run.finish({"base": str(Path(cfg.base).resolve()), "base_kind": base_kind(cfg.base),
                       "model_type": model_type, "task": task.peft_task_type, "steps": step,
                       "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "load_in": cfg.load_in or None,
                       **(summary or {})})
    return info, final


def _item_order(n: int, needed: int, seed: int) -> list[int]:
    """Item indices for the whole run: a fresh seeded permutation per epoch."""
    import torch

    order: list[int] = []
    epoch = 0
    while len(order) < needed:
        gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        order += torch.randperm(n, generator=gen).tolist()
        epoch += 1
    return order


def _lr(cfg: TrainingConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    return cfg.learning_rate * max(0.0, 1.0 - (step - cfg.warmup_steps) / span)
