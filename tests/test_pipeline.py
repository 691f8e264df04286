"""`make demo` end to end at minimum sizes on the real tiny model: every artefact exists and
parses, and a second `make demo` redoes nothing. A few minutes (model loads dominate)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cai_tools.models.gguf_metadata import GGUF_MAGIC

ROOT = Path(__file__).resolve().parent.parent
# 2 prompts x 1 round of the tiny model may leave no usable SL-CAI round, so the demo here trains
# on every round (the filter itself is tested in test_quality.py and test_real_sft.py).
SIZES = ["N=2", "ROUNDS=1", "PAIRS_N=4", "SFT_STEPS=2", "PM_STEPS=2", "RL_STEPS=1", "EVAL_N=2",
         "JUDGE_CHECK_N=4", "SFT_FILTER=--keep-flagged", "CHECK_STEPS=1", "MAX_TOKENS=24"]

pytestmark = [pytest.mark.model, pytest.mark.pipeline]


def make_demo(demo: Path) -> subprocess.CompletedProcess:
    # -o: take the install as done (make test has just done it), never reinstall here
    return subprocess.run(["make", "-C", str(ROOT), "-o", ".venv/.installed", "demo",
                           f"DEMO={demo}", *SIZES], capture_output=True, text=True, timeout=1200)


def jsonl(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    assert rows, f"{path} is empty"
    return rows


def test_make_demo_runs_the_whole_pipeline(tmp_path):
    demo = tmp_path / "demo"
    done = make_demo(demo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert len(jsonl(demo / "prompts.jsonl")) == 4
    sl = jsonl(demo / "sl.jsonl")
    assert len(sl) == 2 and all(len(r["history"]) == 1 and r["history"][0]["revision"] for r in sl)
    assert all(r["messages"][-1]["role"] == "assistant" for r in jsonl(demo / "sl_hf.jsonl"))
    prefs = jsonl(demo / "prefs.jsonl")   # 4 prompts x 3 answers: 3 pairs each
    assert len(prefs) == 12 and all(0.5 <= p["label"] <= 1.0 for p in prefs)
    for run in ("sft", "pm", "rl"):
        assert json.loads((demo / run / "cai_run.json").read_text())["base"]
        assert (demo / run / "adapter_model.safetensors").stat().st_size > 0
    assert "accuracy" in json.loads((demo / "pm" / "eval.json").read_text())
    assert len(jsonl(demo / "rl" / "log.jsonl")) == 1
    for gguf in ("sl-lora.gguf", "rl-lora.gguf"):
        assert (demo / gguf).read_bytes()[:4] == GGUF_MAGIC

    ev = demo / "eval"
    for page in ("view-sl.html", "view-judged.html", "view-answers.html"):   # cai view's pages, named
        assert "<article" in (ev / page).read_text() and page in done.stderr
    answers = jsonl(ev / "answers.jsonl")
    assert len(answers) == 3 * 4 and all(isinstance(a["pm_score"], float) for a in answers)
    assert {a["model"] for a in answers} == {"base", "sl-cai", "rl-cai"}
    comps = jsonl(ev / "comparisons.jsonl")
    assert len(comps) == 3 * 4 and all(0.0 <= c["p_a"] <= 1.0 for c in comps)
    summary = json.loads((ev / "summary.json").read_text())
    for name in ("base", "sl-cai", "rl-cai"):
        m = summary["per_model"][name]
        assert m["harmless_elo_ci"][0] <= m["harmless_elo_ci"][1]
        assert 0.0 <= m["helpful_refusal_rate"] <= 1.0
    assert [r["round"] for r in summary["pm_by_round"]] == [0, 1]
    report = (ev / "report.md").read_text()
    for png in ("harmless_vs_helpful.png", "pm_by_revision_round.png"):
        assert f"]({png})" in report and (ev / png).read_bytes()[:4] == b"\x89PNG"
    assert f"report: {ev / 'report.md'}" in done.stderr
    # The four instruments, each with a verdict, and the eval's verdict from the judge check.
    assert summary["judge_reliability"]["pairs"] == 4 and "## Judge reliability" in report
    instruments = done.stderr[done.stderr.index("== instruments"):]
    for line in ("judge check", "SL-CAI data", "PM"):
        assert re.search(rf"^{line} +(ok|weak|at chance|poor) ", instruments, re.M), instruments
    assert "revision rounds usable" in instruments and "sft trained on all" in instruments
    check = json.loads((demo / "training_check.json").read_text())
    assert check["algos"] == "ppo (rule)" and check["ppo (rule)"]["prompts"] == 2   # EVAL_N held-out prompts
    assert re.search(r"^training check +(learns|no effect|wrong direction) +ppo \(rule\) toward rule:", instruments,
                     re.M), instruments

    stages = (demo / "timings.tsv").read_text().splitlines()
    assert [s.split("\t")[0] for s in stages] == ["sl-data", "sft", "pairs+judge", "build-pm", "rl", "eval",
                                                  "training-check"]
    again = make_demo(demo)   # everything is up to date: only the summary runs
    assert again.returncode == 0 and "== " not in again.stdout.replace("== make demo", "")
    assert (demo / "timings.tsv").read_text().splitlines() == stages
