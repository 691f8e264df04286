"""``sft``: LoRA fine-tuning on the model's own revisions (SL-CAI), with PEFT.

The examples (``sft_data``) are chats whose last assistant turn is the target; the loss is
the cross-entropy of those reply tokens only, averaged over a step's reply tokens. The loop,
checkpoints and run folder are ``train.lora``'s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from ..option_fields import option
from .hf_models import load_causal_lm, load_tokenizer
from .lora import Task, TrainingConfig, prepare_run, run_training
from .sft_data import IGNORE, left_out_summary, load_examples, tokenize_example


@dataclass
class SFTConfig(TrainingConfig):
    """Options of an ``sft`` run: the training options plus SL-CAI record files (``data``), whether
    to train on every round's revision, and ``mix`` files of helpfulness conversations."""

    data: list[str] = option(
        default_factory=list, help="SL-CAI records (after critique/revise); repeat for several files.")
    all_rounds: bool = option(
        False, "Train on every round's revision (the paper) or only the final one.",
        flags=("--all-rounds/--final-only",), default_help="--final-only")
    quality_filter: bool = option(
        True, "Train only on usable SL-CAI rounds (no quality flag), or on every round.", flags=("--quality-filter/--keep-flagged",),
        default_help="--quality-filter")
    mix: list[str] = option(
        default_factory=list, help="FILE:WEIGHT of helpfulness conversations to mix in; WEIGHT scales the file's share.")

    def check(self) -> None:
        super().check()
        if not self.data and not self.mix:
            raise UsageError("no training data: pass --data FILE (and/or --mix FILE:WEIGHT)")


def train_sft(cfg: SFTConfig, *, resume: bool = False, on_step: Callable[[dict], None] | None = None,
          on_note: Callable[[str], None] = lambda message: None) -> dict:
    """Run (or resume) one SFT run; returns its summary. ``on_step`` gets each log line,
    ``on_note`` what is happening before the first step (loading takes a while)."""
    checkpoint = prepare_run(cfg, resume)
    dropped = Counter() if cfg.quality_filter else None
    examples = load_examples(cfg.data, all_rounds=cfg.all_rounds, mix=cfg.mix, seed=cfg.seed,
                             dropped=dropped)
    if dropped:
        on_note(f"left out {left_out_summary(dropped)}")
    on_note(f"{len(examples)} training examples; loading {cfg.base}")
    tokenizer = load_tokenizer(cfg.base)
    encoded = [tokenize_example(tokenizer, ex, cfg.max_length) for ex in examples]

    def micro_loss(model, items, device):
        import torch

        input_ids, labels, mask = _pad([encoded[i] for i in items], tokenizer.pad_token_id, device)
        logits, targets = _target_logits(model, input_ids, mask, labels)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=IGNORE,
                                                 reduction="sum")
        return loss, int(mask.sum())

    task = Task(peft_task_type="CAUSAL_LM", n_items=len(encoded),
                load_model=lambda dtype, device: load_causal_lm(cfg.base, dtype, cfg.load_in, device), micro_loss=micro_loss,
                denominator=lambda items: sum(sum(1 for x in encoded[i][1] if x != IGNORE) for i in items))
    summary, _ = run_training(cfg, task, tokenizer, checkpoint, on_step=on_step, on_note=on_note,
                              summary={"examples": len(encoded),
                                       **({"left_out": dict(dropped)} if dropped is not None else {})})
    return summary


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
