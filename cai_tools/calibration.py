"""Calibration of predicted probabilities, shared by the PM's held-out report and the judge check."""

from __future__ import annotations

from typing import Sequence

ECE_BINS = 10


def expected_calibration_error(probs: Sequence[float], truths: Sequence[float], bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins: the bin-size-weighted gap between the mean probability
    and the mean outcome (``truths`` may be soft, in [0, 1])."""
    total = 0.0
    for b in range(bins):
        members = [(p, t) for p, t in zip(probs, truths)
                   if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if members:
            gap = abs(sum(p for p, _ in members) - sum(t for _, t in members)) / len(members)
            total += len(members) / len(probs) * gap
    return total
