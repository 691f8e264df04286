"""``build-pm``: a preference model trained on soft labels (the paper's PM, phase 2).

A one-output sequence classifier on the base (LoRA adapters plus a trainable ``score``
head) gives each conversation a reward r. For a pair with soft label p = P(chosen better),
the loss is the Bradley-Terry cross-entropy with soft targets:

    -[p · log σ(r_c − r_r) + (1 − p) · log σ(r_r − r_c)]

which is the usual hard-label loss at p = 1 (TRL's RewardTrainer takes hard labels only).
Several ``--data FILE:WEIGHT`` inputs mix AI harmlessness labels from ``cai judge`` with human
helpfulness comparisons, as the paper did. A held-out split is scored at the end: accuracy
and expected calibration error of σ(r_c − r_r) against the soft labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..calibration import accuracy_verdict, expected_calibration_error, wilson_interval
from ..errors import UsageError
from ..option_fields import option
from .chat_tokens import conversation_ids
from .hf_models import encode_left_padded, load_reward_model, load_tokenizer
from .lora import Task, TrainingConfig, prepare_run, run_training
from .preferences import Preference, load_preferences


@dataclass
class PMConfig(TrainingConfig):
    """Options of a ``build-pm`` run: the training options plus the preference files (``data``,
    FILE[:WEIGHT]) and the share of each held out for the accuracy/calibration report."""

    data: list[str] = option(
        default_factory=list, help="Preference records, FILE or FILE:WEIGHT; repeat to mix files.")
    eval_fraction: float = option(
        0.1, "Share of each file held out for the accuracy/calibration report.")
    weight_by_confidence: bool = option(
        False, "Weight each pair's loss by its label's confidence |2·label − 1|.")
    learning_rate: float = 1e-4
    # Off, as TRL's RewardTrainer has it (disable_dropout): LoRA dropout's masks were 17 % of a
    # CPU step's time and ~550 MiB of its peak memory on the tiny model (bench/bench_rl.py).
    lora_dropout: float = option(0.0, default_help="0 (no dropout, as TRL's RewardTrainer)")

    def check(self) -> None:
        super().check()
        if not self.data:
            raise UsageError("no preference data: pass --data FILE[:WEIGHT] (from 'cai judge', "
                             "'cai pairs' or chosen/rejected comparisons)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise UsageError("eval_fraction must be in [0, 1)")


def soft_bt_loss(margin, label):
    """Per-pair soft-label Bradley-Terry loss; ``margin`` = r_chosen − r_rejected."""
    import torch.nn.functional as F

    return -(label * F.logsigmoid(margin) + (1.0 - label) * F.logsigmoid(-margin))


def confidence_weights(pairs: list[Preference]) -> list[float]:
    """|2·label − 1| per pair, scaled to mean 1 (so the learning rate means the same);
    UsageError when every label is 0.5."""
    raw = [abs(2.0 * p.label - 1.0) for p in pairs]
    mean = sum(raw) / len(raw)
    if mean == 0.0:
        raise UsageError("--weight-by-confidence: every training label is 0.5, so every pair weighs nothing")
    return [w / mean for w in raw]


def pair_margins(model, tokenizer, pairs: list[Preference], max_length: int, device):
    """r_chosen − r_rejected for each pair, in one forward pass over both sides."""
    rows = [conversation_ids(tokenizer, p.chosen, max_length) for p in pairs] + \
           [conversation_ids(tokenizer, p.rejected, max_length) for p in pairs]
    ids, mask, positions = encode_left_padded(rows, tokenizer.pad_token_id, device)
    rewards = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, 0].float()
    return rewards[:len(pairs)] - rewards[len(pairs):], int(mask.sum())


def train_pm(cfg: PMConfig, *, resume: bool = False, on_step: Callable[[dict], None] | None = None,
             on_note: Callable[[str], None] = lambda message: None) -> dict:
    """Train (or resume) a PM run; returns its summary with the held-out report."""
    checkpoint = prepare_run(cfg, resume)
    import torch

    skipped: list[str] = []
    train, held = load_preferences(cfg.data, eval_fraction=cfg.eval_fraction, seed=cfg.seed,
                                   skipped=skipped)
    if skipped:
        on_note(f"left out {len(skipped)} pairs the judge marked low_confidence")
    on_note(f"{len(train)} training pairs, {len(held)} held out; loading {cfg.base}")
    weights = confidence_weights(train) if cfg.weight_by_confidence else [1.0] * len(train)
    if cfg.weight_by_confidence:
        faint = sum(w < 0.2 for w in weights)
        on_note(f"weighting pairs by label confidence: {faint} of {len(train)} weigh under 0.2 "
                f"(largest weight {max(weights):.2f})")
    tokenizer = load_tokenizer(cfg.base)

    def micro_loss(model, items, device):
        pairs = [train[i] for i in items]
        margins, tokens = pair_margins(model, tokenizer, pairs, cfg.max_length, device)
        labels = torch.tensor([p.label for p in pairs], device=margins.device)
        weight = torch.tensor([weights[i] for i in items], device=margins.device)
        return (weight * soft_bt_loss(margins, labels)).sum(), tokens

    task = Task(peft_task_type="SEQ_CLS", n_items=len(train),
                load_model=lambda dtype, device: load_reward_model(cfg.base, dtype, cfg.load_in, device), micro_loss=micro_loss,
                denominator=len)
    summary, model = run_training(cfg, task, tokenizer, checkpoint, on_step=on_step, on_note=on_note,
                                  summary={"pairs": len(train), "held_out": len(held)})
    if model is not None and held:
        report = evaluate(model, tokenizer, held, cfg.max_length, cfg.batch_size)
        (Path(cfg.out) / "eval.json").write_text(json.dumps(report, indent=2))
        summary["eval"] = report
    return summary


def evaluate(model, tokenizer, pairs: list[Preference], max_length: int, batch_size: int) -> dict:
    """Accuracy (on pairs whose label is not 0.5), mean loss, and calibration of σ(margin)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    margins = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            m, _ = pair_margins(model, tokenizer, pairs[i:i + batch_size], max_length, device)
            margins += m.tolist()
    labels = [p.label for p in pairs]
    return calibration_report(margins, labels)


# Fewer decided held-out pairs than this and even a perfect PM's interval is too wide to mean much.
MIN_HELD_OUT = 30


def calibration_report(margins: list[float], labels: list[float]) -> dict:
    """Held-out metrics from PM margins and soft labels: pair count, ``accuracy`` (on labels other
    than 0.5; None when there are none) with its 95 % Wilson interval and verdict (at chance / weak /
    ok), a ``warning`` when fewer than MIN_HELD_OUT pairs decide it, ``mean_loss``, ``ece`` (10
    bins) and ``mean_margin``."""
    import math

    probs = [1.0 / (1.0 + math.exp(-m)) for m in margins]
    decided = [(q, p) for q, p in zip(probs, labels) if p != 0.5]
    right = sum((q > 0.5) == (p > 0.5) for q, p in decided)
    accuracy = right / len(decided) if decided else None
    interval = wilson_interval(right, len(decided))
    losses = [-(p * math.log(max(q, 1e-12)) + (1 - p) * math.log(max(1 - q, 1e-12))) for q, p in zip(probs, labels)]
    ece = expected_calibration_error(probs, labels)
    warning = None
    if len(decided) < MIN_HELD_OUT:
        warning = (f"only {len(decided)} held-out pairs: too few for the accuracy to mean much "
                   f"(hold out at least {MIN_HELD_OUT}: more pairs or a larger --eval-fraction)")
    return {"pairs": len(probs), "accuracy": accuracy, "accuracy_interval": interval,
            "verdict": accuracy_verdict(interval), "warning": warning, "mean_loss": sum(losses) / len(losses),
            "ece": ece, "mean_margin": sum(margins) / len(margins)}
