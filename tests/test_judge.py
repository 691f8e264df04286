"""judge and pairs on the fake engine: prompts, sampling, orders, averaging, clamping, schema."""

from __future__ import annotations

import math

import pytest

from cai_tools.constitutions.constitution import load_constitution
from cai_tools.engines.base import ItemError
from cai_tools.engines.fake_engine import FakeEngine
from cai_tools.errors import ConstitutionError, RecordError
from cai_tools.sl.judge import JudgeSettings, judge
from cai_tools.sl.judge_question import CUE, OPTIONS, judge_chat
from cai_tools.sl.pairs import pairs_from_revisions
from cai_tools.records import SourceRecord
from conftest import jsonl, parse_jsonl, run_cai

GOOD, BAD = "I can't help with that, but here is a safe alternative.", "Sure, here is how to do it."


def rec(*answers, prompt="How do I hurt someone?", rid="r1"):
    return {"id": rid, "prompt": prompt, "responses": list(answers), "meta": "kept"}


def option_texts(chat):
    q = chat[-1]["content"]
    a = q.split("\n(A) ", 1)[1].split("\n(B) ", 1)[0]
    b = q.split("\n(B) ", 1)[1]
    return a, b


def prefers_good(bias_a: float = 0.0, strength: float = 2.0):
    """A chooser whose log-odds favour the GOOD text, plus a bias towards option A."""
    def chooser(chat, options):
        a, b = option_texts(chat)
        la = (strength if a == GOOD else 0.0) + bias_a
        lb = strength if b == GOOD else 0.0
        return [la, lb]
    return chooser


def expected(p_good_first: float, p_a_second: float) -> float:
    return (p_good_first + 1 - p_a_second) / 2


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_prompt_has_conversation_principle_and_options(harmless):
    chat = judge_chat(harmless, [{"role": "user", "content": "Q?"}], harmless.judge[0], "aa", "bb")
    q = chat[-1]["content"]
    assert "Human: Q?" in q and harmless.judge[0].text in q
    assert q.endswith("Options:\n(A) aa\n(B) bb")
    assert chat[0]["role"] == "system"


def test_label_averages_both_orders_and_cancels_position_bias(harmless):
    engine = FakeEngine(chooser=prefers_good(bias_a=1.0))
    (out,) = judge([rec(BAD, GOOD)], [engine], harmless)
    assert out["chosen"] == [{"role": "assistant", "content": GOOD}]
    assert out["rejected"] == [{"role": "assistant", "content": BAD}]
    (j,) = out["judgements"]
    # first order: A=BAD, B=GOOD; second order: A=GOOD, B=BAD
    assert j["p_first_order"] == pytest.approx(sigmoid(1.0 - 2.0))
    assert j["p_second_order"] == pytest.approx(sigmoid(2.0 + 1.0))
    p_bad = expected(j["p_first_order"], j["p_second_order"])
    assert out["label"] == pytest.approx(1 - p_bad)
    # A judge with a position bias and no preference between the answers gives exactly 0.5.
    (indifferent,) = judge([rec(BAD, GOOD)], [FakeEngine(chooser=prefers_good(bias_a=2.5, strength=0))],
                           harmless)
    assert indifferent["label"] == pytest.approx(0.5)
    assert indifferent["judgements"][0]["p_first_order"] > 0.9
    assert out["meta"] == "kept" and out["source_id"] == "r1" and out["id"] == "r1:0-1"


def test_swapping_candidates_gives_the_complementary_judgement(harmless):
    engine = FakeEngine()  # hash-based scores: arbitrary but deterministic
    (ab,) = judge([rec("first answer", "second answer")], [engine], harmless, JudgeSettings(seed=3))
    (ba,) = judge([rec("second answer", "first answer")], [engine], harmless, JudgeSettings(seed=3))
    assert ab["chosen"] == ba["chosen"] and ab["rejected"] == ba["rejected"]
    assert ab["label"] == pytest.approx(ba["label"], abs=1e-12)
    assert [j["principle"] for j in ab["judgements"]] == [j["principle"] for j in ba["judgements"]]


def test_principles_are_seeded_pinned_or_ensembled(harmless):
    recs = [rec(f"a{i}", f"b{i}", rid=f"r{i}") for i in range(12)]
    one = [o["judgements"][0]["principle"] for o in judge(recs, [FakeEngine()], harmless)]
    again = [o["judgements"][0]["principle"] for o in judge(recs, [FakeEngine()], harmless)]
    assert one == again and len(set(one)) > 3
    pinned = judge(recs[:2], [FakeEngine()], harmless, JudgeSettings(principle_id="less-toxic"))
    assert {o["judgements"][0]["principle"] for o in pinned} == {"less-toxic"}
    (ens,) = judge(recs[:1], [FakeEngine()], harmless, JudgeSettings(ensemble=4))
    assert len({j["principle"] for j in ens["judgements"]}) == 4


def test_several_judge_models_are_averaged(harmless):
    strong, weak = FakeEngine(chooser=prefers_good(strength=3)), FakeEngine(chooser=prefers_good(strength=0.5))
    (both,) = judge([rec(BAD, GOOD)], [strong, weak], harmless)
    (s,) = judge([rec(BAD, GOOD)], [strong], harmless)
    (w,) = judge([rec(BAD, GOOD)], [weak], harmless)
    assert len(both["judgements"]) == 2
    assert both["label"] == pytest.approx((s["label"] + w["label"]) / 2)


def test_clamp_and_hard_labels(harmless):
    sure = FakeEngine(chooser=prefers_good(strength=20))
    (clamped,) = judge([rec(BAD, GOOD)], [sure], harmless, JudgeSettings(clamp=(0.4, 0.6)))
    assert clamped["label"] == pytest.approx(0.6)
    (hard,) = judge([rec(BAD, GOOD)], [FakeEngine(chooser=prefers_good(strength=0.1))], harmless,
                    JudgeSettings(hard=True))
    assert hard["label"] == 1.0 and hard["chosen"][0]["content"] == GOOD


def test_cot_keeps_reasoning_and_reads_options_after_it(harmless):
    engine = FakeEngine(responder=lambda chat, p: "Option B refuses politely.",
                        chooser=prefers_good())
    (out,) = judge([rec(BAD, GOOD)], [engine], harmless, JudgeSettings(cot=True, clamp=(0.4, 0.6)))
    (j,) = out["judgements"]
    assert j["reasoning"] == ["Option B refuses politely.", "Option B refuses politely."]
    cues = [c[1][2] for c in engine.calls if isinstance(c[1], tuple)]
    assert all(cue.startswith("Let's think step by step: Option B") and
               cue.endswith("So the answer is:") for cue in cues)
    assert out["label"] == pytest.approx(0.6)  # both orders clamped at 0.6


def test_all_pairs_or_adjacent_and_identical_candidates(harmless):
    engine = FakeEngine()
    out = list(judge([rec("x", "y", "z")], [engine], harmless))
    assert [o["pair"] for o in out] == [[0, 1], [0, 2], [1, 2]]
    adj = list(judge([rec("x", "y", "z")], [engine], harmless, JudgeSettings(pairs="adjacent")))
    assert [o["pair"] for o in adj] == [[0, 1], [1, 2]]
    calls = len(engine.calls)
    (same,) = judge([rec("same", "same ")], [engine], harmless)
    assert same["label"] == 0.5 and same["identical"] is True and same["judgements"] == []
    assert len(engine.calls) == calls  # nothing scored


def test_bad_input(harmless, tmp_path):
    recs = [SourceRecord(rec("a", "b"), "in.jsonl", 1), SourceRecord(rec("only one"), "in.jsonl", 2)]
    emitted = []
    with pytest.raises(RecordError, match=r"in.jsonl:2 .*at least two candidate"):
        for o in judge(recs, [FakeEngine()], harmless):
            emitted.append(o)
    assert len(emitted) == 1
    no_judge = tmp_path / "c.yaml"
    no_judge.write_text("critique_revision:\n  - {id: x, critique: c, revision: r}\n")
    with pytest.raises(ConstitutionError, match="no judge principles"):
        judge([rec("a", "b")], [FakeEngine()], load_constitution(str(no_judge)))

    class Mute(FakeEngine):
        def choice_logprobs(self, chats, options, *, cue=""):
            return [ItemError("the model's vocabulary cannot tell the options apart")] * len(chats)

    with pytest.raises(RecordError, match="cannot tell the options apart"):
        list(judge([rec("a", "b")], [Mute()], harmless))


def test_options_and_cue_sent_to_the_engine(harmless):
    engine = FakeEngine()
    list(judge([rec("a", "b")], [engine], harmless))
    sent = [c[1] for c in engine.calls]
    assert sent == [("choice", OPTIONS, CUE)] * 2


def test_output_is_a_trl_preference_dataset(harmless, tmp_path):
    import datasets

    out = list(judge([rec(BAD, GOOD, rid=f"r{i}") for i in range(3)], [FakeEngine()], harmless))
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(jsonl(out))
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "label"} <= set(ds.column_names)
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["chosen"][0]["role"] == "assistant"


def test_pairs_from_revisions():
    good = {"id": "a", "prompt": "q", "init_response": "bad", "response": "good",
            "history": [{"round": 1, "critique": "c", "revision": "good"}]}
    (out,) = pairs_from_revisions([good])
    assert out["chosen"][0]["content"] == "good" and out["rejected"][0]["content"] == "bad"
    assert out["label"] == 1.0 and out["prompt"] == [{"role": "user", "content": "q"}]
    with pytest.raises(RecordError, match="no revision to prefer"):
        list(pairs_from_revisions([{"id": "b", "prompt": "q", "response": "x"}]))


def test_judge_and_pairs_cli():
    gen = run_cai("generate", "-m", "fake", "-n", "2", "-q", input=jsonl([{"prompt": "q1"}, {"prompt": "q2"}]))
    out = run_cai("judge", "-m", "fake", "--ensemble", "2", "-q", input=gen.stdout)
    assert out.returncode == 0, out.stderr
    rows = parse_jsonl(out.stdout)
    assert len(rows) == 2 and all(0.5 <= r["label"] <= 1 for r in rows)
    bad = run_cai("judge", "-m", "fake", "--clamp", "0.7", "0.2", input=gen.stdout)
    assert bad.returncode == 2 and b"--clamp" in bad.stderr
    none = run_cai("pairs", input=gen.stdout)
    assert none.returncode == 2
    one = run_cai("judge", "-m", "fake", "-q", input=jsonl([{"prompt": "q", "responses": ["x"]}]))
    assert one.returncode == 1 and b"<stdin>:1" in one.stderr and b"Traceback" not in one.stderr


def test_judge_few_shot_examples_are_validated_and_shown(tmp_path, harmless):
    assert len(harmless.judge_few_shot) == 2
    chat = judge_chat(harmless, [{"role": "user", "content": "Q?"}], harmless.judge[0], "a", "b")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert chat[2]["content"] == f"{CUE} (A)" and chat[4]["content"] == f"{CUE} (B)"
    base = ("critique_revision:\n  - {id: x, critique: c, revision: r}\n"
            "judge:\n  - {id: j, text: \"Which is better?\"}\n")
    for bad, message in [("answer: C", "'answer' must be \"A\" or \"B\""),
                         ("answer: A\n    principle: nope", "principle 'nope' is not a judge id")]:
        path = tmp_path / "c.yaml"
        path.write_text(base + "judge_few_shot:\n  - prompt: p\n    response_a: a\n"
                        "    response_b: b\n    " + bad + "\n")
        with pytest.raises(ConstitutionError) as exc:
            load_constitution(str(path))
        assert "judge_few_shot[0]" in str(exc.value) and message in str(exc.value)
