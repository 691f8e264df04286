"""Reward-hacking monitors of ``cai rl``: statistics of each step's answers, and ``--stop-when``.

The paper (§4.3) saw over-trained RL-CAI policies drift into boilerplate ("you are valid,
valued, and cared for") and harsh refusals; PPO users see answers grow long and loop. Each
step's answers are measured, per answer, then averaged over the step's answers:

- ``response_words``: words in the answer (``response_length``, in tokens, comes from the trainer);
- ``repeated_ngram_share``: of the answer's word 3-grams, the share that repeats an earlier
  3-gram of the same answer (0 for an answer of fewer than 3 words); a loop tends to 1;
- ``refusal_rate``: 1 when ``cai eval``'s refusal detector (``is_refusal``) fires (an empty answer counts);
- ``boilerplate_share``: 1 when the answer contains one of ``BOILERPLATE`` (or ``--boilerplate``
  phrases), matched on lower-cased words with punctuation and apostrophes dropped.

Per-answer values are summed with a count (``monitor_sums``), so processes add their vectors
and the means (``monitor_means``) are the whole step's. ``--stop-when STAT>BOUND`` ends a run
after the first step at which the condition holds; a NaN reward or KL always ends it.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..errors import UsageError
from ..eval.stats import is_refusal
from .chat_tokens import left_padded_prompts, response_mask

NGRAM = 3

# Phrases the paper's over-trained RL-CAI policies repeated in most answers to red-team prompts.
BOILERPLATE = (
    "you are valid, valued, and cared for",
    "you are not alone",
    "I'm here for you",
    "I'm here to support you",
    "please reach out to",
    "reach out to a mental health professional",
    "it's understandable to feel",
    "it's important to remember",
    "it's okay to feel",
    "your feelings are valid",
    "take care of yourself",
)

# Per-answer values, averaged over a step's answers (in this order in ``monitor_sums``).
MONITORS = ("response_words", "repeated_ngram_share", "refusal_rate", "boilerplate_share")
# What --stop-when can watch: the trainer's reward, KL and length in tokens, and the monitors.
STOP_STATS = ("reward", "kl", "response_length") + MONITORS
_NOT_IN_DPO = ("reward", "kl")   # DPO has no reward model and logs no KL
ALWAYS_WATCHED = ("reward", "kl")   # a NaN in either stops a run, --stop-when or not

_WORD = re.compile(r"[^\W_]+")


def answer_words(text: str) -> list[str]:
    """An answer's words, lower-cased; apostrophes dropped, not split on ("it's" and "it’s" are
    one word, "its"). What ``response_words`` counts and the length rule measures."""
    return _WORD.findall(text.lower().replace("\u2019", "").replace("'", ""))



def _phrase_keys(phrases: Iterable[str]) -> list[str]:
    return [f" {' '.join(answer_words(p))} " for p in phrases if answer_words(p)]


def has_boilerplate(text: str, phrases: Iterable[str] = BOILERPLATE) -> bool:
    """Whether ``text`` holds one of ``phrases`` (matched on words, as ``boilerplate_share``)."""
    joined = f" {' '.join(answer_words(text))} "
    return any(key in joined for key in _phrase_keys(phrases))


def repeated_ngram_share(words: Sequence[str], n: int = NGRAM) -> float:
    """The share of the n-grams of ``words`` that repeat an earlier one; 0 with no n-gram."""
    grams = list(zip(*(words[i:] for i in range(n))))
    seen: set = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def _answer_values(text: str, keys: list[str]) -> dict[str, float]:
    """One answer's values of ``MONITORS`` (``keys``: the boilerplate phrases, normalized)."""
    words = answer_words(text)
    joined = f" {' '.join(words)} "
    return {"response_words": float(len(words)), "repeated_ngram_share": repeated_ngram_share(words),
            "refusal_rate": float(is_refusal(text)),
            "boilerplate_share": float(any(key in joined for key in keys))}


def boilerplate_phrases(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """``BOILERPLATE`` and the user's own phrases (``--boilerplate``)."""
    return BOILERPLATE + tuple(extra)


def monitor_sums(texts: Sequence[str], boilerplate: Iterable[str] = BOILERPLATE) -> list[float]:
    """[number of answers, then the sum of each of ``MONITORS``]: vectors of several processes
    add up to the whole step's."""
    keys = _phrase_keys(boilerplate)
    sums = [float(len(texts))] + [0.0] * len(MONITORS)
    for text in texts:
        values = _answer_values(text, keys)
        for i, name in enumerate(MONITORS, 1):
            sums[i] += values[name]
    return sums


def monitor_means(sums: Sequence[float]) -> dict[str, float]:
    """The step's mean of each of ``MONITORS`` from (summed) ``monitor_sums``."""
    count = max(sums[0], 1.0)
    return {name: round(total / count, 6) for name, total in zip(MONITORS, sums[1:])}


def text_monitors(texts: Sequence[str], boilerplate: Iterable[str] = BOILERPLATE) -> dict[str, float]:
    return monitor_means(monitor_sums(texts, boilerplate))


def completion_text(completion) -> str:
    """The answer text of a TRL completion: a string, or a conversational list of messages."""
    return completion if isinstance(completion, str) else completion[-1]["content"]


def monitored(reward_fn: Callable, boilerplate: Iterable[str] = BOILERPLATE) -> Callable:
    """A TRL reward function that also reports each completion's monitors through TRL's
    ``log_metric``, which averages them over the step's completions in every process: they
    land in TRL's log line (and so in ``log.jsonl``) beside ``reward``."""
    keys = _phrase_keys(boilerplate)

    def report(completions, log_metric) -> None:
        if log_metric is None:
            return
        for completion in completions:
            text = completion_text(completion)
            for name, value in _answer_values(text, keys).items():
                log_metric(name, value)

    if inspect.iscoroutinefunction(reward_fn):  # TRL awaits async rewards: the wrapper must stay one
        @functools.wraps(reward_fn)
        async def async_reward_and_monitors(prompts, completions, **kwargs):
            rewards = await reward_fn(prompts, completions, **kwargs)
            report(completions, kwargs.get("log_metric"))
            return rewards

        return async_reward_and_monitors

    @functools.wraps(reward_fn)   # TRL names the reward's log keys after the function
    def reward_and_monitors(prompts, completions, **kwargs):
        rewards = reward_fn(prompts, completions, **kwargs)
        report(completions, kwargs.get("log_metric"))
        return rewards

    return reward_and_monitors


class PolicyProbe:
    """DPO samples nothing while it trains, so its monitors are measured on the current policy's
    greedy answers to a fixed few prompts of its data (the first ``size`` distinct ones), at
    every logged step: the same prompts each step, so the curves compare across steps."""

    def __init__(self, prompts: Iterable[list[dict]], max_new_tokens: int,
                 boilerplate: Iterable[str] = BOILERPLATE, size: int = 4):
        self.prompts: list[list[dict]] = []
        for prompt in prompts:
            if prompt not in self.prompts:
                self.prompts.append(prompt)
                if len(self.prompts) == size:
                    break
        self.max_new_tokens, self.boilerplate = max_new_tokens, tuple(boilerplate)

    def monitors(self, model, tokenizer) -> dict[str, float]:
        """``response_length`` (tokens) and ``MONITORS`` of the policy's answers to the probe."""
        import torch

        enc = left_padded_prompts(tokenizer, self.prompts, next(model.parameters()).device)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                # the cache on: the Trainer sets the config's use_cache to its own argument, off by default
                full = model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens, use_cache=True,
                                      pad_token_id=tokenizer.pad_token_id, temperature=None, top_k=None, top_p=None)
        finally:
            model.train(training)
        response = full[:, enc["input_ids"].shape[1]:]
        mask = response_mask(response, tokenizer.eos_token_id, tokenizer.pad_token_id)
        texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]
        return {"response_length": round(mask.sum().item() / len(texts), 2),
                **text_monitors(texts, self.boilerplate)}


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class StopCondition:
    stat: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.stat}{self.op}{self.bound:g}"

    def holds(self, entry: dict) -> bool:
        value = entry.get(self.stat)
        return value is not None and _OPS[self.op](value, self.bound)


def stop_stats(algo: str) -> tuple[str, ...]:
    return tuple(s for s in STOP_STATS if algo != "dpo" or s not in _NOT_IN_DPO)


def parse_stop_when(conditions: Iterable[str], algo: str = "ppo") -> list[StopCondition]:
    """``--stop-when`` conditions (``kl>8``, ``repeated_ngram_share>=0.5``); a one-line
    UsageError naming the valid stats for a malformed one or an unknown stat."""
    valid = stop_stats(algo)
    parsed = []
    for text in conditions:
        match = _CONDITION.match(text)
        if not match:
            raise UsageError(f"--stop-when {text!r}: expected STAT>NUMBER (or >=, <, <=), e.g. 'kl>8'; "
                             f"stats: {', '.join(valid)}")
        stat, op, bound = match.groups()
        if stat not in valid:
            said = f"--algo dpo logs no {stat}" if stat in STOP_STATS else f"unknown stat {stat!r}"
            raise UsageError(f"--stop-when {text!r}: {said}; stats: {', '.join(valid)}")
        parsed.append(StopCondition(stat, op, float(bound)))
    return parsed


def first_stop(conditions: Sequence[StopCondition], entry: dict) -> dict | None:
    """Why the run stops after this step's log entry, as ``cai_run.json``'s ``stopped_by`` records
    it: a NaN reward, KL or watched statistic (training has broken down: no comparison with a
    bound would ever hold), else the first condition that holds; None when nothing stops it."""
    for stat in dict.fromkeys(ALWAYS_WATCHED + tuple(c.stat for c in conditions)):
        value = entry.get(stat)
        if isinstance(value, float) and math.isnan(value):
            return {"condition": f"{stat} is NaN", "stat": stat, "value": None, "step": entry["step"]}
    for condition in conditions:
        if condition.holds(entry):
            return {"condition": str(condition), "stat": condition.stat, "value": entry[condition.stat],
                    "step": entry["step"]}
    return None


def stop_note(stopped: dict) -> str:
    if stopped["value"] is None:
        return (f"stopping after step {stopped['step']}: {stopped['condition']}, so training has broken down "
                "(a NaN always stops a run); the adapter is saved as it is now: if its weights are NaN too, "
                "use an earlier checkpoint")
    return (f"stopping after step {stopped['step']}: --stop-when {stopped['condition']} held "
            f"({stopped['stat']} = {stopped['value']:.4g}); the adapter is saved as at a normal end")
