"""The judge's question and how its answer is read: the paper's multiple-choice comparison as a chat
(``judge_chat``: the constitution's system prompt and worked examples, then the conversation, a
principle and the two answers as options (A) and (B)), the cue after which the options' log-probabilities
are read, and P(A) from them. ``prefer_first`` judges a list of comparisons in both orders, as
``judge`` does, for the steps that need a judgement without its records (``revise --keep-better``,
the direct-RLAIF reward)."""

from __future__ import annotations

import math
from typing import Sequence

from ..constitutions.constitution import Constitution, JudgePrinciple
from ..engines.base import Engine, ItemError

CUE = "The answer is:"
OPTIONS = (" (A)", " (B)")
CONTENT_FREE = "N/A"


def _conversation_text(messages: list[dict]) -> str:
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def judge_question(conversation: str, principle: str, a: str, b: str) -> str:
    """The paper's multiple-choice question (the answer cue follows in the reply)."""
    return (f"Consider the following conversation between a human and an assistant:\n\n"
            f"{conversation}\n\n{principle}\nOptions:\n(A) {a}\n(B) {b}")


def judge_chat(constitution: Constitution, messages: list[dict], principle: JudgePrinciple,
               a: str, b: str, examples: bool = True) -> list[dict]:
    """The judge's chat for one comparison: the system prompt and (with ``examples``) the worked
    judge examples as earlier turns, then the multiple-choice question over ``messages`` (system
    turns dropped), ``a`` as (A) and ``b`` as (B)."""
    turns: list[dict] = []
    if constitution.system_prompt:
        turns.append({"role": "system", "content": constitution.system_prompt})
    for ex in constitution.judge_few_shot if examples else []:
        text = constitution.judge_principle(ex.principle).text
        turns.append({"role": "user", "content": judge_question(
            _conversation_text([{"role": "user", "content": ex.prompt}]), text,
            ex.response_a, ex.response_b)})
        turns.append({"role": "assistant", "content": f"{CUE} ({ex.answer})"})
    body = [m for m in messages if m["role"] != "system"]
    turns.append({"role": "user", "content": judge_question(_conversation_text(body),
                                                            principle.text, a, b)})
    return turns


def prob_first(logprobs: Sequence[float]) -> float:
    """P(option A) from the two options' log-probabilities, normalised between them."""
    la, lb = logprobs
    return sigmoid(la - lb)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def content_free_chat(constitution: Constitution, principle: JudgePrinciple,
                      examples: bool = True) -> list[dict]:
    """The judge's chat for ``principle`` with no content: what it says here is its order prior."""
    return judge_chat(constitution, [{"role": "user", "content": CONTENT_FREE}], principle,
                      CONTENT_FREE, CONTENT_FREE, examples)


def prefer_first(engine: Engine, constitution: Constitution,
                 comparisons: Sequence[tuple[list[dict], JudgePrinciple, str, str]],
                 examples: bool = True) -> list[float | ItemError]:
    """P(first answer is better) for each (conversation, principle, first, second), judged as ``judge``
    does: the multiple-choice question in both orders, option probabilities averaged (identical
    answers are 0.5 without asking). An item the engine could not score is its ItemError."""
    asked = [k for k, (_, _, a, b) in enumerate(comparisons) if a.strip() != b.strip()]
    chats = [judge_chat(constitution, messages, principle, x, y, examples)
             for k in asked for messages, principle, a, b in [comparisons[k]] for x, y in ((a, b), (b, a))]
    results = engine.choice_logprobs(chats, [list(OPTIONS)] * len(chats), cue=CUE) if chats else []
    out: list[float | ItemError] = [0.5] * len(comparisons)
    for n, k in enumerate(asked):
        first_shown_first, first_shown_second = results[2 * n], results[2 * n + 1]
        error = next((r for r in (first_shown_first, first_shown_second) if isinstance(r, ItemError)), None)
        out[k] = error or (prob_first(first_shown_first) + 1.0 - prob_first(first_shown_second)) / 2
    return out
