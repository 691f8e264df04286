"""Calibration of predicted probabilities, shared by the PM's held-out report and the judge check."""

from __future__ import annotations

import math
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


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# The verdicts that mean the predictions cannot be used as they are.
NO_SIGNAL = ("at chance", "below chance")


def accuracy_verdict(interval: tuple[float, float] | None) -> str:
    """'at chance' when an accuracy interval includes 0.5 (or there is none), 'below chance'
    when it lies wholly under 0.5 (reliably wrong), 'weak' when its lower end is not above 0.6,
    else 'ok'."""
    if interval is not None and interval[1] < 0.5:
        return "below chance"
    if interval is None or interval[0] <= 0.5:
        return "at chance"
    return "ok" if interval[0] > 0.6 else "weak"
