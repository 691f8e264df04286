"""``eval``: did CAI work? Compare models on held-out prompts, as the paper's figures do.

Each model (a GGUF file, or a GGUF + LoRA adapter) answers the held-out red-team prompts
and the held-out helpfulness prompts. The judge then compares every pair of models' answers
to each prompt in both orders (soft labels, ``cai judge``): against the harmlessness
constitution on red-team prompts, against the helpfulness one on ordinary prompts. From
those comparisons come win rates and Elo ratings with bootstrap intervals per axis (Fig. 2
of the paper plots harmlessness Elo against helpfulness Elo). A preference model, when
given, scores every answer, and every revision round of SL-CAI data (Fig. 5). Evasiveness is
the share of refusals on the helpfulness prompts: CAI claims harmless *without* evasive.

This module computes; ``eval.report`` draws and writes. Engines are opened by the caller
(one at a time: only one model needs to be in memory).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import orjson

from ..constitutions.constitution import Constitution
from ..conversation import prompt_messages
from ..engines.base import Engine
from ..errors import InputError, UsageError
from .judge_check import LabelledPair, check_judge
from .stats import elo_intervals, elo_ratings, is_refusal, win_rate_intervals, win_rates
from ..sl.generate import generate
from ..sl.judge import JudgeSettings, judge
from ..records import error_of, read_records, resume_records, where
from ..sl.sampling import Sampling

PROMPT_SETS = ("harmless", "helpful")   # red-team prompts, ordinary requests
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# track(items, stage, total) -> the same items; the CLI shows progress through it.
Tracker = Callable[[Iterable, str, int], Iterable]


def _untracked(items: Iterable, stage: str, total: int) -> Iterable:
    return items


@dataclass(frozen=True)
class ModelSpec:
    """One model under evaluation: ``NAME=MODEL[+LORA]`` on the command line."""

    name: str
    model: str | None          # GGUF path (None: the default model) or a server URL
    lora: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        name, sep, rest = text.partition("=")
        if not sep:
            rest = text
        # MODEL.gguf+LORA.gguf (the last '.gguf+' splits); an empty MODEL is the default one
        split = re.match(r"^(.*\.gguf|)\+(.+)$", rest)
        model, lora = (split.group(1), split.group(2)) if split else (rest, "")
        if not sep:  # a bare path is named after its file (the adapter's, when there is one)
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(lora or model).stem)
        if not _NAME.match(name):
            raise UsageError(f"--model {text!r}: the name must be letters, digits, '_', '.' or '-' "
                             "(write NAME=MODEL.gguf[+LORA.gguf])")
        return cls(name, model or None, lora or None)

    def as_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "lora": self.lora}


@dataclass
class EvalSettings:
    """Options of one evaluation: the answers' seed and sampling, judge principles per comparison
    (``ensemble``), batch size, and the bootstrap's resamples and confidence level."""

    seed: int = 0
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=96))
    ensemble: int = 1
    batch_size: int = 16
    bootstrap: int = 1000
    level: float = 0.95

    def judge_settings(self) -> JudgeSettings:
        """How the judge reads every comparison (and the labelled pairs of the judge check)."""
        return JudgeSettings(ensemble=self.ensemble, seed=self.seed)


def load_eval_prompts(path: str, split: str | None, limit: int | None = None) -> list[dict]:
    """The prompts of ``split`` (records without a 'split' field all count), in file order."""
    kept, seen = [], set()
    for rec in read_records(path):
        if split is not None and rec.get("split", split) != split:
            continue
        messages = prompt_messages(rec)          # raises a RecordError naming file:line
        if not isinstance(rec.get("id"), str):
            raise InputError("eval prompts need a string 'id'", where=where(rec))
        if rec["id"] in seen:
            raise InputError(f"duplicate prompt id '{rec['id']}'", where=where(rec))
        seen.add(rec["id"])
        kept.append({"id": rec["id"], "prompt": messages, "category": rec.get("category")})
        if limit and len(kept) >= limit:
            break
    if not kept:
        which = f" in split '{split}'" if split else ""
        raise InputError(f"no prompts{which}", where=path)
    return kept


# ---------------------------------------------------------------- answers


def answer_key(spec: ModelSpec, settings: EvalSettings) -> dict:
    """What an answer depends on: reused from an earlier run only when all of it matches."""
    return {**spec.as_dict(), "seed": settings.seed, **settings.sampling.as_dict()}


def answer_prompts(spec: ModelSpec, engine: Engine, prompt_sets: dict[str, list[dict]],
                   settings: EvalSettings, track: Tracker = _untracked, *,
                   have: dict[str, dict] | None = None,
                   on_answer: Callable[[dict], None] = lambda _answer: None) -> list[dict]:
    """One answer record per prompt of every set: id, model, set, prompt_id, messages, response.

    ``have`` holds answers of an interrupted run by id (reused, not regenerated);
    ``on_answer`` gets each new answer as soon as it is made.
    """
    have = have or {}
    # An answer's id is the model's name before the prompt's "set:prompt_id".
    prompts = {f"{set_name}:{p['id']}": p["prompt"] for set_name, ps in prompt_sets.items() for p in ps}
    wanted = [f"{spec.name}:{pid}" for pid in prompts]
    records = [{"id": pid, "messages": messages} for pid, messages in prompts.items()
               if f"{spec.name}:{pid}" not in have]
    key = answer_key(spec, settings)
    made = {}
    for rec in track(generate(records, engine, sampling=settings.sampling, seed=settings.seed,
                              batch_size=settings.batch_size),
                     f"answers {spec.name}", len(records)):
        set_name, prompt_id = rec["id"].split(":", 1)
        answer = {"id": f"{spec.name}:{rec['id']}", "model": spec.name, "set": set_name,
                  "prompt_id": prompt_id, "messages": rec["messages"], "response": rec["response"],
                  "key": key}
        on_answer(answer)
        made[answer["id"]] = answer
    return [made.get(w) or have[w] for w in wanted]


def reusable_answers(previous: Iterable[dict], spec: ModelSpec, prompt_sets: dict[str, list[dict]],
                     settings: EvalSettings) -> list[dict] | None:
    """A model's answers from an earlier run, if they cover exactly these prompts and settings."""
    key = answer_key(spec, settings)
    mine = {(a["set"], a["prompt_id"]): a for a in previous
            if a.get("model") == spec.name and a.get("key") == key}
    wanted = [(s, p["id"]) for s, prompts in prompt_sets.items() for p in prompts]
    if not wanted or any(w not in mine for w in wanted):
        return None
    return [mine[w] for w in wanted]


# ---------------------------------------------------------------- comparisons


def compare(answers: Sequence[dict], set_name: str, models: Sequence[str], engine: Engine,
            constitution: Constitution, settings: EvalSettings,
            track: Tracker = _untracked) -> list[dict]:
    """Judge every pair of models' answers to every prompt of one set, both orders.

    Each comparison: set, prompt_id, model_a, model_b, p_a (P(a's answer is better)),
    the two answers and the judge's raw per-order probabilities.
    """
    by_key = {(a["model"], a["prompt_id"]): a for a in answers if a["set"] == set_name}
    prompt_ids = list(dict.fromkeys(a["prompt_id"] for a in answers if a["set"] == set_name))
    pairs = list(itertools.combinations(models, 2))
    records = []
    for pid in prompt_ids:
        for a, b in pairs:
            ans_a, ans_b = by_key[(a, pid)], by_key[(b, pid)]
            records.append({"id": f"{set_name}:{pid}:{a}~{b}", "messages": ans_a["messages"],
                            "responses": [ans_a["response"], ans_b["response"]],
                            "set": set_name, "prompt_id": pid, "model_a": a, "model_b": b})
    out = []
    for rec in track(judge(records, [engine], constitution, settings.judge_settings(),
                           batch_size=settings.batch_size),
                     f"judge {set_name}", len(records)):
        # label = P(chosen better); identical answers come back as 0.5 either way
        chosen_is_a = rec["chosen"][0]["content"] == rec["responses"][0]
        p_a = rec["label"] if chosen_is_a else 1.0 - rec["label"]
        out.append({"id": rec["source_id"], "set": set_name, "prompt_id": rec["prompt_id"],
                    "model_a": rec["model_a"], "model_b": rec["model_b"], "p_a": p_a,
                    "identical": rec["identical"], "response_a": rec["responses"][0],
                    "response_b": rec["responses"][1], "judgements": rec["judgements"],
                    "constitution": constitution.name})
    return out


def judge_reliability(pairs: Sequence[LabelledPair], engine: Engine, constitution: Constitution,
                      settings: EvalSettings, out: Path, *, note: Callable[[str], None] = lambda _m: None,
                      track: Tracker = _untracked) -> dict:
    """The judge check on labelled pairs, run with the judge and settings of the comparisons
    (reused from ``out/judge_check.json`` when judge, pairs and settings are the same)."""
    js = settings.judge_settings()
    key = {"engine": engine.info.as_dict(), "constitution": constitution.name, "judge": js.as_dict(),
           "pairs": [p.id for p in pairs], "bootstrap": settings.bootstrap}
    cached = out / "judge_check.json"
    if cached.is_file():
        try:
            earlier = json.loads(cached.read_text())
        except ValueError:
            earlier = None
        if isinstance(earlier, dict) and earlier.get("key") == key:
            note(f"reusing the judge check in {cached}")
            return earlier["result"]
    note(f"checking the judge on {len(pairs)} labelled pairs first")
    result, _outcomes, _judged = check_judge(pairs, [engine], constitution, js,
                                             batch_size=settings.batch_size,
                                             bootstrap=settings.bootstrap, track=track)
    result["constitution"] = constitution.name
    cached.write_text(json.dumps({"key": key, "result": result}, indent=1) + "\n")
    return result


# ---------------------------------------------------------------- preference-model scores


def pm_score_answers(answers: list[dict], reward_model, batch_size: int = 8,
                     track: Tracker = _untracked) -> None:
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


def check_models(models: Sequence[ModelSpec]) -> None:
    """UsageError unless there are at least two models, each with its own name."""
    if len(models) < 2:
        raise UsageError("eval compares two or more models: repeat --model NAME=MODEL.gguf[+LORA.gguf]")
    names = [m.name for m in models]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"two models are named '{dup}': give each --model its own NAME=")


# ---------------------------------------------------------------- the whole evaluation


def run_eval(models: Sequence[ModelSpec], prompt_sets: dict[str, list[dict]],
             constitutions: dict[str, Constitution], settings: EvalSettings, out: Path, *,
             open_engine: Callable[..., Engine], judge_model: str | None,
             load_pm: Callable[[], object] | None = None,
             sl_rounds: list[tuple[int, list[dict]]] | None = None,
             labelled_pairs: Sequence[LabelledPair] | None = None,
             note: Callable[[str], None] = lambda _msg: None, track: Tracker = _untracked) -> dict:
    """Answers, comparisons, PM scores and the summary, written to ``out`` as they are made.

    ``open_engine(model, lora)`` opens one engine; only one is open at a time. Each answer
    is appended to answers.jsonl as it is made and reused by a rerun with the same model
    and sampling (matched by its id), so an interrupted eval never answers a prompt twice.
    With ``labelled_pairs`` the judge is checked on them first, with the red-team
    constitution (``judge_reliability``).
    """
    out.mkdir(parents=True, exist_ok=True)
    answers_file = out / "answers.jsonl"
    previous = _readable_records(answers_file)
    answers: list[dict] = []
    note(f"{len(models)} models x {sum(len(p) for p in prompt_sets.values())} prompts "
         f"({', '.join(f'{len(p)} {s}' for s, p in prompt_sets.items())})")
    for k, spec in enumerate(models):
        key = answer_key(spec, settings)
        have = {a["id"]: {f: v for f, v in a.items() if f != "pm_score"} for a in previous
                if a.get("model") == spec.name and a.get("key") == key and isinstance(a.get("id"), str)}
        reused = reusable_answers(have.values(), spec, prompt_sets, settings)
        if reused is not None:
            note(f"{spec.name}: reusing its {len(reused)} answers in {answers_file}")
            answers += reused
        else:
            if have:
                note(f"{spec.name}: reusing {len(have)} answers of the interrupted run")
            with closing(open_engine(spec.model, spec.lora)) as engine, open(answers_file, "ab") as sink:
                def keep(answer: dict) -> None:
                    sink.write(orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE))
                    sink.flush()

                answers += answer_prompts(spec, engine, prompt_sets, settings, track,
                                          have=have, on_answer=keep)
        later = {m.name for m in models[k + 1:]}   # keep their reusable answers meanwhile
        write_jsonl(answers_file, answers + [a for a in previous if a.get("model") in later])
    comparisons: list[dict] = []
    reliability = None
    with closing(open_engine(judge_model)) as judge_engine:
        if labelled_pairs:
            reliability = judge_reliability(labelled_pairs, judge_engine, constitutions["harmless"],
                                            settings, out, note=note, track=track)
        for set_name, constitution in constitutions.items():
            comparisons += compare(answers, set_name, [m.name for m in models], judge_engine,
                                   constitution, settings, track)
    write_jsonl(out / "comparisons.jsonl", comparisons)
    pm_rounds = None
    if load_pm is not None:
        reward_model = load_pm()
        pm_score_answers(answers, reward_model, track=track)
        write_jsonl(answers_file, answers)
        if sl_rounds:
            note("scoring every revision round of the SL-CAI data")
            pm_rounds = pm_by_revision_round(sl_rounds, reward_model)
    summary = summarize(models, answers, comparisons, settings, pm_rounds)
    summary["judge"] = judge_model
    summary["judge_reliability"] = reliability
    summary["constitutions"] = {s: c.name for s, c in constitutions.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _readable_records(path: Path) -> list[dict]:
    """The records of an earlier run's file (a line cut by a kill is regenerated)."""
    return [r for r in resume_records(path) if error_of(r) is None]


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Replace ``path`` atomically, so an interrupted write never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
    os.replace(tmp, path)
