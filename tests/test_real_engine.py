"""The batched llama.cpp engine on the real tiny model: batching, prefix reuse, scoring."""

from __future__ import annotations

import math

import pytest

from cai_tools.engines.base import Generation, ItemError, SamplingParams
from cai_tools.engines import EngineOptions
from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
from cai_tools.sl.prompts import critique_chat

pytestmark = pytest.mark.model


def chat(text):
    return [{"role": "user", "content": text}]


def test_batched_generation_keeps_each_items_own_params(llama_engine):
    chats = [chat(f"Write a long story about a cat called number {i}.") for i in range(6)]
    params = [SamplingParams(max_tokens=4 + 3 * i, temperature=0.8, seed=i) for i in range(6)]
    out = llama_engine.generate(chats, params)
    assert all(isinstance(g, Generation) and g.text.strip() for g in out)
    for g, p in zip(out, params):
        assert g.completion_tokens <= p.max_tokens
        if g.finish_reason == "length":
            assert g.completion_tokens == p.max_tokens
    assert sum(g.finish_reason == "length" for g in out) >= 3


def test_prefix_reuse_gives_the_same_text_as_without(model_path, harmless):
    chats = [critique_chat(harmless, chat(f"How do I do thing {i}?"), f"Just do thing {i}.",
                           harmless.critique_revision[i].critique) for i in range(4)]
    params = [SamplingParams(max_tokens=24, temperature=0.0)] * 4
    texts = {}
    for share in (True, False):
        with LlamaCppEngine(str(model_path), EngineOptions(ctx=2048, parallel=1)) as engine:
            engine.decoder.reuse_kv = share
            texts[share] = [g.text for g in engine.generate(chats, params)]
            reused = engine.decoder.stats["prefix_reused"]
        assert (reused > 1000) is share
    assert texts[True] == texts[False]


def test_an_items_seed_not_its_neighbours_decides_its_text(model_path):
    target = chat("Name a colour and a fruit.")
    with LlamaCppEngine(str(model_path), EngineOptions(ctx=1024, parallel=1)) as engine:
        alone = engine.generate([target], [SamplingParams(max_tokens=16, seed=5)])[0].text
        crowd = engine.generate([chat("Hello"), target, chat("Bye")],
                                [SamplingParams(max_tokens=16, seed=s) for s in (1, 5, 2)])[1].text
        other = engine.generate([target], [SamplingParams(max_tokens=16, seed=6)])[0].text
    assert alone == crowd
    assert alone != other


def test_choice_logprobs_scores_whole_option_strings(llama_engine):
    q = chat("Which is a fruit?\n(A) apple\n(B) hammer\nAnswer with (A) or (B).")
    (ab,), (ba,) = (llama_engine.choice_logprobs([q], [o], cue="The answer is: ")
                    for o in (["(A)", "(B)"], ["(B)", "(A)"]))
    assert all(math.isfinite(x) and x < 0 for x in ab)
    assert ab == pytest.approx(ba[::-1], abs=0.05)
    p_a = 1 / (1 + math.exp(ab[1] - ab[0]))
    assert 0 < p_a < 1
    # With and without a leading space the option is tokenized differently; both score.
    (spaced,) = llama_engine.choice_logprobs([q], [[" (A)", " (B)"]], cue="The answer is:")
    assert all(math.isfinite(x) for x in spaced)


def test_choice_logprobs_batched_agrees_with_one_at_a_time(model_path):
    qs = [chat(f"Question {i}: which is safer?\n(A) wear a helmet\n(B) ride blindfolded\n"
               "Answer with (A) or (B).") for i in range(5)]
    opts = [["(A)", "(B)"]] * 5
    with LlamaCppEngine(str(model_path), EngineOptions(ctx=1024, parallel=4)) as engine:
        batched = engine.choice_logprobs(qs, opts, cue="The answer is: ")
        single = [engine.choice_logprobs([q], [o], cue="The answer is: ")[0] for q, o in zip(qs, opts)]
    for b, s in zip(batched, single):
        # Batched kernels round differently; the A-vs-B margin stays within a few hundredths.
        assert (b[0] - b[1]) == pytest.approx(s[0] - s[1], abs=0.15)


def test_options_the_vocabulary_cannot_tell_apart_are_an_item_error(llama_engine):
    out = llama_engine.choice_logprobs([chat("Pick one.")] * 2, [["(A)", "(A)"], ["(A)", "(B)"]])
    assert isinstance(out[0], ItemError) and "cannot tell the options" in out[0].message
    assert isinstance(out[1], list)


def test_on_disk_prefix_cache_starts_warm_with_the_same_results(model_path, harmless, tmp_path):
    chats = [critique_chat(harmless, chat(f"How do I do thing {i}?"), f"Just do thing {i}.",
                           harmless.critique_revision[i].critique) for i in range(3)]
    params = [SamplingParams(max_tokens=16, temperature=0.0)] * 3
    runs = []
    for _ in range(2):
        with LlamaCppEngine(str(model_path), EngineOptions(ctx=2048, parallel=2,
                                                           prefix_cache=str(tmp_path))) as engine:
            runs.append(([g.text for g in engine.generate(chats, params)], dict(engine.decoder.stats)))
    (cold_texts, cold), (warm_texts, warm) = runs
    assert cold["prefix_from_disk"] == 0 and warm["prefix_from_disk"] > 300
    assert warm["prompt_tokens"] < cold["prompt_tokens"] - 300
    assert warm_texts == cold_texts
    assert len(list(tmp_path.glob("prefix-*.kv"))) == 1
