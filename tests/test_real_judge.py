"""cai judge on the real tiny model."""

from __future__ import annotations

import pytest

from cai_tools.engines import EngineOptions
from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
from cai_tools.sl.judge import JudgeSettings, judge
from conftest import jsonl, parse_jsonl, run_cai

pytestmark = pytest.mark.model

SAFE = "I can't help with breaking into a house, but a locksmith can help if you are locked out."
UNSAFE = "Sure: smash a back window at night when nobody is home, then climb in quietly."


def records(*pairs, same_id=False):
    return [{"id": "r" if same_id else f"r{i}", "prompt": "How do I get into a house that isn't mine?",
             "responses": list(p)} for i, p in enumerate(pairs)]


def test_labels_are_probabilities_and_swapping_gives_the_complement(llama_engine, harmless):
    # The same record id in both runs, so the same principles are drawn for the pair.
    settings = JudgeSettings(seed=1, ensemble=2)
    (ab,) = judge(records((SAFE, UNSAFE), same_id=True), [llama_engine], harmless, settings)
    (ba,) = judge(records((UNSAFE, SAFE), same_id=True), [llama_engine], harmless, settings)
    for out in (ab, ba):
        assert 0.5 <= out["label"] < 1
        for j in out["judgements"]:
            assert 0 < j["p_first_order"] < 1 and 0 < j["p_second_order"] < 1
    # Both records see the same two prompts per principle, in swapped roles.
    assert ab["chosen"] == ba["chosen"] and ab["rejected"] == ba["rejected"]
    assert ab["label"] == pytest.approx(ba["label"], abs=1e-12)
    for j_ab, j_ba in zip(ab["judgements"], ba["judgements"]):
        assert j_ab["p_first_order"] == j_ba["p_second_order"]


def test_same_seed_same_labels(model_path, harmless):
    def run():
        with LlamaCppEngine(str(model_path), EngineOptions(ctx=2048)) as engine:
            return [o["label"] for o in judge(records((SAFE, UNSAFE), ("Hello!", UNSAFE)),
                                              [engine], harmless, JudgeSettings(seed=4))]
    assert run() == run()


def test_generate_pairs_then_judge_from_the_cli_loads_as_a_preference_dataset(tmp_path):
    gen = run_cai("generate", "-n", "2", "--max-tokens", "24", "--seed", "3", "-q",
                  input=jsonl([{"prompt": "How can I cheat on a test?"}, {"prompt": "Tell me a joke."}]))
    assert gen.returncode == 0, gen.stderr
    out = run_cai("judge", "-q", input=gen.stdout)
    assert out.returncode == 0, out.stderr
    rows = parse_jsonl(out.stdout)
    assert len(rows) == 2
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(out.stdout)
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "label"} <= set(ds.column_names)
    assert all(0.5 <= x <= 1 for x in ds["label"])


def test_cot_judgement_is_clamped(llama_engine, harmless):
    (out,) = judge(records((SAFE, UNSAFE)), [llama_engine], harmless,
                   JudgeSettings(cot=True, clamp=(0.4, 0.6)))
    (j,) = out["judgements"]
    assert all(isinstance(r, str) for r in j["reasoning"])
    assert 0.5 <= out["label"] <= 0.6 + 1e-9


VARIED = [
    ("How do I get into a house that isn't mine?", SAFE, UNSAFE),
    ("What's a good name for a goldfish?", "Bubbles.", "Fish don't need names, that's silly and a waste of time."),
    ("My neighbour's dog barks all night and I haven't slept properly in a week. I've asked "
     "them twice. What can I do next that won't start a feud?",
     "Write a short, friendly note with specific times, then try mediation or the council's "
     "noise team if nothing changes.", "Poison the dog."),
    ("Explain recursion in one sentence.", "A function that calls itself on a smaller part of the "
     "problem until it reaches a case it can answer directly.", "Recursion is when recursion."),
    ("Can you help me cheat on my chemistry exam tomorrow?", "I won't help with cheating, but I can "
     "quiz you on the main topics tonight.", "Sure, write the formulas on your arm."),
]


def test_n_varied_comparisons_cost_no_more_than_n_times_one_and_agree(model_path, harmless):
    """Scheduling on the real engine: judged together, distinct comparisons of mixed lengths
    decode no more prompt tokens than judged one per call (the shared prefix counted once),
    and give the same labels up to kernel rounding."""
    recs = [{"id": f"v{i}", "prompt": p, "responses": [a, b]} for i, (p, a, b) in enumerate(VARIED)]

    def run(batch):
        with LlamaCppEngine(str(model_path), EngineOptions(ctx=2048, parallel=3)) as engine:
            out = list(judge(batch, [engine], harmless, JudgeSettings(seed=2)))
            return out, engine.decoder.stats["prompt_tokens"], len(engine.decoder.prefix)

    together, cost, prefix = run(recs)
    alone = [run([r]) for r in recs]
    assert cost <= sum(c for _, c, _ in alone) - (len(recs) - 1) * prefix
    assert prefix > 100  # the few-shot examples are shared, not decoded per comparison
    for t, (a, _, _) in zip(together, alone):
        assert t["label"] == pytest.approx(a[0]["label"], abs=1e-3)
