"""How good is the judge? Its labels on preference pairs whose better answer is known.

The paper's Fig. 4 measures the feedback model on labelled HHH comparisons. Here the judge
runs exactly as ``cai judge`` does on labelled records (TRL's layout: ``prompt``, ``chosen``,
``rejected``, optional ``category``); which answer is shown first is drawn per record from
the seed, so a position bias cannot pass for skill. Reported per category and overall, with
seeded bootstrap 95 % intervals over pairs:

- ``accuracy``: share of pairs where the label favours the better answer (a tie counts half);
- ``soft_accuracy``: mean probability the label puts on the better answer;
- ``consistency``: share of (pair, principle, model) judgements whose two orders pick the
  same answer: a judge that always says (A) scores 0 (None when one order is shown);
- ``first_position``: mean probability of option (A) over every order shown (0.5: no bias);

both after position-bias calibration when the judge calibrates each order (content-free);
- ``ece`` and ``brier``: calibration of P(the first candidate is better) against the truth.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..calibration import ECE_BINS, accuracy_verdict, expected_calibration_error
from ..conversation import prompt_messages
from ..errors import InputError, RecordError
from ..records import read_records, record_seed, where
from ..constitutions.constitution import Constitution
from ..engines.base import Engine
from ..sl.judge import JudgeSettings, judge, judged_orders, order_probs, orders_agree
from .stats import percentile_interval

LEVEL = 0.95
# Verdict thresholds on the accuracy interval and on order consistency.
WEAK_CONSISTENCY = 0.6


@dataclass
class LabelledPair:
    """One labelled comparison: the conversation, the better and the worse answer."""

    id: str
    messages: list[dict]
    chosen: str
    rejected: str
    category: str | None
    where: str


@dataclass
class Outcome:
    """What the judge said about one labelled pair."""

    category: str
    p_better: float                     # the label's probability on the better answer
    p_first: float                      # P(candidate 0 is better)
    first_is_better: bool
    orders: list[tuple[float, float]]   # per judgement: P(A) with candidate 0 first, with it second
    shown: list[float] = field(default_factory=list)  # P(A) of every order shown


def _answer_text(value, field: str, rec: dict) -> str:
    """A TRL answer: a string, or a list of messages whose last one is the assistant's."""
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant":
        value = value[-1].get("content")
    if not isinstance(value, str):
        raise RecordError(f"field '{field}' must be a string or a list of messages ending in the "
                          "assistant's answer", where=where(rec))
    return value


def _check_label(rec: dict) -> None:
    """A pair may carry ``label`` = P(chosen better); it must then say that 'chosen' is better."""
    label = rec.get("label")
    if label is None:
        return
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0 <= label <= 1:
        raise InputError(f"field 'label' must be a number from 0 to 1 (P(chosen better)), got {label!r}",
                         where=where(rec))
    if label <= 0.5:
        raise InputError(f"field 'label' is {label}: it does not say 'chosen' is the better answer, which "
                         "judge-check needs to know", where=where(rec))


def load_labelled(path: str, split: str | None = None) -> list[LabelledPair]:
    """The labelled pairs of ``path`` (those whose ``split`` is ``split``, when given); InputError
    naming the record for a missing or identical answer, a category only some records have, or an
    empty set."""
    pairs: list[LabelledPair] = []
    for rec in read_records(path):
        if split and rec.get("split", split) != split:
            continue
        for key in ("chosen", "rejected"):
            if key not in rec:
                raise InputError(f"labelled pair without '{key}'", where=where(rec))
        try:
            chosen = _answer_text(rec["chosen"], "chosen", rec)
            rejected = _answer_text(rec["rejected"], "rejected", rec)
            prompt = rec.get("prompt")   # TRL's conversational layout: a list of messages
            messages = prompt_messages({"messages": prompt} if isinstance(prompt, list) else rec)
        except RecordError as exc:
            raise InputError(exc.message, where=where(rec)) from None
        if chosen.strip() == rejected.strip():
            raise InputError("'chosen' and 'rejected' are the same answer", where=where(rec))
        _check_label(rec)
        category = rec.get("category")
        if category is not None and not isinstance(category, str):
            raise InputError("field 'category' must be a string", where=where(rec))
        pairs.append(LabelledPair(str(rec.get("id") or f"pair-{len(pairs) + 1}"), messages, chosen,
                                  rejected, category, where(rec)))
    if not pairs:
        raise InputError(f"no labelled pairs{f' in split {split!r}' if split else ''}", where=str(path))
    with_category = [p for p in pairs if p.category is not None]
    if with_category and len(with_category) < len(pairs):
        missing = next(p for p in pairs if p.category is None)
        raise InputError("record has no 'category' while others do (give every record one, or none)",
                         where=missing.where)
    return pairs


def judge_inputs(pairs: Sequence[LabelledPair], seed: int) -> list[dict]:
    """Records for ``sl.judge.judge``: the two answers in ``responses``, in an order drawn per pair
    from ``seed``; ``better`` is the index of the better one."""
    records = []
    for pair in pairs:
        better = record_seed(seed, pair.id, "judge-check-order") % 2
        answers = [pair.chosen, pair.rejected] if better == 0 else [pair.rejected, pair.chosen]
        records.append({"id": pair.id, "messages": pair.messages, "responses": answers,
                        "better": better, "category": pair.category or "all"})
    return records


def outcome_of(judged: dict, labelled: dict) -> Outcome:
    """The judge's output record for one labelled input record, as an ``Outcome``."""
    chosen_text = judged["chosen"][0]["content"]
    first, _second = labelled["responses"]
    p_first = judged["label"] if chosen_text == first else 1.0 - judged["label"]
    better = labelled["better"]
    judgements = judged.get("judgements", [])
    orders = [o for o in map(judged_orders, judgements) if o is not None]
    shown = [p for j in judgements
             for p in order_probs(j) if p is not None]
    return Outcome(labelled["category"], p_first if better == 0 else 1.0 - p_first, p_first,
                   better == 0, orders, shown)


# ---------------------------------------------------------------- metrics

def accuracy(outcomes: Sequence[Outcome]) -> float:
    return sum(1.0 if o.p_better > 0.5 else 0.5 if o.p_better == 0.5 else 0.0
               for o in outcomes) / len(outcomes)


def soft_accuracy(outcomes: Sequence[Outcome]) -> float:
    return sum(o.p_better for o in outcomes) / len(outcomes)


def consistency(outcomes: Sequence[Outcome]) -> float | None:
    """Share of judgements whose two orders pick the same answer (None: no judgements)."""
    agree = [orders_agree(p1, p2) for o in outcomes for p1, p2 in o.orders]
    return sum(agree) / len(agree) if agree else None


def first_position(outcomes: Sequence[Outcome]) -> float | None:
    """Mean probability of option (A) over every order shown (None: no judgements)."""
    shown = [p for o in outcomes for p in (o.shown or [p for pair in o.orders for p in pair])]
    return sum(shown) / len(shown) if shown else None


def ece(outcomes: Sequence[Outcome]) -> float:
    return expected_calibration_error([o.p_first for o in outcomes],
                                      [1.0 if o.first_is_better else 0.0 for o in outcomes])


def brier(outcomes: Sequence[Outcome]) -> float:
    return sum((o.p_first - (1.0 if o.first_is_better else 0.0)) ** 2 for o in outcomes) / len(outcomes)


METRICS: dict[str, Callable[[Sequence[Outcome]], float | None]] = {
    "accuracy": accuracy, "soft_accuracy": soft_accuracy, "consistency": consistency,
    "first_position": first_position, "ece": ece, "brier": brier,
}


def bootstrap_interval(outcomes: Sequence[Outcome], metric, *, samples: int, seed: int,
                       level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``metric`` over pairs resampled with replacement."""
    rng = random.Random(seed)
    values = []
    for _ in range(samples):
        value = metric([outcomes[rng.randrange(len(outcomes))] for _ in outcomes])
        if value is not None:
            values.append(value)
    if not values:
        return None
    return percentile_interval(values, level)


def verdict(group: dict) -> str:
    """ok / weak / at chance / below chance, from the accuracy interval (``calibration.accuracy_verdict``);
    weak at best when the two orders mostly disagree."""
    said = accuracy_verdict(group["accuracy_interval"])
    if said == "ok" and group["consistency"] is not None and group["consistency"] < WEAK_CONSISTENCY:
        return "weak"
    return said


def summarize(outcomes: Sequence[Outcome], *, samples: int = 1000, seed: int = 0) -> dict:
    """Every metric with its interval, overall (``all``) and per category, and a verdict each."""
    groups: dict[str, list[Outcome]] = {"all": list(outcomes)}
    for o in outcomes:
        if o.category != "all":
            groups.setdefault(o.category, []).append(o)
    summary = {}
    for name, members in groups.items():
        entry: dict = {"pairs": len(members)}
        for metric, fn in METRICS.items():
            entry[metric] = fn(members)
            entry[f"{metric}_interval"] = bootstrap_interval(members, fn, samples=samples, seed=seed)
        entry["verdict"] = verdict(entry)
        summary[name] = entry
    return summary


def reliability_points(outcomes: Iterable[Outcome], bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean probability, share correct, count) per non-empty bin of P(first candidate better)."""
    points = []
    listed = list(outcomes)
    for b in range(bins):
        members = [o for o in listed if b / bins <= o.p_first < (b + 1) / bins or
                   (b == bins - 1 and o.p_first == 1.0)]
        if members:
            points.append((sum(o.p_first for o in members) / len(members),
                           sum(o.first_is_better for o in members) / len(members), len(members)))
    return points


def check_judge(pairs: Sequence[LabelledPair], engines: Sequence[Engine], constitution: Constitution,
                settings: JudgeSettings, *, batch_size: int = 16, bootstrap: int = 1000,
                track: Callable[[Iterable, str, int], Iterable] = lambda items, _stage, _n: items,
                ) -> tuple[dict, list[Outcome], list[dict]]:
    """Judge ``pairs`` as ``cai judge`` would (order shown first drawn from ``settings.seed``):
    the summary (pairs, comparisons/s, per-group metrics with intervals and verdicts), the
    outcomes and the judged records."""
    records = judge_inputs(pairs, settings.seed)
    start = time.monotonic()
    judged = list(track(judge(records, engines, constitution, settings, batch_size=batch_size),
                        "judge-check", len(records)))
    elapsed = time.monotonic() - start
    outcomes = [outcome_of(j, r) for j, r in zip(judged, records)]
    summary = {"pairs": len(pairs), "comparisons_per_s": len(judged) / elapsed if elapsed > 0 else None,
               "groups": summarize(outcomes, samples=bootstrap, seed=settings.seed)}
    return summary, outcomes, judged
