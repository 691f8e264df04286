"""Known-answer checks: does a training step move a model toward what a rule asks?

A rule (``train.rule_rewards``) is the known answer: the model's answers to held-out prompts are
scored by it before and after training (through llama.cpp, so the export is checked too), and
the per-prompt difference is bootstrapped over prompts. The verdict:

- ``learns``: the interval of the mean difference lies above 0;
- ``wrong direction``: it lies below 0 (a sign error somewhere in the chain);
- ``no effect``: it includes 0.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..train.rule_rewards import RuleReward, prompt_of
from .stats import percentile_interval

LEARNS, NO_EFFECT, WRONG = "learns", "no effect", "wrong direction"


def rule_metric(engine, prompts: Sequence[list[dict]], rule: RuleReward, *, samples: int = 2, seed: int = 0,
                max_tokens: int = 48, temperature: float = 0.7) -> list[float]:
    """Each prompt's mean rule reward over ``samples`` answers (seeded per prompt and sample)."""
    from ..engines.base import Generation, SamplingParams
    from ..records import record_seed

    chats, params = [], []
    for i, chat in enumerate(prompts):
        for k in range(samples):
            chats.append(chat)
            params.append(SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                         seed=record_seed(seed, str(i), "known-answer", k)))
    answers = engine.generate(chats, params)
    scores = [rule.score(prompt_of(chat), g.text if isinstance(g, Generation) else "", f"prompt {i // samples + 1}")
              for i, (chat, g) in enumerate(zip(chats, answers))]
    return [sum(scores[i * samples:(i + 1) * samples]) / samples for i in range(len(prompts))]


def paired_difference(before: Sequence[float], after: Sequence[float], *, samples: int = 2000,
                      level: float = 0.95, seed: int = 0) -> dict:
    """Mean of after − before over prompts, its bootstrap interval (resampling prompts) and the verdict."""
    if len(before) != len(after) or not before:
        raise ValueError("one before and one after value per prompt")
    diffs = [a - b for a, b in zip(after, before)]
    rng = random.Random(seed)
    n = len(diffs)
    draws = [sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples)]
    low, high = percentile_interval(draws, level)
    mean = sum(diffs) / n
    verdict = LEARNS if low > 0 else WRONG if high < 0 else NO_EFFECT
    return {"before": sum(before) / n, "after": sum(after) / n, "difference": mean, "interval": [low, high],
            "prompts": n, "verdict": verdict}


def describe(name: str, result: dict, metric: str) -> str:
    """One line: '<name>: <metric> 0.41 -> 0.63, +0.22 [+0.15, +0.29] over 46 prompts: learns'."""
    low, high = result["interval"]
    return (f"{name}: {metric} {result['before']:.3f} -> {result['after']:.3f}, {result['difference']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] over {result['prompts']} held-out prompts: {result['verdict']}")
