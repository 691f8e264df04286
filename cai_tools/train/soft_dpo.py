"""Soft-label DPO: the judge's probability is each pair's target (``rl --algo dpo --labels soft``).

TRL's DPO loss, −log σ(βΔ) with Δ the policy's log-ratio margin (chosen − rejected, each
against the reference), treats every kept pair as certain; its ``label_smoothing`` is one global
ε. A judge gives each pair its own p = P(chosen is better), so the loss here is the binary
cross-entropy of σ(βΔ) against p:

    −[p · log σ(βΔ) + (1 − p) · log σ(−βΔ)]

Its gradient in Δ is −β(p − σ(βΔ)): a pair the judge called a coin flip (p ≈ 0.5) pushes the
margin towards 0 instead of up, and p = 1 gives TRL's loss exactly. The reference is the
policy with its LoRA disabled (a resumed run's "ref" copy has B zeroed: the same model).
"""

from __future__ import annotations

LABEL_COLUMN = "label"


def soft_dpo_loss(margins, labels, beta: float):
    """Per-pair loss −[p log σ(βΔ) + (1−p) log σ(−βΔ)] for margins Δ and labels p (tensors)."""
    import torch.nn.functional as F

    scaled = beta * margins
    return -(labels * F.logsigmoid(scaled) + (1.0 - labels) * F.logsigmoid(-scaled))


def soft_dpo_trainer_class():
    """TRL's DPOTrainer with the soft-label loss (a function, so trl loads only when it trains)."""
    import torch
    from trl import DPOTrainer

    class SoftLabelDPOTrainer(DPOTrainer):
        """DPOTrainer whose batches carry each pair's label and whose loss is ``soft_dpo_loss``."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = _WithLabels(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if LABEL_COLUMN not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, LABEL_COLUMN]

        def _compute_loss(self, model, inputs, return_outputs):
            labels = inputs["preference_label"].to(self.accelerator.device, torch.float32)
            margins = _log_ratio_margins(model, self.accelerator.unwrap_model(self.model), inputs)
            loss = soft_dpo_loss(margins, labels, self.beta).mean()
            self._log_margins(margins.detach(), labels)
            return (loss, None) if return_outputs else loss

        def _log_margins(self, margins, labels) -> None:
            mode = "train" if self.model.training else "eval"
            rewards = self.accelerator.gather(self.beta * margins)
            self._metrics[mode]["rewards/margins"].append(rewards.mean().item())
            self._metrics[mode]["rewards/accuracies"].append((rewards > 0).float().mean().item())
            self._metrics[mode]["labels/mean"].append(self.accelerator.gather(labels).mean().item())

    return SoftLabelDPOTrainer


_MODEL_INPUTS = ("input_ids", "attention_mask", "completion_mask")   # of TRL's preference collator


def _log_ratio_margins(model, peft_model, batch):
    """Δ per pair of a collated batch ([chosen..., rejected...]): the policy's log-ratio against the
    reference (``peft_model`` with its adapter disabled), chosen minus rejected."""
    import torch

    ids, attention, completion = (batch[k] for k in _MODEL_INPUTS)
    logps = _sequence_logps(model, ids, attention, completion)
    with torch.no_grad(), peft_model.disable_adapter():
        ref = _sequence_logps(model, ids, attention, completion)
    chosen, rejected = (logps - ref).chunk(2, dim=0)
    return chosen - rejected


def _sequence_logps(model, ids, attention, completion):
    """Each sequence's summed log-probability of its completion tokens, through the fused LM head
    DPOTrainer patches onto the model (as its own loss reads them: only completion positions are
    projected onto the vocabulary)."""
    labels = ids.masked_fill(completion == 0, -100)
    out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -(ids.size(1) - 1):].sum(dim=1)


class _WithLabels:
    """TRL's preference collator, plus each pair's label as ``preference_label``."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        import torch

        batch = self.collator(examples)
        batch["preference_label"] = torch.tensor([float(e[LABEL_COLUMN]) for e in examples])
        return batch


# Label bands the end-of-run margins are reported in: unsure, leaning, confident judgements.
LABEL_BANDS = ((0.5, 0.6), (0.6, 0.8), (0.8, 1.0))


def margins_by_label(trainer, max_pairs: int = 256, batch_size: int = 8) -> list[dict]:
    """The trained policy's implicit reward margin β·Δ on (up to ``max_pairs`` of) the training pairs,
    per label band: how far the policy moved on pairs the judge was sure and unsure of. Read on the
    unwrapped model, so under several processes the first one can do it alone."""
    import torch

    dataset = trainer.train_dataset
    model = trainer.accelerator.unwrap_model(trainer.model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pairs: list[tuple[float, float]] = []
    with torch.no_grad():
        for start in range(0, min(len(dataset), max_pairs), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset), max_pairs))]
            batch = trainer.data_collator(rows)
            margins = _log_ratio_margins(model, model, {k: batch[k].to(device) for k in _MODEL_INPUTS})
            pairs += [(float(r[LABEL_COLUMN]), trainer.beta * float(m)) for r, m in zip(rows, margins)]
    model.train(was_training)
    bands = []
    for low, high in LABEL_BANDS:
        inside = [m for p, m in pairs if low <= p < high or (high == 1.0 and p == 1.0)]
        if inside:
            bands.append({"labels": [low, high], "pairs": len(inside),
                          "mean_margin": round(sum(inside) / len(inside), 6),
                          "prefers_chosen": round(sum(m > 0 for m in inside) / len(inside), 4)})
    return bands
