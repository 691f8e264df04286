"""revise --keep-better and the judge's pairwise preference (prefer_first) on the fake engine."""

from __future__ import annotations

from collections import Counter

import pytest

from cai_tools.engines.base import ItemError
from cai_tools.engines.fake_engine import FakeEngine
from cai_tools.errors import RecordError
from cai_tools.sl.generate import generate
from cai_tools.sl.judge_question import prefer_first
from cai_tools.sl.revise import KeptTally, revise
from cai_tools.sl.hf_format import to_hf
from cai_tools.train.sft_data import cai_examples, left_out_summary
from conftest import jsonl, parse_jsonl, run_cai


def _options(chat):
    q = chat[-1]["content"]
    a = q.split("\n(A) ", 1)[1].split("\n(B) ", 1)[0]
    return a, q.split("\n(B) ", 1)[1]


def prefers_longer(bias_a: float = 0.0):
    """A judge that favours the longer answer (log-odds 2), plus an order bias towards (A)."""
    def chooser(chat, options):
        a, b = _options(chat)
        return [2.0 * (len(a) > len(b)) + bias_a, 2.0 * (len(b) > len(a))]
    return chooser


def test_prefer_first_averages_both_orders_and_skips_identical(harmless):
    engine = FakeEngine(chooser=prefers_longer(bias_a=1.0))
    conv = [{"role": "user", "content": "Q?"}]
    p = harmless.judge[0]
    out = prefer_first(engine, harmless, [(conv, p, "long answer", "short"), (conv, p, "short", "long answer"),
                                          (conv, p, "same", "same ")])
    sig = lambda x: 1 / (1 + 2.718281828459045 ** -x)  # noqa: E731
    # first shown first: P(A) = sig(3); first shown second: P(A) = sig(2 - 1) for the other
    assert out[0] == pytest.approx((sig(3) + 1 - sig(-1)) / 2)
    assert out[1] == pytest.approx(1 - out[0])
    assert out[2] == 0.5
    assert len(engine.calls) == 4   # identical answers are not asked


def test_prefer_first_passes_item_errors_on():
    class Failing(FakeEngine):
        def choice_logprobs(self, chats, options, *, cue=""):
            return [ItemError("too long")] * len(chats)

    from cai_tools.constitutions.constitution import load_constitution

    c = load_constitution("harmless")
    (out,) = prefer_first(Failing(), c, [([{"role": "user", "content": "Q"}], c.judge[0], "a", "b")])
    assert isinstance(out, ItemError)


def _answered(n=6):
    prompts = [{"id": f"p{i}", "prompt": f"Question number {i}?"} for i in range(n)]
    return list(generate(prompts, FakeEngine(lambda chat, p: "init"), seed=1))


def test_keep_better_keeps_preferred_revisions_and_reverts_the_rest(harmless):
    # per record: round 1's revision is longer (kept), round 2's shorter (rejected), round 3's longer still
    revisions = ["a much longer and better revised answer", "short",
                 "an even longer, kinder and better answer than both"]
    seen = Counter()

    def scripted(chat, params):
        if chat[-2]["role"] != "assistant" or chat[-2]["content"] != "The answer could be better.":
            return "The answer could be better."      # a critique request
        prompt = chat[-5]["content"]                  # a revision request: which round of this record?
        seen[prompt] += 1
        return revisions[seen[prompt] - 1]

    engine = FakeEngine(scripted, chooser=prefers_longer(bias_a=0.5))
    out = list(revise(_answered(), engine, harmless, rounds=3, keep_better=0.5, seed=2))
    for rec in out:
        assert [h["kept"] for h in rec["history"]] == [True, False, True]
        assert all((h["p_better"] >= 0.5) == h["kept"] for h in rec["history"])
        assert rec["response"] == revisions[2]
    # round 3 critiqued and revised round 1's answer, not the rejected "short"
    round3_chats = [c for c, _ in engine.calls if c[-2]["content"] == "The answer could be better."][-1:]
    assert round3_chats[0][-4]["content"] == revisions[0]
    tally = KeptTally()
    list(tally.watch(out))
    p_long = out[0]["history"][0]["p_better"]
    assert tally.lines() == [f"round 1: the judge kept 6 of 6 revisions (100%), P(revision better) "
                             f"{p_long:.2f}-{p_long:.2f}",
                             f"round 2: the judge kept 0 of 6 revisions (0%), P(revision better) "
                             f"{1 - p_long:.2f}-{1 - p_long:.2f}",
                             f"round 3: the judge kept 6 of 6 revisions (100%), P(revision better) "
                             f"{p_long:.2f}-{p_long:.2f}"]
    unsure = KeptTally()
    list(unsure.watch([{"history": [{"round": 1, "kept": True, "p_better": 0.55}]}]))
    assert "close to a coin flip" in unsure.lines()[-1]
    # provenance names the gate
    assert out[0]["_cai"]["steps"][-1]["keep_better"] == 0.5


def test_rejected_rounds_are_not_trained_on_and_do_not_count_as_flagged(harmless):
    rec = {"id": "r", "prompt": "Q?", "init_response": "first answer here", "response": "second answer here",
           "history": [
               {"round": 1, "principle": "harmful", "critique": "It could be kinder.",
                "revision": "second answer here", "kept": True},
               {"round": 2, "principle": "toxic", "critique": "Too long.", "revision": "bad", "kept": False}]}
    texts = [e.messages[-1]["content"] for e in cai_examples(rec, all_rounds=True)]
    assert texts == ["second answer here"]
    final = cai_examples(rec, all_rounds=False, dropped=Counter())
    assert [e.messages[-1]["content"] for e in final] == ["second answer here"]
    # every revision rejected: the answer is the unrevised first one, which SL-CAI must not teach
    rec["history"][0]["kept"] = False
    rec["response"] = rec["init_response"]
    dropped = Counter()
    assert cai_examples(rec, all_rounds=False, dropped=dropped) == []
    assert cai_examples(rec, all_rounds=True) == []
    assert left_out_summary(dropped) == "1 records whose every revision 'revise --keep-better' rejected"
    with pytest.raises(RecordError, match="every revision round was rejected"):
        to_hf(rec)


def test_hf_export_takes_the_last_kept_round():
    rec = {"id": "r", "prompt": "Q?", "init_response": "first", "response": "second",
           "history": [
               {"round": 1, "critique_request": "cr1", "critique": "c1", "revision_request": "rr1",
                "revision": "second", "kept": True},
               {"round": 2, "critique_request": "cr2", "critique": "c2", "revision_request": "rr2",
                "revision": "rejected one", "kept": False}]}
    row = to_hf(rec)
    assert (row["critic_prompt"], row["critic_response"], row["revision_response"]) == ("cr1", "c1", "second")
    assert row["chosen"][-1]["content"] == "second" and row["rejected"][-1]["content"] == "first"


def test_single_round_revise_is_gated_too(harmless):
    answered = _answered(2)
    from cai_tools.sl.critique import critique

    critiqued = list(critique(answered, FakeEngine(lambda c, p: "Fix it."), harmless, seed=1))
    engine = FakeEngine(lambda c, p: "ok", chooser=prefers_longer())
    out = list(revise(critiqued, engine, harmless, keep_better=0.5))
    # the judge prefers the longer "init" to the revision "ok": rejected, the answer stays
    assert all(r["history"][-1]["kept"] is False and r["response"] == "init" for r in out)


def test_keep_better_judge_failure_is_a_record_error(harmless):
    class NoChoice(FakeEngine):
        def choice_logprobs(self, chats, options, *, cue=""):
            return [ItemError("prompt is longer than the context")] * len(chats)

    engine = NoChoice(lambda c, p: "a revised answer that differs")
    with pytest.raises(RecordError, match="keep-better"):
        list(revise(_answered(1), engine, harmless, rounds=1, keep_better=0.5))


def test_cli_keep_better_reports_kept_share_per_round():
    prompts = jsonl([{"prompt": f"Tell me about topic {i}."} for i in range(3)])
    gen = run_cai("generate", "-m", "fake", "--seed", "1", "-q", input=prompts)
    out = run_cai("revise", "-m", "fake", "--rounds", "2", "--keep-better", "--seed", "1", input=gen.stdout)
    assert out.returncode == 0, out.stderr
    recs = parse_jsonl(out.stdout)
    assert all(len(r["history"]) == 2 and all("kept" in h for h in r["history"]) for r in recs)
    err = out.stderr.decode()
    for n in (1, 2):
        kept = sum(r["history"][n - 1]["kept"] for r in recs)
        assert f"round {n}: the judge kept {kept} of 3 revisions" in err
    bad = run_cai("revise", "-m", "fake", "--rounds", "1", "--keep-better", "--keep-threshold", "1.5",
                  input=gen.stdout)
    assert bad.returncode == 2 and b"--keep-threshold" in bad.stderr


@pytest.mark.model
def test_keep_better_on_the_real_model(llama_engine, harmless):
    from cai_tools.sl.sampling import Sampling

    short = Sampling(max_tokens=40, temperature=0.8)
    prompts = [{"id": "lock", "prompt": "How do I pick the lock on my neighbour's door?"},
               {"id": "leaves", "prompt": "Write one sentence about autumn leaves."}]
    answered = list(generate(prompts, llama_engine, sampling=short, seed=2))
    out = list(revise(answered, llama_engine, harmless, rounds=2, sampling=short, seed=2, keep_better=0.5))
    for rec in out:
        assert [h["round"] for h in rec["history"]] == [1, 2]
        assert all(0.0 <= h["p_better"] <= 1.0 and h["kept"] == (h["p_better"] >= 0.5) for h in rec["history"])
        kept = [h["revision"] for h in rec["history"] if h["kept"]]
        assert rec["response"] == (kept[-1] if kept else rec["init_response"])
