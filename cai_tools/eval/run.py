"""``eval``: did CAI work? Compare models on held-out prompts, as the paper's figures do.

Each model (a GGUF file, or a GGUF + LoRA adapter) answers the held-out red-team prompts
and the held-out helpfulness prompts. The judge then compares every pair of models' answers
to each prompt in both orders (soft labels, ``cai judge``): against the harmlessness
constitution on red-team prompts, against the helpfulness one on ordinary prompts. From
those comparisons come win rates and Elo ratings with bootstrap intervals per axis (Fig. 2
of the paper plots harmlessness Elo against helpfulness Elo). A preference model, when
given, scores every answer, and every revision round of SL-CAI data (Fig. 5). Evasiveness is
the share of refusals on the helpfulness prompts: CAI claims harmless *without* evasive.

This module runs the models and the judge (``settings``: what is compared and how; ``summary``:
the numbers); ``eval.report`` draws and writes. Engines are opened by the caller
(one at a time: only one model needs to be in memory).
"""

from __future__ import annotations

import itertools
import json
import os
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterable, Sequence

import orjson

from ..constitutions.constitution import Constitution
from ..engines.base import Engine
from ..records import error_of, resume_records
from ..sl.generate import generate
from ..sl.judge import judge
from .judge_check import LabelledPair, check_judge
from .settings import EvalSettings, ModelSpec, Tracker, untracked
from .summary import pm_by_revision_round, pm_score_answers, summarize


# ---------------------------------------------------------------- answers


def answer_key(spec: ModelSpec, settings: EvalSettings) -> dict:
    """What an answer depends on: reused from an earlier run only when all of it matches."""
    return {**spec.as_dict(), "seed": settings.seed, **settings.sampling.as_dict()}


def answer_prompts(spec: ModelSpec, engine: Engine, prompt_sets: dict[str, list[dict]],
                   settings: EvalSettings, track: Tracker = untracked, *,
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
            track: Tracker = untracked) -> list[dict]:
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
                      track: Tracker = untracked) -> dict:
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


# ---------------------------------------------------------------- the whole evaluation


def run_eval(models: Sequence[ModelSpec], prompt_sets: dict[str, list[dict]],
             constitutions: dict[str, Constitution], settings: EvalSettings, out: Path, *,
             open_engine: Callable[..., Engine], judge_model: str | None,
             load_pm: Callable[[], object] | None = None,
             sl_rounds: list[tuple[int, list[dict]]] | None = None,
             labelled_pairs: Sequence[LabelledPair] | None = None,
             note: Callable[[str], None] = lambda _msg: None, track: Tracker = untracked) -> dict:
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
