"""The judge check: metrics on known inputs, bad labelled data, judges of known quality."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cai_tools.constitutions.constitution import load_constitution
from cai_tools.engines.fake_engine import FakeEngine
from cai_tools.errors import InputError
from cai_tools.calibration import expected_calibration_error
from cai_tools.eval.judge_check import (Outcome, accuracy, bootstrap_interval, brier, consistency, ece,
                                        first_position, judge_inputs, load_labelled, outcome_of,
                                        soft_accuracy, summarize)
from cai_tools.sl.judge import JudgeSettings, judge

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["boiling water", "a leaking tap", "learning French", "a late train", "saving money",
          "a sore throat", "writing a CV", "planting tomatoes", "a flat tyre", "sorting a list"]


def labelled(n: int = 10, categories=("helpful", "harmless")) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"What should I do about {TOPICS[i % len(TOPICS)]}? ({i})",
             "chosen": f"GOOD: a careful answer about {TOPICS[i % len(TOPICS)]}, number {i}.",
             "rejected": f"a careless reply {i}", "category": categories[i % len(categories)]}
            for i in range(n)]


def write(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def outcome(p_better, first_is_better=True, orders=(), category="all"):
    p_first = p_better if first_is_better else 1.0 - p_better
    return Outcome(category, p_better, p_first, first_is_better, list(orders))


# ---------------------------------------------------------------- metrics on known inputs

def test_metrics_on_fixed_outcomes():
    outs = [outcome(0.9, True, [(0.9, 0.1)]), outcome(0.5, False, [(0.8, 0.8)]),
            outcome(0.2, False, [(0.7, 0.6)]), outcome(0.7, True, [(0.6, 0.2)])]
    assert accuracy(outs) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert soft_accuracy(outs) == pytest.approx((0.9 + 0.5 + 0.2 + 0.7) / 4)
    # (0.9, 0.1) and (0.6, 0.2) agree; (0.8, 0.8) and (0.7, 0.6) pick by position
    assert consistency(outs) == pytest.approx(0.5)
    assert first_position(outs) == pytest.approx(sum([0.9, 0.1, 0.8, 0.8, 0.7, 0.6, 0.6, 0.2]) / 8)
    p_first = [0.9, 0.5, 0.8, 0.7]
    truth = [1, 0, 0, 1]
    assert brier(outs) == pytest.approx(sum((p - t) ** 2 for p, t in zip(p_first, truth)) / 4)
    # bins: 0.5 alone (gap 0.5), 0.7 alone (gap 0.3), 0.8 alone (0.8), 0.9 alone (0.1)
    assert ece(outs) == pytest.approx((0.5 + 0.3 + 0.8 + 0.1) / 4)
    assert expected_calibration_error([0.25, 0.25, 0.75, 0.75], [0, 1, 1, 1]) == pytest.approx(
        0.5 * 0.25 + 0.5 * 0.25)


def test_bootstrap_interval_brackets_the_value_and_narrows_with_more_pairs():
    few = [outcome(0.9)] * 6 + [outcome(0.1)] * 4
    many = few * 20
    lo, hi = bootstrap_interval(few, accuracy, samples=500, seed=1)
    lo2, hi2 = bootstrap_interval(many, accuracy, samples=500, seed=1)
    assert lo <= 0.6 <= hi and lo2 <= 0.6 <= hi2
    assert hi2 - lo2 < hi - lo
    assert bootstrap_interval([outcome(0.9)] * 5, accuracy, samples=50, seed=0) == (1.0, 1.0)
    assert bootstrap_interval(few, accuracy, samples=200, seed=3) == bootstrap_interval(
        few, accuracy, samples=200, seed=3)


def test_summary_gives_per_category_groups_and_verdicts():
    outs = ([outcome(0.95, category="a", orders=[(0.95, 0.05)])] * 40
            + [outcome(0.5, category="b", orders=[(0.9, 0.9)])] * 40)
    summary = summarize(outs, samples=200)
    assert set(summary) == {"all", "a", "b"}
    assert summary["a"]["verdict"] == "ok" and summary["a"]["accuracy"] == 1.0
    assert summary["b"]["verdict"] == "at chance" and summary["b"]["consistency"] == 0.0
    assert summary["all"]["pairs"] == 80


# ---------------------------------------------------------------- bad labelled data

@pytest.mark.parametrize("bad, message", [
    ({"prompt": "q", "chosen": "a"}, "without 'rejected'"),
    ({"prompt": "q", "chosen": "same", "rejected": " same "}, "are the same answer"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "'chosen' must be a string"),
    ({"chosen": "a", "rejected": "b"}, "neither 'prompt' nor 'messages'"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "label": "high"}, "'label' must be a number from 0 to 1"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "label": 1.5}, "'label' must be a number from 0 to 1"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "label": 0.2}, "'label' is 0.2: it does not say 'chosen' is the better"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "and?"}],
      "rejected": "b"}, "'chosen' must be a string or a list of messages ending in the assistant's answer"),
])
def test_bad_labelled_records_name_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "l.jsonl", labelled(2) + [bad])
    with pytest.raises(InputError, match=message) as caught:
        load_labelled(path)
    assert caught.value.where.startswith(f"{path}:3")


def test_category_on_some_records_only_and_empty_sets_are_errors(tmp_path):
    recs = labelled(3)
    del recs[1]["category"]
    with pytest.raises(InputError, match="no 'category'") as caught:
        load_labelled(write(tmp_path / "c.jsonl", recs))
    assert ":2" in caught.value.where
    with pytest.raises(InputError, match="no labelled pairs in split 'test'"):
        load_labelled(write(tmp_path / "s.jsonl", [dict(r, split="dev") for r in labelled(3)]), "test")


def test_trl_conversational_layout_is_read(tmp_path):
    rec = {"prompt": [{"role": "user", "content": "Hi?"}],
           "chosen": [{"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "assistant", "content": "Go away."}]}
    (pair,) = load_labelled(write(tmp_path / "t.jsonl", [rec]))
    assert (pair.messages[-1]["content"], pair.chosen, pair.rejected) == ("Hi?", "Hello!", "Go away.")


# ---------------------------------------------------------------- judges of known quality

def _shown(chat):
    question = chat[-1]["content"]
    a = question.split("(A) ", 1)[1].split("\n(B) ", 1)[0]
    return a


def run_check(tmp_path, chooser, n=24, seed=0, **settings):
    pairs = load_labelled(write(tmp_path / "j.jsonl", labelled(n)))
    records = judge_inputs(pairs, seed)
    judged = list(judge(records, [FakeEngine(chooser=chooser)], load_constitution("harmless"),
                        JudgeSettings(seed=seed, **settings)))
    return records, [outcome_of(j, r) for j, r in zip(judged, records)]


def test_the_order_shown_first_is_drawn_per_pair(tmp_path):
    records, _ = run_check(tmp_path, lambda chat, opts: [-0.5, -1.0])
    firsts = [r["better"] for r in records]
    assert 0 < sum(firsts) < len(firsts)


def test_a_judge_that_knows_the_answer_scores_one(tmp_path):
    def knows(chat, opts):
        return [-0.05, -3.0] if _shown(chat).startswith("GOOD") else [-3.0, -0.05]

    _, outs = run_check(tmp_path, knows)
    summary = summarize(outs, samples=200)["all"]
    assert summary["accuracy"] == 1.0 and summary["consistency"] == 1.0
    assert summary["first_position"] == pytest.approx(0.5, abs=0.01)
    assert summary["verdict"] == "ok"


def test_a_judge_that_always_says_a_is_at_chance(tmp_path):
    _, outs = run_check(tmp_path, lambda chat, opts: [math.log(0.8), math.log(0.2)])
    summary = summarize(outs, samples=200)["all"]
    assert summary["accuracy"] == 0.5          # both orders cancel: every label is 0.5
    assert summary["consistency"] == 0.0
    assert summary["first_position"] == pytest.approx(0.8)
    assert summary["verdict"] == "at chance"


SKILL, BIAS = 0.5, 2.0   # logit P(A) = +-SKILL + BIAS: every raw order says (A)


def biased(chat, opts):
    """A judge that knows the answer a little and prefers (A) a lot; with no content (the
    content-free prompt) it says its prior, BIAS."""
    shown = _shown(chat)
    skill = 0.0 if shown == "N/A" else SKILL if shown.startswith("GOOD") else -SKILL
    return [skill + BIAS, 0.0]


def test_calibration_divides_a_known_position_bias_out(tmp_path):
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
    # One raw order: always (A), so right exactly when the better answer is shown first.
    _, raw = run_check(tmp_path, biased, orders=1)
    assert all(len(o.shown) == 1 and o.orders == [] for o in raw)
    assert summarize(raw, samples=50)["all"]["first_position"] > 0.8
    assert 0.2 < accuracy(raw) < 0.8
    # One order, content-free calibrated: the prior comes out and the truth is recovered.
    _, one = run_check(tmp_path, biased, orders=1, calibrate="content-free")
    assert accuracy(one) == 1.0
    assert all(o.p_better == pytest.approx(sigmoid(SKILL)) for o in one)
    # Two orders averaged pick right but squash the label towards 0.5; swap recovers sigmoid(SKILL).
    _, avg = run_check(tmp_path, biased)
    assert accuracy(avg) == 1.0 and consistency(avg) == 0.0
    squashed = (sigmoid(SKILL + BIAS) + 1 - sigmoid(-SKILL + BIAS)) / 2
    assert all(o.p_better == pytest.approx(squashed) for o in avg) and squashed < sigmoid(SKILL)
    _, swap = run_check(tmp_path, biased, calibrate="swap")
    assert all(o.p_better == pytest.approx(sigmoid(SKILL)) for o in swap)
    # Content-free on both orders: the calibrated orders now agree on every pair.
    _, both = run_check(tmp_path, biased, calibrate="content-free")
    assert consistency(both) == 1.0 and accuracy(both) == 1.0
    assert summarize(both, samples=50)["all"]["first_position"] == pytest.approx(0.5)


def test_calibration_settings_are_checked_and_recorded(tmp_path):
    for bad in ({"orders": 3}, {"calibrate": "magic"}, {"orders": 1, "calibrate": "swap"},
                {"cot": True, "calibrate": "content-free"}):
        with pytest.raises(ValueError):
            JudgeSettings(**bad)
    pairs = load_labelled(write(tmp_path / "j.jsonl", labelled(4)))
    engine = FakeEngine(chooser=biased)
    judged = list(judge(judge_inputs(pairs, 0), [engine], load_constitution("harmless"),
                        JudgeSettings(orders=1, calibrate="content-free", examples=False)))
    j = judged[0]["judgements"][0]
    assert j["p_content_free"] == pytest.approx(1.0 / (1.0 + math.exp(-BIAS)))
    step = judged[0]["_cai"]["steps"][-1]
    assert step["orders"] == 1 and step["calibrate"] == "content-free" and step["examples"] is False
    # one content-free prompt per principle, however many pairs; no worked examples shown
    content_free = [c for c, _ in engine.calls if "(A) N/A" in c[-1]["content"]]
    assert len(content_free) == len({p["judgements"][0]["principle"] for p in judged})
    assert all(len(c) == 2 for c, _ in engine.calls)   # system prompt + question only
    done = cai("judge-check", "-m", "fake", "--orders", "1", "--calibrate", "swap")
    assert done.returncode == 2 and "--calibrate swap needs both orders" in done.stderr.decode()


# ---------------------------------------------------------------- the command

def cai(*args, input: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "cai_tools.cli.main", *args], input=input,
                          capture_output=True, cwd=ROOT)


def test_judge_check_command_writes_json_and_a_report(tmp_path):
    data = write(tmp_path / "l.jsonl", labelled(12))
    done = cai("judge-check", "-m", "fake", "--data", data, "--split", "", "--bootstrap", "100",
               "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["groups"]["all"]["pairs"] == 12 and set(summary["groups"]) == {"all", "helpful", "harmless"}
    assert summary["comparisons_per_s"] > 0
    for name in ("report.md", "reliability.png", "summary.json", "judged.jsonl"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "judge accuracy" in done.stderr.decode()
    assert "| all | 12 |" in (tmp_path / "report" / "report.md").read_text()


def test_a_label_that_says_chosen_is_better_is_accepted(tmp_path):
    pairs = load_labelled(write(tmp_path / "l.jsonl", [dict(r, label=0.9) for r in labelled(2)]))
    assert len(pairs) == 2


@pytest.mark.parametrize("out", ["file", "file/report"])
def test_judge_check_out_that_cannot_be_written_stops_before_judging(tmp_path, out):
    data = write(tmp_path / "l.jsonl", labelled(4))
    (tmp_path / "file").write_text("not a folder")
    done = cai("judge-check", "-m", "fake", "--data", data, "--split", "", "--out", tmp_path / out)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and done.stdout == b"" and len(lines) == 1, lines
    assert f"{tmp_path / 'file'} is a file, not a folder" in lines[0]


def test_judge_check_bad_data_is_one_line(tmp_path):
    data = write(tmp_path / "l.jsonl", labelled(2) + [{"prompt": "q", "chosen": "x", "rejected": "x"}])
    done = cai("judge-check", "-m", "fake", "--data", data, "--split", "")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().strip().splitlines() == [
        f"cai judge-check: error: {data}:3: 'chosen' and 'rejected' are the same answer"]


@pytest.mark.model
def test_judge_check_on_the_real_model(model_path, tmp_path):
    """A real run over varied labelled pairs from the shipped set (its dev split)."""
    pairs = [json.loads(x) for x in (ROOT / "data" / "judge_check.jsonl").read_text().splitlines()]
    dev = [p for p in pairs if p["split"] == "dev"][::4][:8]
    data = write(tmp_path / "dev.jsonl", dev)
    done = cai("judge-check", "-m", str(model_path), "--data", data, "--split", "dev",
               "--bootstrap", "200", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    overall = json.loads(done.stdout)["groups"]["all"]
    assert overall["pairs"] == len(dev)
    assert 0.0 <= overall["accuracy_interval"][0] <= overall["accuracy"] <= overall["accuracy_interval"][1] <= 1.0
    assert overall["consistency"] is not None and 0.0 < overall["first_position"] < 1.0
    assert overall["verdict"] in ("ok", "weak", "at chance", "below chance")
    judged = [json.loads(x) for x in (tmp_path / "out" / "judged.jsonl").read_text().splitlines()]
    assert all(len(j["judgements"]) == 1 and 0.0 <= j["label"] <= 1.0 for j in judged)

    # One order, calibrated by the model's own content-free prior.
    one = cai("judge-check", "-m", str(model_path), "--data", data, "--split", "dev", "--orders", "1",
              "--calibrate", "content-free", "--bootstrap", "200", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["groups"]["all"]["consistency"] is None   # one order: nothing to compare
    logit = lambda p: math.log(p / (1 - p))
    for rec in (json.loads(x) for x in (tmp_path / "one" / "judged.jsonl").read_text().splitlines()):
        (j,) = rec["judgements"]
        shown = [k for k in ("p_first_order", "p_second_order") if k in j]
        assert len(shown) == 1 and 0.0 < j["p_content_free"] < 1.0
        calibrated = [c for c in j["calibrated"] if c is not None]
        assert calibrated == [pytest.approx(1 / (1 + math.exp(-(logit(j[shown[0]]) - logit(j["p_content_free"])))))]


# ---------------------------------------------------------------- low-confidence labels

def test_min_confidence_marks_unsure_pairs_and_build_pm_data_leaves_them_out(tmp_path):
    from cai_tools.train.preferences import load_preferences

    def knows(chat, opts):
        return [-0.05, -3.0] if _shown(chat).startswith("GOOD") else [-3.0, -0.05]

    records = judge_inputs(load_labelled(write(tmp_path / "j.jsonl", labelled(6))), 0)
    settings = JudgeSettings(min_confidence=0.1)
    sure = list(judge(records, [FakeEngine(chooser=knows)], load_constitution("harmless"), settings))
    biased = list(judge(records, [FakeEngine(chooser=lambda c, o: [math.log(0.8), math.log(0.2)])],
                        load_constitution("harmless"), settings))
    assert [r["low_confidence"] for r in sure] == [False] * 6
    assert [r["low_confidence"] for r in biased] == [True] * 6      # orders disagree, labels 0.5
    assert sure[0]["_cai"]["steps"][-1]["min_confidence"] == 0.1
    skipped: list = []
    train, held = load_preferences([write(tmp_path / "p.jsonl", sure[:4] + biased[:2])], eval_fraction=0.0,
                                   seed=0, skipped=skipped)
    assert len(train) == 4 and len(skipped) == 2
    with pytest.raises(InputError, match="all 2 pairs are marked low_confidence"):
        load_preferences([write(tmp_path / "b.jsonl", biased[:2])], eval_fraction=0.0, seed=0)
    # without the option nothing is marked
    plain = list(judge(records[:1], [FakeEngine(chooser=knows)], load_constitution("harmless"), JudgeSettings()))
    assert "low_confidence" not in plain[0] and "min_confidence" not in plain[0]["_cai"]["steps"][-1]


def test_judge_counts_confident_pairs_on_stderr(tmp_path):
    recs = [{"id": f"r{i}", "prompt": f"Question {i}?", "responses": [f"answer one {i}", f"answer two {i}"]}
            for i in range(5)]
    done = cai("judge", "-m", "fake", "--min-confidence", "0.5", input=b"".join(
        json.dumps(r).encode() + b"\n" for r in recs))
    assert done.returncode == 0, done.stderr
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(out) == 5 and all(r["low_confidence"] for r in out)   # no label is 0.5 away from 0.5
    assert "0 of 5 pairs are confident" in done.stderr.decode()
    bad = cai("judge", "-m", "fake", "--min-confidence", "0.7", input=b"")
    assert bad.returncode == 2 and "--min-confidence must be in [0, 0.5]" in bad.stderr.decode()
