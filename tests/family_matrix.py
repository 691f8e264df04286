"""Every step on one family's tiny model, in one process: ``python tests/family_matrix.py FAMILY WORK``.

Prints one JSON object: per step "pass" or the error, the export round trip's agreement with
PEFT's logits, how the judge's options tokenize, the answers' template markup (there must be
none) and what ``cai models check`` says. ``tests/test_families.py`` runs it per family; the
steps are the library calls the CLI makes, with tiny sizes (random weights: plumbing, not text).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.family_models import BY_NAME, ROOT, build  # noqa: E402

MARKUP = ("<think>", "</think>", "<|channel|>", "<|message|>", "<start_of_turn>", "<end_of_turn>", "[INST]",
          "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|eot_id|>", "<|turn>", "<|channel>",
          "<｜Assistant｜>", "<|start_of_role|>", "<|user|>", "<|assistant|>")
PROMPTS = [
    {"id": "p1", "prompt": "How can I get into my ex's email account without them noticing?"},
    {"id": "p2", "messages": [{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": "Explain photosynthesis to a ten-year-old."}]},
    {"id": "p3", "messages": [{"role": "user", "content": "Hi!"}, {"role": "user", "content": "What's 2+2?"}]},
]
TRAINABLE_SKIP = "not trainable from GGUF"


def write_jsonl(path: Path, records) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def texts_of(records) -> list[str]:
    """Every answer, critique and revision the steps wrote."""
    out = []
    for r in records:
        out += [r.get("response", "")] + list(r.get("responses") or [])
        for h in r.get("history") or []:
            out += [h.get("critique", ""), h.get("revision", "")]
    return [t for t in out if t]


class Matrix:
    def __init__(self, family: str, work: Path):
        self.family, self.work = family, work
        self.report: dict = {"family": family, "steps": {}, "seconds": {}}

    def step(self, name: str, fn):
        start = time.monotonic()
        try:
            result = fn()
            self.report["steps"][name] = "pass"
            return result
        except Exception as exc:   # the report says which step failed and why
            from cai_tools.errors import CaiError

            line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.report["steps"][name] = line if isinstance(exc, CaiError) else line + " | " + \
                traceback.format_exc().splitlines()[-3].strip()
            return None
        finally:
            self.report["seconds"][name] = round(time.monotonic() - start, 2)


def run(family: str, work: Path) -> dict:
    from cai_tools.constitutions.constitution import load_constitution
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.sl.critique import critique
    from cai_tools.sl.generate import generate
    from cai_tools.sl.judge import JudgeSettings, judge
    from cai_tools.sl.revise import revise
    from cai_tools.sl.sampling import Sampling

    work.mkdir(parents=True, exist_ok=True)
    m = Matrix(family, work)
    model = str(build(family, ROOT / "models" / "families"))
    constitution = load_constitution("harmless")
    sampling = Sampling(max_tokens=12)
    opts = EngineOptions(ctx=2048, parallel=4)

    from cai_tools.models.check import check_model
    m.report["check"] = m.step("models check", lambda: check_model(model))

    engine = m.step("load", lambda: LlamaCppEngine(model, opts))
    if engine is None:
        return m.report
    gen = m.step("generate", lambda: list(generate(PROMPTS, engine, n=2, sampling=sampling, seed=0)))
    crit = m.step("critique", lambda: list(critique(gen, engine, constitution, sampling=sampling, seed=0)))
    rev = m.step("revise --rounds 2", lambda: list(revise(gen, engine, constitution, rounds=2, sampling=sampling,
                                                          seed=0)))
    judged = m.step("judge", lambda: list(judge(gen, [engine], constitution, JudgeSettings())))
    m.step("judge --cot", lambda: list(judge(gen[:1], [engine], constitution, JudgeSettings(
        cot=True, clamp=(0.4, 0.6), cot_sampling=Sampling(max_tokens=8, temperature=0.0)))))
    m.step("judge-check", lambda: _judge_check(engine, constitution))
    thinking = []
    if engine.template.quirks.reasoning is not None:
        thinking = m.step("generate --reasoning on", lambda: _think(model, sampling)) or []
    engine.close()
    m.report["markup"] = sorted({mark for t in texts_of((gen or []) + (crit or []) + (rev or []) + thinking)
                                 for mark in MARKUP if mark in t})
    if _trainable(model):
        m.step("sampling and training tokenize alike", lambda: _same_tokens(model))
    sl = write_jsonl(work / "sl.jsonl", rev or [])
    prefs = write_jsonl(work / "prefs.jsonl", judged or [])
    prompts = write_jsonl(work / "prompts.jsonl", PROMPTS)
    if not _trainable(model):
        for name in ("sft", "build-pm", "score", "rl ppo", "rl dpo", "export lora", "export merged",
                     "generate with lora", "generate merged", "round trip"):
            m.report["steps"][name] = TRAINABLE_SKIP
        m.report["trainable"] = m.step("training refused in one line", lambda: _refused(model, work, sl))
        return m.report
    _training(m, model, work, sl, prefs, prompts, opts)
    return m.report


def _think(model: str, sampling) -> list[dict]:
    """Two-pass generation with thinking on: reasoning (budgeted) kept apart from the answer."""
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.sl.generate import generate

    with LlamaCppEngine(model, EngineOptions(ctx=1024, parallel=2, reasoning="on", max_thinking_tokens=8)) as eng:
        out = list(generate(PROMPTS[:2], eng, sampling=sampling, seed=0))
    assert all(r["_cai"]["reasoning"]["generate"] for r in out), out[0].get("_cai")
    return out


def _same_tokens(model: str) -> bool:
    """The prompt llama.cpp samples from and the one training sees are the same token ids."""
    from cai_tools.engines import EngineOptions
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.train.chat_tokens import prompt_ids
    from cai_tools.train.hf_models import load_tokenizer

    tokenizer = load_tokenizer(model)
    with LlamaCppEngine(model, EngineOptions(ctx=512, parallel=1)) as eng:
        for record in PROMPTS:
            from cai_tools.conversation import prompt_messages

            chat = prompt_messages(record)
            cpp = eng.tokenize_prompt(eng.render(chat)[0])
            hf = prompt_ids(tokenizer, chat)
            assert cpp == hf, (record["id"], cpp[:12], hf[:12])
    return True


def _judge_check(engine, constitution):
    from cai_tools.eval.judge_check import check_judge, load_labelled
    from cai_tools.sl.judge import JudgeSettings

    pairs = load_labelled(str(ROOT / "data" / "judge_check.jsonl"))[:4]
    summary, outcomes, _ = check_judge(pairs, [engine], constitution, JudgeSettings(), bootstrap=50)
    assert len(outcomes) == 4
    return summary["pairs"]


def _trainable(model: str) -> bool:
    from cai_tools.errors import ModelError
    from cai_tools.train.hf_models import base_kind

    try:
        base_kind(model)
        return True
    except ModelError as exc:
        return "cannot train" not in str(exc)


def _refused(model, work, sl):
    from cai_tools.errors import ModelError
    from cai_tools.train.sft import SFTConfig, train_sft

    try:
        train_sft(SFTConfig(base=model, data=[str(sl)], out=str(work / "sft"), max_steps=1))
    except ModelError as exc:
        assert "\n" not in str(exc) and "hf:" in str(exc), str(exc)
        return str(exc)
    raise AssertionError("training from an untrainable architecture did not refuse")


def _training(m: Matrix, model, work, sl, prefs, prompts, opts):
    from cai_tools.engines.base import SamplingParams
    from cai_tools.engines.llama_cpp_engine import LlamaCppEngine
    from cai_tools.train.export import export_lora, export_merged
    from cai_tools.train.pm import PMConfig, train_pm
    from cai_tools.train.rl_config import RLConfig
    from cai_tools.train.rl_ppo import train_ppo
    from cai_tools.train.rl_trl import train_trl
    from cai_tools.train.score import RewardModel, score
    from cai_tools.train.sft import SFTConfig, train_sft

    small = dict(base=model, batch_size=2, max_length=160, seed=0, lora_r=4, lora_alpha=8)
    sft = work / "sft"
    m.step("sft", lambda: train_sft(SFTConfig(**small, data=[str(sl)], all_rounds=True, quality_filter=False,
                                              out=str(sft), max_steps=2, learning_rate=2e-2)))
    pm = work / "pm"
    m.step("build-pm", lambda: train_pm(PMConfig(**small, data=[str(prefs)], out=str(pm), max_steps=1,
                                                 eval_fraction=0.0)))
    m.step("score", lambda: _score(RewardModel, score, pm, prompts))
    rl = dict(small, policy=str(sft), max_steps=1, max_new_tokens=6, num_generations=2)
    del rl["base"]
    m.step("rl ppo", lambda: train_ppo(RLConfig(**rl, algo="ppo", pm=str(pm), prompts=[str(prompts)],
                                                out=str(work / "ppo"))))
    m.step("rl dpo", lambda: train_trl(RLConfig(**rl, algo="dpo", data=[str(prefs)], out=str(work / "dpo"))))
    lora, merged = work / "sft-lora.gguf", work / "sft-merged.gguf"
    m.step("export lora", lambda: export_lora(str(sft), str(lora)))
    m.step("export merged", lambda: export_merged(str(sft), str(merged), "f16"))

    def generate_with(**kw):
        from cai_tools.engines import EngineOptions

        with LlamaCppEngine(kw.pop("path", model), EngineOptions(ctx=512, parallel=2, **kw)) as eng:
            (g,) = eng.generate([[{"role": "user", "content": "Say hello."}]], [SamplingParams(max_tokens=6)])
            assert hasattr(g, "text"), g
    m.step("generate with lora", lambda: generate_with(lora=str(lora)))
    m.step("generate merged", lambda: generate_with(path=str(merged)))
    m.report["round_trip"] = m.step("round trip", lambda: _round_trip(model, sft, lora))


def _score(RewardModel, score, pm, prompts):
    recs = [dict(r, response="A short answer.") for r in orjson_lines(prompts)]
    out = list(score(recs, RewardModel(str(pm))))
    assert all(isinstance(r.get("reward"), float) for r in out), out[0]


def orjson_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _round_trip(model: str, run: Path, lora: Path) -> dict:
    """llama.cpp (base GGUF + exported adapter) against PEFT on the same tokens: top-1 agreement
    and mean per-position correlation of the logits, and the correlation of the adapter's own
    effect (tuned minus base) between the two."""
    import numpy as np
    import torch
    from peft import PeftModel

    from tests.logits import agreement, llama_cpp_logits

    from cai_tools.train.chat_tokens import prompt_ids
    from cai_tools.train.hf_models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(run))
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. "
                                  "Name three fruits and say why you like them."}])
    model_hf = PeftModel.from_pretrained(load_causal_lm(model, torch.float32), str(run)).eval()
    with torch.no_grad():
        hf_tuned = model_hf(input_ids=torch.tensor([ids])).logits[0].double().numpy()
        with model_hf.disable_adapter():
            hf_base = model_hf(input_ids=torch.tensor([ids])).logits[0].double().numpy()

    cpp_base, cpp_tuned = llama_cpp_logits(model, ids), llama_cpp_logits(model, ids, str(lora))
    top1, corr = agreement(cpp_tuned, hf_tuned)
    effect = float(np.corrcoef((cpp_tuned - cpp_base).ravel(), (hf_tuned - hf_base).ravel())[0, 1])
    size = float(np.abs(hf_tuned - hf_base).mean())
    return {"tokens": len(ids), "top1": round(top1, 4), "corr": round(corr, 6), "effect_corr": round(effect, 4),
            "effect_size": round(size, 5)}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name, work_dir = sys.argv[1], Path(sys.argv[2])
    assert name in BY_NAME, f"unknown family {name}"
    print(json.dumps(run(name, work_dir)))
