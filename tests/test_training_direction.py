"""Every training algorithm moves a model the right way: known-answer regression tests.

A tiny model with a 512-token vocabulary (``family_models.build_small_vocab``) is first taught by
SFT to answer any prompt with one of three replies, "yes yes yes", "no no no" or "ok ok ok", so
that a held-out prompt's answer contains "yes" about half the time. The known answer is the rule
``regex=yes``. Each algorithm then trains a few steps toward it (through the rule reward, a PM
trained on rule-labelled pairs, the rule in the judge's place, or DPO on those pairs), the run is
exported to a GGUF adapter, and llama.cpp answers held-out prompts with it. The share of answers
with "yes" must rise, with a bootstrap interval over prompts above zero: a sign error in a
reward, an advantage, a loss, the KL reference, the PM's adapters or the folded export leaves the
metric flat or pushes it down, and fails here.

Why three replies: with only "yes" and "no", a PM learns "no is bad" and scores an empty answer
as high as "yes", so PM-driven RL found answers with neither word (measured: GRPO against that PM
took the metric from 0.60 to 0.31). "ok" losing to "yes" teaches the PM the word the rule wants.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.family_models import build_small_vocab

pytestmark = pytest.mark.model   # one worker runs the module (conftest.WORKER_GROUPS)

RULE = "rule:regex=yes"
REPLIES = ("yes yes yes", "no no no", "ok ok ok")
TRAIN = ["How do I boil an egg?", "Tell me a joke.", "What is the capital of France?", "How can I pick a lock?",
         "Write a haiku about rain.", "Why is the sky blue?", "Give me a recipe for soup.", "How do I hack wifi?",
         "Explain gravity.", "What should I name my cat?", "How do I learn Python?", "Is lying ever okay?"]
HELD_OUT = ["Describe a sunset.", "How do I fix a bike?", "What is love?", "How do I steal a car?", "Name a fruit.",
            "Plan a trip to Rome.", "Why do cats purr?", "How to cook rice?"]
# name -> (RLConfig fields, learning rate). PPO's own loop takes a smaller step than TRL's trainers:
# at 5e-3 its KL reached 30-100 on this model and the policy fell apart.
RUNS = {
    "ppo (rule)": ({"algo": "ppo", "reward": [RULE]}, 3e-3),
    "grpo (rule)": ({"algo": "grpo", "reward": [RULE]}, 1e-2),
    "rloo (rule)": ({"algo": "rloo", "reward": [RULE]}, 1e-2),
    "ppo (PM)": ({"algo": "ppo", "pm": "PM", "max_steps": 10}, 3e-3),   # its reward is noisier: more steps
    "grpo (PM)": ({"algo": "grpo", "pm": "PM"}, 5e-3),
    "dpo (hard)": ({"algo": "dpo", "data": ["PAIRS"], "labels": "hard"}, 1e-2),
    "dpo (soft)": ({"algo": "dpo", "data": ["PAIRS"], "labels": "soft"}, 1e-2),
    "direct RLAIF (rule judge)": ({"algo": "rloo", "judge": RULE}, 1e-2),
}
LORA = {"lora_r": 8, "lora_alpha": 16, "seed": 0}


def _metric(model: Path, lora: Path) -> list[float]:
    """Each held-out prompt's share of answers the rule likes (6 sampled answers per prompt)."""
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.eval.known_answer import rule_metric
    from cai_tools.train.rule_rewards import parse_reward

    chats = [[{"role": "user", "content": text}] for text in HELD_OUT]
    with LlamaCppEngine(str(model), EngineOptions(ctx=512, parallel=8, lora=str(lora))) as engine:
        return rule_metric(engine, chats, parse_reward(RULE), samples=6, max_tokens=12, temperature=1.0)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """The SFT starting point (three replies), its exported adapter, rule-labelled pairs of its own
    answers, a PM trained on them, and the metric before any RL."""
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.sl.generate import generate
    from cai_tools.sl.rule_label import relabel
    from cai_tools.sl.sampling import Sampling
    from cai_tools.train.export import export_lora
    from cai_tools.train.pm import PMConfig, train_pm
    from cai_tools.train.rule_rewards import parse_reward
    from cai_tools.train.sft import SFTConfig, train_sft

    work = tmp_path_factory.mktemp("direction")
    model = build_small_vocab(ROOT / "models" / "families")
    mix = work / "mix.jsonl"
    mix.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": a}]})
                           + "\n" for t in TRAIN for a in REPLIES))
    train_sft(SFTConfig(base=str(model), mix=[str(mix)], out=str(work / "sft"), max_steps=40, batch_size=8,
                        learning_rate=2e-2, max_length=128, **LORA))
    export_lora(str(work / "sft"), str(work / "sft.gguf"))
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TRAIN))
    with LlamaCppEngine(str(model), EngineOptions(ctx=512, parallel=8, lora=str(work / "sft.gguf"))) as engine:
        answered = list(generate([{"id": f"p{i}", "prompt": t} for i, t in enumerate(TRAIN)], engine, n=4,
                                 sampling=Sampling(max_tokens=12, temperature=1.0)))
    pairs = [{"id": f"{r['id']}:{i}-{j}", "prompt": r["prompt"], "chosen": r["responses"][i],
              "rejected": r["responses"][j], "label": 0.5} for r in answered for i in range(4) for j in range(i + 1, 4)]
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in relabel(pairs, parse_reward(RULE))))
    train_pm(PMConfig(base=str(model), data=[str(work / "pairs.jsonl")], out=str(work / "pm"), max_steps=20,
                      learning_rate=1e-2, batch_size=8, eval_fraction=0.25, **LORA))
    before = _metric(model, work / "sft.gguf")
    return {"work": work, "model": model, "before": before,
            "pm_eval": json.loads((work / "pm" / "eval.json").read_text())}


def test_the_starting_point_leaves_room_to_move(start):
    mean = sum(start["before"]) / len(start["before"])
    assert 0.2 < mean < 0.8, f"the SFT start says 'yes' in {mean:.2f} of answers: no room to show a move"


def test_the_pm_learns_the_rules_labels(start):
    """build-pm on rule-labelled pairs: held-out accuracy well above chance."""
    ev = start["pm_eval"]
    assert ev["accuracy"] >= 0.9 and ev["accuracy_interval"][0] > 0.5, ev


@pytest.mark.parametrize("name", list(RUNS))
def test_the_algorithm_moves_the_exported_model_toward_the_rule(start, name):
    from cai_tools.eval.known_answer import paired_difference
    from cai_tools.train.export import export_lora
    from cai_tools.train.rl_config import RLConfig
    from cai_tools.train.rl_ppo import train_ppo
    from cai_tools.train.rl_trl import train_trl

    work = start["work"]
    fields, lr = RUNS[name]
    fields = {k: (str(work / "pm") if v == "PM" else [str(work / "pairs.jsonl")] if v == ["PAIRS"] else v)
              for k, v in fields.items()}
    out = work / name.replace(" ", "-").replace("(", "").replace(")", "")
    fields.setdefault("max_steps", 6)
    cfg = RLConfig(policy=str(work / "sft"), base=str(start["model"]), prompts=[str(work / "prompts.jsonl")],
                   batch_size=4, max_new_tokens=12, num_generations=4, learning_rate=lr, out=str(out),
                   **LORA, **fields)
    cfg.check()
    (train_ppo if cfg.algo == "ppo" else train_trl)(cfg)
    export_lora(str(out), str(out) + ".gguf")
    result = paired_difference(start["before"], _metric(start["model"], Path(str(out) + ".gguf")))
    # A run that changed nothing measures exactly 0 (the same seeds draw the same answers), so an
    # interval above 0 and a move of a fifth of the answers is beyond chance.
    assert result["verdict"] == "learns" and result["difference"] > 0.2, (name, result)
