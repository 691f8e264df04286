"""Direct RLAIF (rl --algo rloo|grpo --judge MODEL): the judge reward on the fake engine, and RLOO
with the real tiny model as its judge."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from cai_tools.engines.fake_engine import FakeEngine
from conftest import run_cai

PROMPTS = Path(__file__).resolve().parent.parent / "data" / "redteam_demo.jsonl"


def _options(chat):
    q = chat[-1]["content"]
    return q.split("\n(A) ", 1)[1].split("\n(B) ", 1)[0], q.split("\n(B) ", 1)[1]


def _reward(monkeypatch, against="group"):
    from cai_tools.train import judge_reward

    engine = FakeEngine(chooser=lambda chat, options: [2.0 * (len(_options(chat)[0]) > len(_options(chat)[1])),
                                                       2.0 * (len(_options(chat)[1]) > len(_options(chat)[0]))])
    from cai_tools.engines import registry

    monkeypatch.setitem(registry._REGISTRY, "fake-judge", lambda options: engine)
    cfg = SimpleNamespace(judge="fake-judge", judge_gpu_layers=None, judge_constitution="harmless",
                          judge_against=against, seed=0)
    return judge_reward.JudgeReward(cfg), engine


def _user(text):
    return [{"role": "user", "content": text}]


def test_group_reward_is_the_mean_win_probability_against_the_others(monkeypatch):
    reward, engine = _reward(monkeypatch)
    # TRL lays groups side by side; here two prompts' answers are interleaved on purpose
    prompts = [_user("p1"), _user("p2"), _user("p1"), _user("p2"), _user("p1"), _user("p2")]
    answers = ["a", "xx", "bbbb", "yy", "cc", "zzzzzz"]
    rewards = reward(prompts, [[{"role": "assistant", "content": a}] for a in answers])
    sig2 = 1 / (1 + math.exp(-2))
    # p1: "bbbb" beats both, "cc" beats "a": win probabilities from both orders
    assert rewards[2] == pytest.approx(sig2) and rewards[0] == pytest.approx(1 - sig2)
    assert rewards[4] == pytest.approx(0.5)
    # p2: "xx" and "yy" tie in length (0.5 between them), "zzzzzz" beats both
    assert rewards[1] == pytest.approx(rewards[3]) and rewards[5] == pytest.approx(sig2)
    assert sum(rewards[0::2]) == pytest.approx(1.5)   # a group of G shares G/2
    assert reward.stats == {"comparisons": 6, "cached": 0, "judge_s": pytest.approx(reward.stats["judge_s"])}
    asked = len(engine.calls)
    assert asked == 12   # 6 pairs, both orders
    again = reward(prompts, [[{"role": "assistant", "content": a}] for a in answers])
    assert again == rewards and len(engine.calls) == asked and reward.stats["cached"] == 6


def test_identical_answers_are_a_tie_without_asking(monkeypatch):
    reward, engine = _reward(monkeypatch)
    assert reward([_user("p")] * 2, ["same", "same"]) == [0.5, 0.5]
    assert engine.calls == []


def test_reference_reward_is_p_of_beating_the_reference(monkeypatch):
    reward, _ = _reward(monkeypatch, against="reference")
    out = reward([_user("p"), _user("p")], ["a much longer answer", "no"], reference=["medium", "medium"])
    sig2 = 1 / (1 + math.exp(-2))
    assert out == pytest.approx([sig2, 1 - sig2])


def test_judge_options_are_checked(tmp_path):
    base = ["rl", "--prompts", PROMPTS, "--out", tmp_path / "run", "-q"]
    cases = [(["--algo", "ppo", "--judge", "fake"], "--judge"),
             (["--algo", "rloo", "--judge", "fake", "--pm", str(tmp_path)], "not both"),
             (["--algo", "rloo", "--judge", str(tmp_path / "missing.gguf")], "not found"),
             (["--algo", "rloo", "--judge", "fake", "--judge-against", "mirror"], "--judge-against"),
             (["--algo", "rloo", "--judge", "fake", "--num-generations", "1"], "--num-generations")]
    for extra, words in cases:
        result = run_cai(*base, *extra)
        errors = [x for x in result.stderr.decode().splitlines() if "error" in x]
        assert result.returncode != 0 and len(errors) == 1 and words in errors[0], (extra, errors)
    assert not (tmp_path / "run").exists()


@pytest.mark.model
def test_rloo_with_the_real_model_as_judge(tmp_path, model_path):
    out = tmp_path / "rloo"
    result = run_cai("rl", "--algo", "rloo", "--judge", model_path, "--prompts", PROMPTS, "--out", out,
                     "--num-generations", "3", "--max-steps", "2", "--max-new-tokens", "12", "--batch-size", "2",
                     "--seed", "1", timeout=900)
    assert result.returncode == 0, result.stderr
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    # a group's win probabilities share G/2 among G answers: the mean reward is 0.5 exactly
    assert all(e["reward"] == pytest.approx(0.5, abs=1e-6) for e in log)
    assert all(math.isfinite(e["loss"]) for e in log)
    run = json.loads((out / "cai_run.json").read_text())
    assert run["pm"] is None and run["judge"]["comparisons"] == 2 * 2 * 3   # steps x prompts x pairs of 3
    assert "direct RLAIF" in result.stderr.decode()
