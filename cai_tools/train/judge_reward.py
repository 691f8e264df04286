"""Direct RLAIF (Lee et al. 2023): the judge itself is the reward, no preference model.

``rl --algo rloo|grpo --judge MODEL`` hands TRL this reward function. Each sampled answer is
compared, by the same two-order multiple-choice judging as ``cai judge`` (``sl.judge_question.
prefer_first``, through the llama.cpp engine or a server), either with every other answer to the
same prompt in its group (reward: its mean win probability against them) or with the prompt
record's ``response`` (``--judge-against reference``; reward: P(it beats the reference)). Each
comparison draws one of the constitution's judge principles, seeded by the run seed, the prompt
and the unordered pair, so a repeated comparison asks the same question; those are answered
from a cache instead of the judge.

``--judge rule:NAME[=ARG]`` (or ``py:MODULE:FUNCTION``) puts a rule in the judge's place: the
answer the rule scores higher wins (a tie is 0.5). The same grouping and reward then have a
known right answer (``make sanity``).
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Callable

import orjson

from ..records import record_seed

# Comparisons kept for reuse. A step's groups repeat when prompts come round again and a small
# policy often samples the same answer twice; each entry is a few dozen bytes.
CACHE_SIZE = 200_000


class JudgeReward:
    """A TRL reward function scoring answers with a judge model; ``stats`` counts its work."""

    __name__ = "judge_reward"   # TRL names the reward column after it

    def __init__(self, cfg, on_note: Callable[[str], None] = lambda message: None):
        from ..constitutions.constitution import load_constitution
        from ..engines.base import EngineOptions
        from ..engines.registry import open_engine

        self.against, self.seed = cfg.judge_against, cfg.seed
        self.cache: dict[bytes, float] = {}
        self.stats = {"comparisons": 0, "cached": 0, "judge_s": 0.0}
        self.engine = self.rule = None
        if is_rule_judge(cfg.judge):
            from .rule_rewards import parse_reward

            self.rule = parse_reward(cfg.judge)
            on_note(f"direct RLAIF with a rule as the judge: {cfg.judge} picks the better answer of each pair")
            return
        self.constitution = load_constitution(cfg.judge_constitution)
        if not self.constitution.judge:
            from ..errors import ConstitutionError

            raise ConstitutionError("has no judge principles: --judge needs a constitution with a 'judge' list",
                                    where=self.constitution.path)
        self.engine = open_engine(EngineOptions(model=cfg.judge, n_gpu_layers=cfg.judge_gpu_layers), note=on_note)
        on_note(f"direct RLAIF: {cfg.judge} judges each answer against "
                + ("the others of its group" if self.against == "group" else "the prompt's reference answer")
                + f" ({self.constitution.name} judge principles, both orders)")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def __call__(self, prompts, completions, reference=None, messages=None, **_) -> list[float]:
        prompts = messages or prompts   # the conversations, when TRL's prompts are rendered text
        from .monitors import completion_text

        answers = [completion_text(c) for c in completions]
        if self.against == "reference":
            wanted = [(prompts[i], answers[i], reference[i]) for i in range(len(answers))]
            return self._prefer(wanted)
        groups: dict[bytes, list[int]] = {}
        for i, prompt in enumerate(prompts):   # TRL lays a prompt's answers side by side; group by content
            groups.setdefault(orjson.dumps(prompt), []).append(i)
        pairs = [(i, j) for members in groups.values() for n, i in enumerate(members) for j in members[n + 1:]]
        p_first = self._prefer([(prompts[i], answers[i], answers[j]) for i, j in pairs])
        wins = [0.0] * len(answers)
        for (i, j), p in zip(pairs, p_first):
            wins[i] += p
            wins[j] += 1.0 - p
        sizes = {i: len(members) for members in groups.values() for i in members}
        return [wins[i] / (sizes[i] - 1) if sizes[i] > 1 else 0.5 for i in range(len(answers))]

    def _rule_prefers(self, prompt, a: str, b: str) -> float:
        from .rule_rewards import prompt_of

        text = prompt_of(_messages(prompt))
        ra, rb = self.rule.score(text, a, f"prompt {text[:60]!r}"), self.rule.score(text, b, f"prompt {text[:60]!r}")
        self.stats["comparisons"] += 1
        return 1.0 if ra > rb else 0.0 if ra < rb else 0.5

    def _prefer(self, wanted: list[tuple]) -> list[float]:
        """P(first better) for each (prompt, first, second), from the cache or the judge."""
        from ..engines.base import ItemError
        from ..errors import InputError
        from ..sl.judge_question import prefer_first

        if self.rule is not None:
            return [self._rule_prefers(prompt, a, b) for prompt, a, b in wanted]
        keys, todo = [], {}
        for prompt, a, b in wanted:
            key = _key(prompt, a, b)
            keys.append(key)
            if key not in self.cache and key not in todo:
                # the unordered pair draws the principle, so (a, b) and (b, a) ask the same question
                rng = random.Random(record_seed(self.seed, "judge-reward", sorted([a, b]), prompt))
                principle = self.constitution.sample_judge_principles(rng, 1)[0]
                todo[key] = (_messages(prompt), principle, a, b)
        self.stats["comparisons"] += len(wanted)
        self.stats["cached"] += len(wanted) - len(todo)
        started = time.perf_counter()
        results = prefer_first(self.engine, self.constitution, list(todo.values()))
        self.stats["judge_s"] += time.perf_counter() - started
        for key, p in zip(todo, results):
            if isinstance(p, ItemError):
                raise InputError(f"the judge could not compare two answers: {p.message}", where="--judge")
            self.cache[key] = p
        out = [self.cache[k] for k in keys]
        if len(self.cache) > CACHE_SIZE:
            self.cache.clear()
        return out


def prompts_with_references(paths: list[str]) -> list[dict]:
    """TRL dataset rows {prompt, reference} for ``--judge-against reference``: each prompt record's
    messages and its ``response``; RecordError naming the record when that is missing."""
    from ..conversation import prompt_messages
    from ..errors import InputError
    from ..records import error_of, read_records, require_text

    rows = []
    for path in paths:
        found = [{"prompt": prompt_messages(r), "reference": require_text(r, "response")}
                 for r in read_records(path) if error_of(r) is None]
        if not found:
            raise InputError("no prompts in this file (is it empty?)", where=path)
        rows += found
    return rows


def is_rule_judge(judge: str) -> bool:
    """Whether ``--judge`` names a rule (``rule:`` or ``py:``) rather than a model."""
    return judge.startswith(("rule:", "py:"))


def _messages(prompt) -> list[dict]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _key(prompt, a: str, b: str) -> bytes:
    return hashlib.blake2b(orjson.dumps([prompt, a, b]), digest_size=16).digest()
