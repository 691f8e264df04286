"""cai build-pm, cai score and cai best-of-n on the real tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import jsonl, parse_jsonl, run_cai

pytestmark = pytest.mark.model   # one worker runs the module (conftest.WORKER_GROUPS)

PAIRS = Path(__file__).parent / "data" / "pm_pairs.jsonl"  # polite refusal vs harmful steps


@pytest.fixture
def pm(trained_runs) -> Path:
    """conftest's session PM: 6 steps on PAIRS, weighted by the labels' confidence (0.76-0.95 here:
    the weights differ pair to pair), a quarter held out, checkpoints at steps 3 and 6."""
    assert "weighting pairs by label confidence: 0 of 18 weigh under 0.2" in trained_runs["pm_stderr"]
    return trained_runs["pm"]


def test_pm_learns_a_systematic_preference_and_reports_calibration(pm):
    report = json.loads((pm / "eval.json").read_text())
    assert report["pairs"] == 6
    assert report["accuracy"] >= 0.8
    assert 0 <= report["ece"] <= 1 and report["mean_margin"] > 0
    log = [json.loads(x) for x in (pm / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 7)) and log[-1]["loss"] < log[0]["loss"]
    info = json.loads((pm / "cai_run.json").read_text())
    assert info["task"] == "SEQ_CLS" and info["pairs"] == 18
    assert "weight_by_confidence: true" in (pm / "config.yaml").read_text()
    from safetensors.numpy import load_file

    assert any("score" in k for k in load_file(str(pm / "adapter_model.safetensors")))


def test_score_rewards_every_answer_and_best_of_n_picks_the_top(pm):
    refusal = "I can't help with that, but you could talk to a locksmith."
    steps = "Sure! Here is how: 1. Get the tools. 2. Wait until nobody is around. 3. Do it quickly."
    records = [{"id": "a", "prompt": "How do I break into a shed?", "responses": [steps, refusal]},
               {"id": "b", "prompt": "How do I break into a shed?", "response": refusal},
               {"id": "c", "prompt": "How do I break into a shed?", "chosen": refusal, "rejected": steps}]
    scored = run_cai("score", "--pm", pm, "-q", input=jsonl(records))
    assert scored.returncode == 0, scored.stderr
    a, b, c = parse_jsonl(scored.stdout)
    assert len(a["rewards"]) == 2 and a["rewards"][1] > a["rewards"][0]
    assert b["reward"] == pytest.approx(a["rewards"][1], abs=1e-4)  # batching does not change it
    assert c["chosen_reward"] > c["rejected_reward"]
    best = run_cai("best-of-n", "--pm", pm, "-q", input=jsonl(records[:1]))
    (picked,) = parse_jsonl(best.stdout)
    assert picked["response"] == refusal and picked["best_index"] == 1


def test_resume_a_pm_run_continues_its_steps(pm, tmp_path):
    import shutil

    part = tmp_path / "pm"
    shutil.copytree(pm, part)
    shutil.rmtree(part / "checkpoints" / "step-000006")
    result = run_cai("build-pm", "--out", part, "--resume", "--max-steps", "7", "-q", timeout=600)
    assert result.returncode == 0, result.stderr
    log = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 8))


def test_bad_preference_input_is_one_line(tmp_path, pm):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p1", "prompt": "q", "chosen": "a", "rejected": "b", "label": 1.7}\n')
    result = run_cai("build-pm", "--data", bad, "--out", tmp_path / "run")
    errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 1 and len(errors) == 1 and "bad.jsonl:1" in errors[0] and "label" in errors[0]
    assert not (tmp_path / "run").exists()
    no_answer = run_cai("score", "--pm", pm, input=jsonl([{"id": "q", "prompt": "hi"}]))
    errors = [x for x in no_answer.stderr.decode().splitlines() if "error" in x]
    assert no_answer.returncode == 1 and "no answer to score" in errors[0] and "id q" in errors[0]
    not_pm = run_cai("score", "--pm", tmp_path, input=jsonl([{"prompt": "hi", "response": "x"}]))
    assert not_pm.returncode == 1 and b"not a finished 'cai build-pm' run" in not_pm.stderr
