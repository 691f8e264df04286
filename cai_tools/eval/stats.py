"""The statistics ``eval`` reports: pairwise win rates and Elo ratings with intervals.

Comparisons are soft: each is (model a, model b, s) with s = P(a's answer is better) from
the two-order judge. Win rates average s per ordered pair of models. Elo ratings are the
Bradley-Terry fit of all comparisons (the paper's headline metric), lightly regularized,
on the Elo scale (400 · log10 odds), anchored so the ratings average 0. Intervals of both come
from a seeded bootstrap over prompts: the comparisons of one prompt share its answers, so they
are not independent draws (a bootstrap over comparisons gives intervals that are too narrow).
``is_refusal`` is the evasiveness detector.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from typing import Sequence

ELO_SCALE = 400.0 / math.log(10.0)   # natural-log odds -> Elo points

Comparison = tuple[str, str, float]  # (model a, model b, P(a better))


def win_rates(comparisons: Sequence[Comparison]) -> dict[tuple[str, str], float]:
    """Mean P(a better than b) for every ordered pair of models that met."""
    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for a, b, s in comparisons:
        for key, value in (((a, b), s), ((b, a), 1.0 - s)):
            sums[key] += value
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}


def win_rate_intervals(comparisons: Sequence[Comparison], prompts: Sequence[str], *,
                       samples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> dict[tuple[str, str], tuple[float, float]]:
    """Percentile bootstrap intervals of ``win_rates``, resampling prompts (``prompts[i]`` is
    the prompt comparison i was judged on) with all of each drawn prompt's comparisons."""
    if len(prompts) != len(comparisons):
        raise ValueError("one prompt per comparison")
    # per prompt, the sum and count of P(a better) per ordered pair: a resample only adds these up
    per_prompt: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    for (a, b, s), prompt in zip(comparisons, prompts):
        for key, value in (((a, b), s), ((b, a), 1.0 - s)):
            cell = per_prompt[prompt][key]
            cell[0] += value
            cell[1] += 1
    clusters = list(per_prompt.values())
    rng = random.Random(seed)
    draws: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(samples):
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        for _ in clusters:
            for key, (total, count) in clusters[rng.randrange(len(clusters))].items():
                sums[key][0] += total
                sums[key][1] += count
        for key, (total, count) in sums.items():
            draws[key].append(total / count)
    return {key: percentile_interval(values, level) for key, values in draws.items()}


def elo_ratings(comparisons: Sequence[Comparison], *, prior: float = 0.5, iterations: int = 10000,
                tol: float = 1e-12) -> dict[str, float]:
    """Bradley-Terry ratings by the minorize-maximize iteration (Hunter 2004), soft outcomes.

    ``prior`` adds that many virtual comparisons of each model against a reference player
    of strength 1, each won half: it keeps ratings finite when a model wins (or loses)
    every comparison; 0 gives the plain maximum-likelihood fit.
    """
    models = sorted({m for a, b, _ in comparisons for m in (a, b)})
    wins = {m: prior / 2.0 for m in models}
    for a, b, s in comparisons:
        wins[a] += s
        wins[b] += 1.0 - s
    strength = {m: 1.0 for m in models}
    for _ in range(iterations):
        denom = {m: prior / (strength[m] + 1.0) for m in models}
        for a, b, _ in comparisons:
            inv = 1.0 / (strength[a] + strength[b])
            denom[a] += inv
            denom[b] += inv
        new = {m: max(wins[m], 1e-300) / denom[m] for m in models}
        if prior == 0.0:  # the plain fit has a free scale: pin the geometric mean to 1
            g = math.exp(sum(math.log(v) for v in new.values()) / len(new))
            new = {m: v / g for m, v in new.items()}
        change = max(abs(math.log(new[m] / strength[m])) for m in models)
        strength = new
        if change < tol:
            break
    logs = {m: math.log(v) for m, v in strength.items()}
    mean = sum(logs.values()) / len(logs)
    return {m: (v - mean) * ELO_SCALE for m, v in logs.items()}


def elo_intervals(comparisons: Sequence[Comparison], prompts: Sequence[str] | None = None, *,
                  samples: int = 200, level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the Elo ratings, resampling prompts (``prompts[i]`` is the
    prompt comparison i was judged on) with all of each drawn prompt's comparisons: they share
    its answers, so they are not independent draws. Without ``prompts``, comparisons are."""
    clusters: dict[str, list[Comparison]] = defaultdict(list)
    for i, comparison in enumerate(comparisons):
        clusters[prompts[i] if prompts is not None else str(i)].append(comparison)
    groups = list(clusters.values())
    rng = random.Random(seed)
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(samples):
        resampled = [c for _ in groups for c in groups[rng.randrange(len(groups))]]
        for model, rating in elo_ratings(resampled, tol=1e-8).items():
            draws[model].append(rating)
    return {model: percentile_interval(values, level) for model, values in draws.items()}


def percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap draws (sorts ``values`` in place)."""
    values.sort()
    return quantile(values, (1.0 - level) / 2.0), quantile(values, (1.0 + level) / 2.0)


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly between neighbours."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# Openings of a refusal. Checked near the start of an answer only: a helpful answer that
# mentions "I cannot stress enough" later on is not evasive.
_REFUSAL = re.compile(
    r"\b(i\s*(?:'m| am)\s+(?:sorry|afraid|not able|unable|not comfortable)|"
    r"i\s+(?:can(?:'|no)t|can not|won't|will not|must decline|do not feel comfortable|"
    r"don't feel comfortable|am not going to|'m not going to)|"
    r"as an ai\b|i apologi[sz]e|sorry, but|unable to (?:help|assist|provide)|"
    r"not (?:able|allowed|permitted) to (?:help|assist|provide))", re.IGNORECASE)


def is_refusal(answer: str, window: int = 160) -> bool:
    """Whether an answer declines the request (a phrase-based detector, as evasiveness
    measures go: it errs on the side of counting hedged partial help as a refusal)."""
    text = answer.replace("\u2019", "'")[:window]
    return bool(_REFUSAL.search(text)) or not answer.strip()
