"""The numbers ``eval`` reports: preference-model scores of the answers and of every SL-CAI
revision round (Fig. 5), and ``summarize``, everything the report shows as plain data."""

from __future__ import annotations

import math
from typing import Sequence

from ..conversation import prompt_messages
from ..errors import InputError
from ..records import read_records, where
from .settings import PROMPT_SETS, EvalSettings, ModelSpec, Tracker, untracked
from .stats import elo_intervals, elo_ratings, is_refusal, win_rate_intervals, win_rates


# ---------------------------------------------------------------- preference-model scores


def pm_score_answers(answers: list[dict], reward_model, batch_size: int = 8,
                     track: Tracker = untracked) -> None:
    """Add ``pm_score`` to every answer record (in place)."""
    convs = [a["messages"] + [{"role": "assistant", "content": a["response"]}] for a in answers]
    for start in track(range(0, len(convs), batch_size), "pm scores", math.ceil(len(convs) / batch_size)):
        chunk = convs[start:start + batch_size]
        for a, r in zip(answers[start:start + batch_size], reward_model.rewards(chunk, batch_size)):
            a["pm_score"] = r


def revision_round_conversations(sl_path: str) -> list[tuple[int, list[dict]]]:
    """(round, conversation) for every answer of SL-CAI data: round 0 is the initial answer,
    round k the k-th revision. Read (and checked) before the long stages start."""
    out: list[tuple[int, list[dict]]] = []
    for rec in read_records(sl_path):
        prompt = prompt_messages(rec)
        history = rec.get("history")
        initial = rec.get("init_response")
        if not isinstance(history, list) or not isinstance(initial, str):
            raise InputError("SL-CAI records need 'init_response' and a 'history' of revisions "
                             "(the output of 'cai revise')", where=where(rec))
        texts = [initial] + [h.get("revision") for h in history if isinstance(h, dict)]
        out += [(k, prompt + [{"role": "assistant", "content": text}])
                for k, text in enumerate(texts) if isinstance(text, str)]
    if not out:
        raise InputError("no SL-CAI records", where=sl_path)
    return out


def pm_by_revision_round(rounds: list[tuple[int, list[dict]]], reward_model,
                         batch_size: int = 8) -> list[dict]:
    """Mean PM score of SL-CAI data per revision round (0 = the initial answer): Fig. 5."""
    scores = reward_model.rewards([conv for _, conv in rounds], batch_size)
    out = []
    for k in sorted({r for r, _ in rounds}):
        values = [s for s, (r, _) in zip(scores, rounds) if r == k]
        out.append({"round": k, "n": len(values), **_mean_sem(values)})
    return out


# ---------------------------------------------------------------- the summary


def summarize(models: Sequence[ModelSpec], answers: Sequence[dict], comparisons: Sequence[dict],
              settings: EvalSettings, pm_rounds: list[dict] | None = None) -> dict:
    """Everything the report shows, as plain data (written as summary.json)."""
    names = [m.name for m in models]
    per_model = {n: {"spec": m.as_dict()} for n, m in zip(names, models)}
    axes = {}
    for set_name in PROMPT_SETS:
        mine = [c for c in comparisons if c["set"] == set_name]
        comps = [(c["model_a"], c["model_b"], c["p_a"]) for c in mine]
        if not comps:
            continue
        elo = elo_ratings(comps)
        prompt_ids = [c["prompt_id"] for c in mine]
        ci = elo_intervals(comps, prompt_ids, samples=settings.bootstrap, level=settings.level, seed=settings.seed)
        rates = win_rates(comps)
        rate_ci = win_rate_intervals(comps, prompt_ids, samples=settings.bootstrap,
                                     level=settings.level, seed=settings.seed)
        axes[set_name] = {"comparisons": len(comps),
                          "win_rate": {a: {b: rates.get((a, b)) for b in names if b != a} for a in names},
                          "win_rate_ci": {a: {b: (list(rate_ci[(a, b)]) if (a, b) in rate_ci else None)
                                              for b in names if b != a} for a in names}}
        for n in names:
            per_model[n][f"{set_name}_elo"] = elo.get(n)
            per_model[n][f"{set_name}_elo_ci"] = list(ci[n]) if n in ci else None
    for n in names:
        for set_name in PROMPT_SETS:
            mine = [a for a in answers if a["model"] == n and a["set"] == set_name]
            if not mine:
                continue
            per_model[n][f"{set_name}_refusal_rate"] = sum(is_refusal(a["response"]) for a in mine) / len(mine)
            scores = [a["pm_score"] for a in mine if "pm_score" in a]
            if scores:
                stats = _mean_sem(scores)
                per_model[n][f"{set_name}_pm"] = stats["mean"]
                per_model[n][f"{set_name}_pm_sem"] = stats["sem"]
            per_model[n][f"{set_name}_mean_words"] = sum(len(a["response"].split()) for a in mine) / len(mine)
    prompts = {s: len({a["prompt_id"] for a in answers if a["set"] == s}) for s in PROMPT_SETS}
    return {"models": names, "per_model": per_model, "axes": axes, "prompts": prompts,
            "pm_by_round": pm_rounds, "confidence_level": settings.level,
            "bootstrap_samples": settings.bootstrap, "seed": settings.seed,
            "sampling": settings.sampling.as_dict(), "judge_ensemble": settings.ensemble}


def _mean_sem(values: Sequence[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "sem": math.sqrt(var / n)}
