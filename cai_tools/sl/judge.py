"""``judge``: pairwise constitutional judging with soft labels (RLAIF, the paper's phase 2).

For each pair of candidate answers the model reads the conversation, a multiple-choice
principle sampled from the constitution, and the two answers as options (A) and (B); the
normalised probabilities of " (A)" and " (B)" after the cue "The answer is:" are the soft
label — read from one forward pass, no text generated. Beyond the paper, each pair is
scored in both orders and the two averaged, which cancels the model's position bias (the
raw probabilities of both orders are kept so users can see it); ``ensemble`` averages over
several sampled principles and several engines average over judge models.

Position-bias calibration (``calibrate``) divides the judge's order prior out of each
order's probability, in logit space, before they are combined:

- ``content-free`` (contextual calibration, Zhao et al. 2021): the prior is P(A) on a
  comparison with no content ("N/A" for the conversation and both answers), read once per
  principle and model; it works with one order too, at half the cost of two;
- ``swap`` (as in PriDe, from the pair's own two orders): with P(A) = sigmoid(s + b) in one
  order and sigmoid(-s + b) in the other, the label is sigmoid(s) = sigmoid((l1 - l2) / 2).
  It picks the same answer as the plain average but does not squash the label towards 0.5.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from ..constitutions.constitution import Constitution, JudgePrinciple
from ..conversation import prompt_messages
from ..engines.base import Engine, Generation, ItemError
from ..errors import ConstitutionError, RecordError
from ..records import add_provenance, content_id, copy_record, record_seed, where
from ..record_batches import each_record, OnError, Pending, process_in_batches
from .judge_question import CUE, OPTIONS, content_free_chat, judge_chat, logit, prob_first, sigmoid
from .sampling import Sampling

COT_CUE = "Let's think step by step:"
CALIBRATIONS = ("none", "content-free", "swap")


@dataclass
class JudgeSettings:
    """How ``judge`` labels pairs: a pinned ``principle_id`` or ``ensemble`` sampled principles, which
    pairs ("all" or "adjacent"), optional chain of thought, ``clamp`` on each order's probability,
    ``hard`` labels of 1.0, the seed, ``min_confidence`` (mark pairs whose label is within it of
    0.5, or whose two orders pick different answers, ``low_confidence``), how many ``orders`` to
    show, position-bias ``calibrate`` and whether to show the judge ``examples``."""

    principle_id: str | None = None
    ensemble: int = 1
    pairs: str = "all"            # or "adjacent"
    cot: bool = False
    clamp: tuple[float, float] | None = None
    hard: bool = False
    seed: int = 0
    cot_sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=128, temperature=0.0))
    min_confidence: float | None = None
    orders: int = 2               # 1: each pair shown in one order, drawn from the seed
    calibrate: str = "none"       # one of CALIBRATIONS
    examples: bool = True         # the constitution's worked judge examples before each question

    def __post_init__(self):
        # In the flags' words: the CLI passes these messages on as usage errors.
        if self.orders not in (1, 2):
            raise ValueError(f"--orders must be 1 or 2, got {self.orders}")
        if self.calibrate not in CALIBRATIONS:
            raise ValueError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, got {self.calibrate!r}")
        if self.calibrate == "swap" and self.orders != 2:
            raise ValueError("--calibrate swap needs both orders (--orders 2)")
        if self.calibrate == "content-free" and self.cot:
            raise ValueError("--calibrate content-free does not combine with --cot")

    def as_dict(self) -> dict:
        settings = {"principle": self.principle_id, "ensemble": self.ensemble, "pairs": self.pairs,
                    "cot": self.cot, "clamp": list(self.clamp) if self.clamp else None,
                    "hard": self.hard, "seed": self.seed}
        if self.min_confidence is not None:
            settings["min_confidence"] = self.min_confidence
        if self.orders != 2:
            settings["orders"] = self.orders
        if self.calibrate != "none":
            settings["calibrate"] = self.calibrate
        if not self.examples:
            settings["examples"] = False
        return settings


def candidates_of(record: dict) -> list[str]:
    """The candidate answers in ``responses``; RecordError unless it is a list of at least two
    strings."""
    cands = record.get("responses")
    if cands is None:
        raise RecordError("needs at least two candidate answers in 'responses' "
                          "(make them with 'cai generate -n 2')", where=where(record))
    if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
        raise RecordError("field 'responses' must be a list of strings", where=where(record))
    if len(cands) < 2:
        raise RecordError(f"needs at least two candidate answers, 'responses' has {len(cands)}",
                          where=where(record))
    return cands


def pair_indices(n: int, mode: str) -> list[tuple[int, int]]:
    """The candidate index pairs (i, j), i < j, to compare: every pair, or with ``mode="adjacent"``
    only neighbours."""
    if mode == "adjacent":
        return [(i, i + 1) for i in range(n - 1)]
    return list(itertools.combinations(range(n), 2))


@dataclass
class _Comparison:
    out: dict                      # the output record being built
    messages: list[dict]
    texts: tuple[str, str]         # candidate i, candidate j
    principles: list[JudgePrinciple]
    items: list[tuple[int, int]] = field(default_factory=list)  # (principle index, order)


def judge(records: Iterable[dict], engines: Sequence[Engine], constitution: Constitution,
          settings: JudgeSettings = JudgeSettings(), *, batch_size: int = 16,
          on_error: OnError = OnError.fail) -> Iterator[dict]:
    """One output record per compared pair, in input order; see the module docstring."""
    if not constitution.judge:
        raise ConstitutionError("has no judge principles: add a 'judge' list to judge with it",
                                where=constitution.path)
    if settings.principle_id:
        constitution.judge_principle(settings.principle_id)
    provenance = {"engines": [e.info.as_dict() for e in engines], "constitution": constitution.name,
                  **settings.as_dict()}

    def prepare(rec: dict) -> Pending:
        messages = prompt_messages(rec)
        cands = candidates_of(rec)
        rid = rec.get("id") or content_id(rec)
        comparisons = [_comparison(rec, rid, messages, cands, i, j, constitution, settings)
                       for i, j in pair_indices(len(cands), settings.pairs)]
        # Identical candidates are labelled 0.5 without asking the judge.
        return Pending(rec, [c for c in comparisons if c.texts[0].strip() != c.texts[1].strip()],
                       {"comparisons": comparisons})

    def finish(p: Pending, _scored: list) -> list[dict]:
        for comp in p.state["comparisons"]:
            add_provenance(comp.out, "judge", provenance)
        return [c.out for c in p.state["comparisons"]]

    priors: dict[tuple[int, str], float] = {}   # (engine, principle id) -> content-free P(A)

    def handle(batch: list[dict]) -> list:
        return each_record(batch, prepare,
                           lambda comps: _score(comps, engines, constitution, settings, priors), finish)

    return process_in_batches(records, batch_size, "judge", on_error, handle)


def comparison_ids(record: dict, settings: JudgeSettings) -> list[str]:
    """The ids of the records judge writes for ``record``, one per compared pair (--resume
    matches on them; a record judge cannot read gives none)."""
    try:
        cands = candidates_of(record)
        rid = record.get("id") or content_id(record)
    except (RecordError, TypeError):
        return []
    return [_comparison_id(rid, i, j) for i, j in pair_indices(len(cands), settings.pairs)]


def _comparison_id(rid: str, i: int, j: int) -> str:
    return f"{rid}:{i}-{j}"


def _comparison(rec, rid, messages, cands, i, j, constitution, settings) -> _Comparison:
    out = copy_record(rec)
    out.update({"id": _comparison_id(rid, i, j), "source_id": rid, "pair": [i, j], "prompt": messages})
    # Seeded by the unordered pair, so swapping the candidates draws the same principles.
    pair_key = sorted([cands[i], cands[j]])
    rng = random.Random(record_seed(settings.seed, rid, "judge", pair_key))
    if settings.principle_id:
        principles = [constitution.judge_principle(settings.principle_id)]
    else:
        principles = constitution.sample_judge_principles(rng, settings.ensemble)
    comp = _Comparison(out, messages, (cands[i], cands[j]), principles)
    if cands[i].strip() == cands[j].strip():
        _finish(comp, 0.5, [], settings, identical=True)
    return comp


def _score(comparisons: list[_Comparison], engines: Sequence[Engine], constitution: Constitution,
           settings: JudgeSettings, priors: dict) -> list[RecordError | None]:
    """Fill in every comparison's label; per comparison, None or the error that stopped it."""
    chats, owners = [], []
    for c, comp in enumerate(comparisons):
        a, b = comp.texts
        # Submitted in a canonical order (the sorted pair first), so swapping the candidates
        # in the input scores exactly the same prompts in the same batch positions and the
        # label comes out as the exact complement. ``order`` 0 = candidate i shown as (A).
        shown = sorted([(a, b), (b, a)])
        if settings.orders == 1:
            # One order, drawn from the seed and the unordered pair (so swap-invariant too).
            shown = [shown[record_seed(settings.seed, comp.out["source_id"], "judge-order", shown[0]) % 2]]
        for k, principle in enumerate(comp.principles):
            for x, y in shown:
                chats.append(judge_chat(constitution, comp.messages, principle, x, y, settings.examples))
                owners.append((c, k, 0 if (x, y) == (a, b) else 1))
    failed: list[RecordError | None] = [None] * len(comparisons)
    raw: list[list] = [[] for _ in comparisons]
    for e, engine in enumerate(engines):
        cues = [CUE] * len(chats)
        reasoning = [None] * len(chats)
        if settings.cot:
            reasoning, cues = _reason(engine, chats, [(comparisons[c], k, order) for c, k, order in owners],
                                      settings)
        scored = _choice_logprobs(engine, chats, cues)
        if settings.calibrate == "content-free":
            error = _read_priors(engine, e, constitution, settings, comparisons, priors)
            if error is not None:
                return [error] * len(comparisons)
        for (c, k, order), result, why in zip(owners, scored, reasoning):
            if isinstance(result, ItemError):
                failed[c] = RecordError(result.message)
                continue
            prior = priors.get((e, comparisons[c].principles[k].id))
            raw[c].append(((e, engine.info.model), k, order, prob_first(result), why, prior))
    for c, comp in enumerate(comparisons):
        if failed[c] is None:
            _combine(comp, raw[c], settings)
    return failed


def _read_priors(engine: Engine, e: int, constitution: Constitution, settings: JudgeSettings,
                 comparisons: list[_Comparison], priors: dict) -> RecordError | None:
    """The content-free P(A) of every principle in ``comparisons`` not yet in ``priors``."""
    missing = list(dict.fromkeys(p for comp in comparisons for p in comp.principles
                                 if (e, p.id) not in priors))
    if not missing:
        return None
    results = engine.choice_logprobs([content_free_chat(constitution, p, settings.examples)
                                      for p in missing],
                                     [list(OPTIONS)] * len(missing), cue=CUE)
    for principle, result in zip(missing, results):
        if isinstance(result, ItemError):
            return RecordError(f"content-free calibration failed: {result.message}")
        priors[(e, principle.id)] = prob_first(result)
    return None


def _choice_logprobs(engine: Engine, chats, cues) -> list:
    # Engines take one cue per call: group items by cue (one group without CoT).
    out: list = [None] * len(chats)
    for cue in dict.fromkeys(cues):
        idx = [i for i, c in enumerate(cues) if c == cue]
        for i, r in zip(idx, engine.choice_logprobs([chats[i] for i in idx],
                                                    [list(OPTIONS)] * len(idx), cue=cue)):
            out[i] = r
    return out


def _reason(engine: Engine, chats, owners, settings: JudgeSettings):
    """Chain of thought: generate reasoning after the cue, then read the options after it."""
    params = [settings.cot_sampling.params(record_seed(settings.seed, comp.out["id"], "cot", k, order))
              for comp, k, order in owners]
    # Asked for in the user turn, so every backend can produce it.
    asked = [c[:-1] + [{"role": "user", "content": c[-1]["content"] +
                        "\n\nThink step by step about which option is better before answering."}]
             for c in chats]
    gens = engine.generate(asked, params)
    reasoning = [g.text.strip() if isinstance(g, Generation) else "" for g in gens]
    cues = [f"{COT_CUE} {r}\nSo the answer is:" for r in reasoning]
    return reasoning, cues


ORDER_KEYS = ("p_first_order", "p_second_order")


def _combine(comp: _Comparison, raw: list, settings: JudgeSettings) -> None:
    """Calibrate, then average the orders, principles and models into P(candidate i is better)."""
    lo, hi = settings.clamp if settings.clamp else (0.0, 1.0)
    by_key: dict[tuple, dict] = {}
    for (e, model), k, order, p, why, prior in raw:
        entry = by_key.setdefault((e, k), {"model": model, "principle": comp.principles[k].id})
        entry[ORDER_KEYS[order]] = p
        if prior is not None:
            entry["p_content_free"] = prior
            entry.setdefault("calibrated", [None, None])[order] = sigmoid(logit(p) - logit(prior))
        if why is not None:
            entry.setdefault("reasoning", [None, None])[order] = why
    judgements = list(by_key.values())
    votes = []
    for j in judgements:
        if settings.calibrate == "swap":
            # P(A) = sigmoid(s + b) and sigmoid(-s + b): the pair's own order prior b cancels.
            votes.append(min(max(sigmoid((logit(j["p_first_order"]) - logit(j["p_second_order"])) / 2),
                                 lo), hi))
            continue
        # P(candidate i is better) from each order shown: the second shows j as (A), so 1 - p.
        favours_i = [min(max(p, lo), hi) if order == 0 else 1.0 - min(max(p, lo), hi)
                     for order, p in enumerate(order_probs(j)) if p is not None]
        votes.append(sum(favours_i) / len(favours_i))
    _finish(comp, sum(votes) / len(votes), judgements, settings)


def _finish(comp: _Comparison, p_i: float, judgements: list, settings: JudgeSettings,
            identical: bool = False) -> None:
    first, second = comp.texts
    chosen, rejected, label = (first, second, p_i) if p_i >= 0.5 else (second, first, 1.0 - p_i)
    if settings.hard and not identical:
        label = 1.0
    comp.out.update({
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "label": label,
        "identical": identical,
        "judgements": judgements,
    })
    if settings.min_confidence is not None:
        comp.out["low_confidence"] = identical or is_low_confidence(p_i, judgements, settings.min_confidence)


def orders_agree(p_first_order: float, p_second_order: float) -> bool:
    """Whether a judgement's two orders pick the same answer (each picks whichever it shows as (A)
    when its P(A) > 0.5, so they agree when exactly one of the two is above 0.5)."""
    return (p_first_order > 0.5) != (p_second_order > 0.5)


def order_probs(judgement: dict) -> list[float | None]:
    """A judgement's P(A) with candidate i first and with it second, calibrated when it was;
    None for an order not shown."""
    return judgement.get("calibrated") or [judgement.get(key) for key in ORDER_KEYS]


def judged_orders(judgement: dict) -> tuple[float, float] | None:
    """A judgement's P(A) in its two orders, calibrated when it was (None: one order only)."""
    p1, p2 = order_probs(judgement)
    return None if p1 is None or p2 is None else (p1, p2)


def is_low_confidence(p_i: float, judgements: list[dict], min_confidence: float) -> bool:
    """A label within ``min_confidence`` of 0.5, or any judgement whose (calibrated) orders
    disagree."""
    both = [judged_orders(j) for j in judgements]
    return abs(p_i - 0.5) < min_confidence or not all(orders_agree(*o) for o in both if o is not None)
