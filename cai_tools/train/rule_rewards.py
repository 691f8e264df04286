"""Rule rewards: rewards whose right answer is known, as RL libraries check themselves with.

``--reward rule:NAME[=ARG]`` (built in) or ``--reward py:MODULE:FUNCTION`` (a user's own
``f(prompt, answer) -> float``, TRL's reward-function convention per item) score an answer
without a model. They serve three ways:

- as the reward of ``rl --algo ppo|grpo|rloo`` in place of ``--pm`` / ``--judge``;
- beside a PM or judge, weighted (``--reward-weight``): the hybrid reward that holds back the
  verbose and evasive drift the paper reports (§4.3);
- as a known answer: ``cai label --rule`` relabels preference pairs by a rule, and
  ``make sanity`` checks that every training algorithm moves a model toward what a rule asks.

A built-in rule scores in [0, 1]; higher is better. Each rule's metric on held-out prompts is
its mean reward.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CaiError, UsageError


class RewardError(CaiError):
    """A user's reward function failed on a record (it raised, or returned no number)."""


def _length(target: str) -> Callable[[str, str], float]:
    if not target.isdigit() or int(target) < 1:
        raise UsageError(f"rule length needs a positive number of words (rule:length=80), got {target!r}")
    n = int(target)

    def length(_prompt: str, answer: str) -> float:
        from .monitors import answer_words

        # smooth and never flat: answers far from N still tell which is closer
        return math.exp(-abs(len(answer_words(answer)) - n) / n)
    return length


def _no_refusal(_arg: str) -> Callable[[str, str], float]:
    from ..eval.stats import is_refusal

    return lambda _prompt, answer: 0.0 if is_refusal(answer) else 1.0


def _no_boilerplate(_arg: str) -> Callable[[str, str], float]:
    from .monitors import BOILERPLATE, has_boilerplate

    return lambda _prompt, answer: 0.0 if has_boilerplate(answer, BOILERPLATE) else 1.0


def _regex(pattern: str, *, must: bool = True) -> Callable[[str, str], float]:
    if not pattern:
        raise UsageError("rule regex needs a pattern (rule:regex=PATTERN)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"rule regex: {pattern!r} is not a regular expression ({exc})") from None
    return lambda _prompt, answer: float(bool(compiled.search(answer)) == must)


# name -> (factory of f(prompt, answer), whether it takes =ARG, what it rewards)
RULES: dict[str, tuple[Callable[[str], Callable[[str, str], float]], bool, str]] = {
    "length": (_length, True, "length=N: answers toward N words, exp(-|words - N| / N)"),
    "no-refusal": (_no_refusal, False, "no-refusal: 1 unless the answer refuses (the eval's refusal detector)"),
    "no-boilerplate": (_no_boilerplate, False, "no-boilerplate: 1 unless the answer holds a monitored "
                                                "boilerplate phrase"),
    "regex": (_regex, True, "regex=PATTERN: 1 when the pattern matches the answer"),
    "not-regex": (lambda p: _regex(p, must=False), True, "not-regex=PATTERN: 1 when it does not match"),
}


def rules_help() -> str:
    return "; ".join(text for _, _, text in RULES.values())


@dataclass(frozen=True)
class RuleReward:
    """One reward: its spec as the user wrote it and ``score(prompt, answer) -> float``."""

    spec: str
    score_one: Callable[[str, str], float]

    def score(self, prompt: str, answer: str, where: str = "") -> float:
        try:
            value = self.score_one(prompt, answer)
        except CaiError:
            raise
        except Exception as exc:   # the user's function: name it, the record and its error
            raise RewardError(f"--reward {self.spec} failed on {where or 'an answer'}: "
                              f"{type(exc).__name__}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RewardError(f"--reward {self.spec} returned {value!r} on {where or 'an answer'}, "
                              "not a finite number")
        return float(value)


def parse_reward(spec: str, option: str = "--reward") -> RuleReward:
    """``rule:NAME[=ARG]`` or ``py:MODULE:FUNCTION``; UsageError (listing the rules) when it is
    neither, before anything loads. ``option`` names the flag in messages."""
    try:
        return _parse(spec)
    except UsageError as exc:
        raise UsageError(str(exc).replace("--reward", option)) from None


def _parse(spec: str) -> RuleReward:
    kind, _, rest = spec.partition(":")
    if kind == "rule":
        name, has_arg, arg = rest.partition("=")
        if name not in RULES:
            raise UsageError(f"unknown rule {name!r} in --reward {spec}; the rules: {rules_help()}")
        factory, takes_arg, _ = RULES[name]
        if takes_arg != bool(has_arg):
            raise UsageError(f"--reward {spec}: " + (f"rule {name} needs =ARG ({RULES[name][2]})" if takes_arg
                                                     else f"rule {name} takes no argument"))
        return RuleReward(spec, factory(arg))
    if kind == "py":
        return RuleReward(spec, _import_function(spec, rest))
    raise UsageError(f"--reward must be rule:NAME[=ARG] or py:MODULE:FUNCTION, got {spec!r}; "
                     f"the rules: {rules_help()}")


def _import_function(spec: str, target: str) -> Callable[[str, str], float]:
    module_name, _, function = target.rpartition(":")
    if not module_name or not function:
        raise UsageError(f"--reward {spec}: write py:MODULE:FUNCTION (a module on the path or in the "
                         "current folder, and a function f(prompt, answer) -> float)")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))   # a module beside the user's data, as python -m finds it
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"--reward {spec}: module {module_name} does not import: "
                         f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UsageError(f"--reward {spec}: module {module_name} has no function {function}")
    return fn


def prompt_of(messages: Sequence[dict]) -> str:
    """The request a reward function sees as ``prompt``: the conversation's last user turn."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


class RuleRewards:
    """Several rule rewards, each times ``weight``, summed: ``rewards(conversations)`` like a PM's
    (each conversation ends in the answer), so PPO and the TRL reward wrapper take it as one."""

    def __init__(self, specs: Sequence[str], weight: float = 1.0):
        self.rules = [parse_reward(s) for s in specs]
        self.weight = weight

    def rewards(self, conversations: list[list[dict]]) -> list[float]:
        out = []
        for k, conv in enumerate(conversations):
            prompt, answer = prompt_of(conv[:-1]), conv[-1]["content"]
            where = f"prompt {prompt[:60]!r} (answer {k + 1} of the batch)"
            out.append(self.weight * sum(r.score(prompt, answer, where) for r in self.rules))
        return out


class HybridReward:
    """A PM (or anything with ``rewards(conversations)``) plus weighted rule rewards."""

    def __init__(self, pm, rules: RuleRewards):
        self.pm, self.rules = pm, rules
        self.model = getattr(pm, "model", None)   # for the PPO memory figure

    def rewards(self, conversations: list[list[dict]]) -> list[float]:
        return [a + b for a, b in zip(self.pm.rewards(conversations), self.rules.rewards(conversations))]
