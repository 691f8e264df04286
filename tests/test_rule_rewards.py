"""Rule rewards (--reward rule:/py:), the rule in the judge's place, and cai label --rule."""

from __future__ import annotations

import math

import pytest

from cai_tools.errors import UsageError
from cai_tools.train.rule_rewards import (HybridReward, RewardError, RuleRewards, parse_reward, prompt_of,
                                          rules_help)
from conftest import jsonl, parse_jsonl, run_cai


def test_each_built_in_rule_scores_what_it_says():
    length = parse_reward("rule:length=4")
    assert length.score("q", "one two three four") == 1.0
    assert length.score("q", "one two") > length.score("q", "one two three four five six seven eight nine")
    assert math.isclose(length.score("q", "a b c d e f g h"), math.exp(-1))
    assert parse_reward("rule:no-refusal").score("q", "I'm sorry, but I can't help with that.") == 0.0
    assert parse_reward("rule:no-refusal").score("q", "Boil it for six minutes.") == 1.0
    assert parse_reward("rule:no-boilerplate").score("q", "Remember: you are not alone.") == 0.0
    assert parse_reward("rule:regex=\\d+").score("q", "It takes 6 minutes.") == 1.0
    assert parse_reward("rule:not-regex=\\d+").score("q", "It takes 6 minutes.") == 0.0


@pytest.mark.parametrize("spec,says", [
    ("rule:lenght=4", "unknown rule 'lenght'"),
    ("rule:length", "needs =ARG"),
    ("rule:length=-3", "positive number of words"),
    ("rule:no-refusal=1", "takes no argument"),
    ("rule:regex=(", "not a regular expression"),
    ("length=4", "must be rule:NAME[=ARG] or py:MODULE:FUNCTION"),
    ("py:no_such_module_here:f", "does not import"),
    ("py:math", "py:MODULE:FUNCTION"),
    ("py:math:no_such_function", "has no function"),
])
def test_a_bad_reward_is_one_line_that_lists_the_rules(spec, says):
    with pytest.raises(UsageError) as err:
        parse_reward(spec)
    assert says in str(err.value) and "\n" not in str(err.value)
    if "rule" in says or "MODULE" in says:
        assert "no-boilerplate" in str(err.value) or "MODULE" in str(err.value)


def test_a_users_function_is_called_per_answer_and_its_failures_name_the_record(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def polite(prompt, answer):\n    return 1.0 if 'please' in answer.lower() else 0.0\n"
        "def broken(prompt, answer):\n    raise KeyError('oops')\n"
        "def wordy(prompt, answer):\n    return 'many'\n")
    monkeypatch.chdir(tmp_path)
    rewards = RuleRewards(["py:my_rewards:polite"])
    conv = [{"role": "user", "content": "Pass the salt"}, {"role": "assistant", "content": "Please do."}]
    assert rewards.rewards([conv]) == [1.0]
    with pytest.raises(RewardError, match=r"py:my_rewards:broken failed on prompt 'Pass the salt'.*KeyError"):
        RuleRewards(["py:my_rewards:broken"]).rewards([conv])
    with pytest.raises(RewardError, match="returned 'many'.*not a finite number"):
        RuleRewards(["py:my_rewards:wordy"]).rewards([conv])


def test_rules_add_to_a_pm_with_their_weight():
    class FakePM:
        def rewards(self, conversations):
            return [0.5] * len(conversations)

    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "one two"}]
    hybrid = HybridReward(FakePM(), RuleRewards(["rule:length=2", "rule:no-refusal"], weight=0.2))
    assert hybrid.rewards([conv]) == [pytest.approx(0.5 + 0.2 * (1.0 + 1.0))]
    assert prompt_of([{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                      {"role": "assistant", "content": "a"}, {"role": "user", "content": "u2"}]) == "u2"


def _cfg(**kw):
    from cai_tools.train.rl_config import RLConfig

    base = dict(policy="fake", base="fake", out="/tmp/unused-run", prompts=["p.jsonl"])
    return RLConfig(**{**base, **kw})


@pytest.mark.parametrize("kw,says", [
    (dict(algo="dpo", data=["d.jsonl"], reward=["rule:length=10"]), "cai label --rule"),
    (dict(algo="ppo", reward=["rule:length=10"], reward_weight=0.2), "nothing to weigh them against"),
    (dict(algo="ppo", pm="runs/pm", reward_weight=0.2), "give --reward rule:NAME as well"),
    (dict(algo="ppo", reward=["rule:nope"]), "unknown rule 'nope'"),
    (dict(algo="grpo"), "a rule (--reward rule:NAME)"),
    (dict(algo="rloo", judge="rule:nope"), "unknown rule 'nope'"),
])
def test_rl_checks_rewards_before_anything_loads(kw, says):
    with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
        _cfg(**kw).check()


def test_a_rule_in_the_judges_place_rewards_the_better_answers_of_a_group():
    from types import SimpleNamespace

    from cai_tools.train.judge_reward import JudgeReward

    judge = JudgeReward(SimpleNamespace(judge="rule:length=2", judge_against="group", seed=0))
    prompt = [{"role": "user", "content": "Say hi"}]
    rewards = judge([prompt] * 3, ["hi there", "hi there my friend how are you", "hello there you"])
    assert rewards == [1.0, 0.0, 0.5]   # 2 words beats both, 7 loses to both, 3 splits
    assert judge.stats["comparisons"] == 3


PAIRS = [
    {"id": "p:0-1", "source_id": "p", "prompt": [{"role": "user", "content": "Hi"}],
     "chosen": [{"role": "assistant", "content": "one two three four five six seven"}],
     "rejected": [{"role": "assistant", "content": "one two three"}], "label": 0.6},
    {"id": "q:0-1", "prompt": "Yo", "chosen": "a b", "rejected": "c d", "label": 0.55},
    {"id": "r:0-1", "prompt": "Hey", "chosen": "x y z", "rejected": "x y z w v u t s", "label": 0.9,
     "low_confidence": True},
]


def test_label_by_a_rule_flips_keeps_and_leaves_ties_out():
    out = run_cai("label", "--rule", "length=3", input=jsonl(PAIRS))
    assert out.returncode == 0, out.stderr.decode()
    recs = parse_jsonl(out.stdout)
    assert [r["id"] for r in recs] == ["p:0-1", "r:0-1"]
    flipped, kept = recs
    assert flipped["chosen"][0]["content"] == "one two three" and flipped["label"] == 1.0
    step = flipped["_cai"]["steps"][-1]
    assert step["step"] == "label" and step["previous_label"] == 0.6 and step["rule"] == "rule:length=3"
    # the scores describe the answers as written out: chosen's is the higher after a flip too
    assert step["flipped"] and step["rule_scores"]["chosen"] == 1.0 > step["rule_scores"]["rejected"]
    assert not kept["_cai"]["steps"][-1]["flipped"]
    assert kept["chosen"] == "x y z" and "low_confidence" not in kept
    assert b"2 pairs labelled by rule:length=3, 1 of them flipped; 1 ties left out" in out.stderr


def test_label_mixes_the_rule_with_the_ai_label():
    out = run_cai("label", "--rule", "rule:length=3", "--mix", "0.5", input=jsonl(PAIRS[:2]))
    recs = parse_jsonl(out.stdout)
    # p: rule says rejected (0), AI 0.6 -> 0.3 -> flipped to 0.7; q: rule tie 0.5, AI 0.55 -> 0.525
    assert [round(r["label"], 3) for r in recs] == [0.7, 0.525]
    assert recs[0]["chosen"][0]["content"] == "one two three"


def test_label_refuses_a_bad_rule_and_a_bad_record_in_one_line():
    out = run_cai("label", "--rule", "shortest", input=jsonl(PAIRS))
    assert out.returncode == 2 and b"unknown rule 'shortest'" in out.stderr and b"length=N" in out.stderr
    out = run_cai("label", "--rule", "length=3", input=jsonl([{"id": "x", "prompt": "p", "chosen": "a"}]))
    err = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1 and "needs 'chosen' and 'rejected'" in err[-1] and "<stdin>:1" in err[-1]
    assert rules_help().count("=") >= 3
