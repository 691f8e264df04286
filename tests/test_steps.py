"""generate / critique / revise / format on the fake engine: the record logic."""

from __future__ import annotations

import pytest

from cai_tools.sl.critique import critique
from cai_tools.engines.fake_engine import FakeEngine
from cai_tools.errors import ConstitutionError, RecordError
from cai_tools.sl.generate import generate
from cai_tools.sl.hf_format import HF_COLUMNS, format_hf
from cai_tools.records import SourceRecord
from cai_tools.sl.revise import revise
from cai_tools.sl.prompts import clean_revision, critique_is_clean, few_shot_turns
from cai_tools.sl.sampling import Sampling

PROMPTS = [{"prompt": f"question {i}", "user_meta": {"n": i}} for i in range(6)]


def test_generate_adds_answer_id_and_provenance_and_keeps_fields(fake_engine):
    out = list(generate(PROMPTS, fake_engine, seed=3))
    assert len(out) == 6
    for rec, src in zip(out, PROMPTS):
        assert rec["user_meta"] == src["user_meta"]
        assert rec["response"] and rec["response"] == rec["init_response"]
        assert len(rec["id"]) == 16
        step = rec["_cai"]["steps"][-1]
        assert step["step"] == "generate" and step["seed"] == 3 and step["engine"]["backend"] == "fake"
    assert len({r["id"] for r in out}) == 6


def test_generate_keeps_an_existing_id_and_accepts_messages(fake_engine):
    rec = {"id": "mine", "messages": [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "hi"}]}
    (out,) = generate([rec], fake_engine)
    assert out["id"] == "mine"
    assert fake_engine.calls[0][0] == rec["messages"]


def test_generate_n_samples_kept_together_and_seeded():
    engine = FakeEngine()
    (out,) = generate(PROMPTS[:1], engine, n=3, seed=1)
    assert len(out["responses"]) == 3 and len(set(out["responses"])) == 3
    assert out["response"] == out["responses"][0]
    (again,) = generate(PROMPTS[:1], FakeEngine(), n=3, seed=1)
    (other,) = generate(PROMPTS[:1], FakeEngine(), n=3, seed=2)
    assert again["responses"] == out["responses"] and other["responses"] != out["responses"]


def test_per_record_seeding_does_not_depend_on_batching_or_order():
    a = list(generate(PROMPTS, FakeEngine(), seed=7, batch_size=1))
    b = list(generate(PROMPTS, FakeEngine(), seed=7, batch_size=4))
    c = list(generate(PROMPTS[3:], FakeEngine(), seed=7))  # as after a resume
    assert a == b
    assert c == a[3:]


def test_engine_gets_whole_batches(fake_engine):
    list(generate(PROMPTS, fake_engine, n=2, batch_size=4))
    assert fake_engine.batch_sizes == [8, 4]


@pytest.mark.parametrize("record, message", [
    ({"text": "x"}, "neither 'prompt' nor 'messages'"),
    ({"prompt": 5}, "'prompt' must be a string, got int"),
    ({"prompt": "  "}, "'prompt' is empty"),
    ({"messages": "hi"}, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "user"}]}, "messages[0] must be an object"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role 'bot'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "last of 'messages' must be a user turn"),
])
def test_bad_records_name_the_field_and_line(fake_engine, record, message):
    recs = [SourceRecord({"prompt": "fine"}, "in.jsonl", 1), SourceRecord(record, "in.jsonl", 2)]
    emitted = []
    with pytest.raises(RecordError) as exc:
        for r in generate(recs, fake_engine):
            emitted.append(r)
    assert len(emitted) == 1
    assert str(exc.value).startswith("in.jsonl:2") and message in str(exc.value)


def test_on_error_skip_writes_an_error_record_and_goes_on(fake_engine):
    recs = [{"prompt": "a"}, {"prompt": 3}, {"prompt": "b"}]
    out = list(generate(recs, fake_engine, on_error="skip"))
    assert [("_cai" in r and "error" in r["_cai"]) for r in out] == [False, True, False]
    assert out[1]["_cai"]["error"]["step"] == "generate"


def test_prompt_longer_than_context_fails_only_that_record():
    engine = FakeEngine(max_prompt_chars=50)
    recs = [{"prompt": "short"}, {"prompt": "x" * 100}, {"prompt": "short too"}]
    out = list(generate(recs, engine, on_error="skip"))
    assert "longer than the context" in out[1]["_cai"]["error"]["message"]
    assert out[0]["response"] and out[2]["response"]


def test_empty_input_gives_no_output(fake_engine):
    assert list(generate([], fake_engine)) == []


# ---------------------------------------------------------------- critique / revise


def scripted(chat, params):
    last = chat[-1]["content"]
    if "Rewrite" in last or "rewrite" in last:
        return "Sure, here is a revised response:\nRevision: A safer answer."
    if "?" in last or "Point out" in last or "Identify" in last:
        return "Critique: The answer has a problem.\nRevision request: ignored run-on"
    return "an answer"


def test_critique_appends_a_round_with_a_sampled_principle(harmless):
    answered = list(generate(PROMPTS, FakeEngine(), seed=0))
    out = list(critique(answered, FakeEngine(scripted), harmless, seed=0))
    ids = {p.id for p in harmless.critique_revision}
    for rec in out:
        (entry,) = rec["history"]
        assert entry["round"] == 1 and entry["principle"] in ids
        assert entry["critique"] == "The answer has a problem."
        assert entry["critique_request"] == harmless.principle(entry["principle"]).critique
        assert rec["response"] == rec["init_response"]
    assert len({r["history"][0]["principle"] for r in out}) > 1  # sampled, not fixed
    again = list(critique(answered, FakeEngine(scripted), harmless, seed=0))
    assert again == out


def test_critique_prompt_has_few_shot_examples_then_the_conversation(harmless):
    engine = FakeEngine(scripted)
    answered = list(generate(PROMPTS[:1], FakeEngine()))
    list(critique(answered, engine, harmless, principle_id="toxic"))
    chat = engine.calls[0][0]
    shots = few_shot_turns(harmless)
    assert chat[:len(shots)] == shots and len(shots) == 1 + 6 * len(harmless.few_shot)
    assert chat[len(shots):] == [
        {"role": "user", "content": "question 0"},
        {"role": "assistant", "content": answered[0]["response"]},
        {"role": "user", "content": harmless.principle("toxic").critique},
    ]


def test_unknown_principle_is_an_error_before_any_work(harmless, fake_engine):
    with pytest.raises(ConstitutionError, match="unknown principle id 'nope'"):
        critique(PROMPTS, fake_engine, harmless, principle_id="nope")
    assert fake_engine.calls == []


def test_revise_completes_the_round_and_strips_scaffolding(harmless):
    answered = list(generate(PROMPTS[:2], FakeEngine()))
    critiqued = list(critique(answered, FakeEngine(scripted), harmless))
    out = list(revise(critiqued, FakeEngine(scripted), harmless))
    for rec in out:
        (entry,) = rec["history"]
        assert entry["revision"] == "A safer answer." == rec["response"]
        assert entry["revision_request"] == harmless.principle(entry["principle"]).revision
        assert rec["init_response"] == "fake reply " + rec["init_response"].split()[-1]


def test_critique_then_revise_chained_equals_rounds(harmless):
    answered = list(generate(PROMPTS, FakeEngine(), seed=5))
    chained = answered
    for _ in range(3):
        chained = list(revise(critique(chained, FakeEngine(), harmless, seed=5),
                              FakeEngine(), harmless, seed=5))
    in_one = list(revise(answered, FakeEngine(), harmless, rounds=3, seed=5))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "_cai"} for r in rs]  # noqa: E731
    assert strip(chained) == strip(in_one)
    assert [h["round"] for h in in_one[0]["history"]] == [1, 2, 3]
    assert in_one[0]["response"] == in_one[0]["history"][-1]["revision"]


def test_revise_without_a_pending_critique_is_an_error(harmless, fake_engine):
    answered = list(generate(PROMPTS[:1], FakeEngine()))
    with pytest.raises(RecordError, match="no critique awaiting revision"):
        list(revise(answered, fake_engine, harmless))
    critiqued = list(critique(answered, fake_engine, harmless))
    with pytest.raises(RecordError, match="has no revision yet"):
        list(critique(critiqued, fake_engine, harmless))


def test_until_clean_stops_rounds_when_the_critique_finds_nothing(harmless):
    def responder(chat, params):
        last = chat[-1]["content"]
        if last.startswith("Rewrite"):
            return "Improved answer."
        if last in {p.critique for p in harmless.critique_revision}:
            # First critique finds a problem; after one revision there is nothing to fix.
            return "No changes needed." if chat[-2]["content"] == "Improved answer." else "Bad."
        return "first answer"

    answered = list(generate(PROMPTS[:2], FakeEngine(responder)))
    out = list(revise(answered, FakeEngine(responder), harmless, rounds=4, until_clean=True))
    for rec in out:
        assert [h.get("clean", False) for h in rec["history"]] == [False, True]
        assert rec["response"] == "Improved answer." == rec["history"][-1]["revision"]
    full = list(revise(answered, FakeEngine(responder), harmless, rounds=4))
    assert len(full[0]["history"]) == 4


@pytest.mark.parametrize("raw, clean", [
    ("Revision: Be kind.", "Be kind."),
    ("Sure, here is a revised response:\nBe kind.", "Be kind."),
    ("Here's the rewritten answer: Be kind.", "Be kind."),
    ("Okay! Here is my revised version of the answer.\nRevised response: Be kind.", "Be kind."),
    ('"Be kind."', "Be kind."),
    ("Be kind.\nCritique: more stuff", "Be kind."),
    ("Revisions to tax law are complex.", "Revisions to tax law are complex."),
])
def test_clean_revision(raw, clean):
    assert clean_revision(raw) == clean


@pytest.mark.parametrize("text, clean", [
    ("No changes needed. The answer is fine.", True),
    ("There is nothing to fix here.", True),
    ("No issues found.", True),
    ("The answer gives dangerous instructions; changes are needed.", False),
])
def test_critique_is_clean(text, clean):
    assert critique_is_clean(text) is clean


def test_format_hf_columns_and_dataset_loading(harmless, tmp_path):
    import datasets

    answered = list(generate(PROMPTS[:3], FakeEngine()))
    revised = list(revise(answered, FakeEngine(scripted), harmless, rounds=2))
    rows = list(format_hf(revised))
    assert all(tuple(r) == HF_COLUMNS for r in rows)
    r = rows[0]
    assert r["messages"] == r["chosen"] == [{"role": "user", "content": "question 0"},
                                            {"role": "assistant", "content": "A safer answer."}]
    assert r["rejected"][-1]["content"] == revised[0]["init_response"]
    assert r["critic_prompt"] == revised[0]["history"][-1]["critique_request"]
    import orjson
    path = tmp_path / "hf.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in rows))
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 3 and set(HF_COLUMNS) <= set(ds.column_names)
    assert ds[0]["chosen"][1]["content"] == "A safer answer."


def test_format_hf_requires_a_revision(fake_engine):
    answered = list(generate(PROMPTS[:1], fake_engine))
    with pytest.raises(RecordError, match="no completed critique/revision round"):
        list(format_hf(answered))
    (skipped,) = format_hf(answered, on_error="skip")   # passed on with the error, like every step
    assert skipped["_cai"]["error"]["step"] == "format" and "no completed" in skipped["_cai"]["error"]["message"]
    assert "messages" not in skipped or skipped["messages"] == answered[0].get("messages")


def test_sampling_params_carry_the_options():
    p = Sampling(max_tokens=12, temperature=0.0, top_p=0.5).params(99)
    assert (p.max_tokens, p.temperature, p.top_p, p.seed) == (12, 0.0, 0.5, 99)
