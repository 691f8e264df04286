"""SFT benchmark: training tokens/s and peak RSS of ``cai sft`` on the tiny model (CPU), and
export times.

Baseline, written here: the same LoRA run (same base, data, tokenization, batch, steps) with
transformers' ``Trainer``, the standard route. Each arm runs in its own process so peak RSS
(ru_maxrss of the child) is its own. Tokens/s counts non-padding tokens of the training steps
only; model loading is reported separately as wall time.

Run: ``make bench`` or ``python bench/bench_sft.py --steps 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = str(ROOT / "tests" / "data" / "sl_records.jsonl")
MIX = str(ROOT / "tests" / "data" / "helpful_messages.jsonl")
BATCH = 4


def child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command (with ``env`` added to the environment); (wall seconds, peak RSS of that
    child in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def trainer_arm(steps: int, out: str) -> None:
    """The baseline, run in its own process: transformers.Trainer on the same examples."""
    from cai_tools.train.hf_models import quiet_libraries

    quiet_libraries()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from cai_tools.train.hf_models import load_causal_lm, load_tokenizer
    from cai_tools.train.runs import targets_for
    from cai_tools.train.sft_data import IGNORE, load_examples, tokenize_example

    tok = load_tokenizer(MODEL)
    examples = load_examples([DATA], all_rounds=True, mix=[f"{MIX}:1"], seed=0)
    rows = [tokenize_example(tok, ex, 512) for ex in examples]
    model = load_causal_lm(MODEL, torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=targets_for("llama"), task_type="CAUSAL_LM"))

    seen = {"tokens": 0}

    def collate(batch):
        seen["tokens"] += sum(len(ids) for ids, _ in batch)
        width = max(len(ids) for ids, _ in batch)
        pad = tok.pad_token_id
        return {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch]),
                "labels": torch.tensor([labs + [IGNORE] * (width - len(labs)) for _, labs in batch]),
                "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])}

    args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH,
                             learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=True, bf16=False, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    Path(out, "bench.json").write_text(json.dumps({"train_s": train_s, "tokens": seen["tokens"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--arm", choices=["trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm == "trainer":
        trainer_arm(args.steps, args.out)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    try:
        base_wall, base_rss = child([sys.executable, __file__, "--arm", "trainer", "--steps",
                                     str(args.steps), "--out", str(tmp / "trainer")])
        base = json.loads((tmp / "trainer" / "bench.json").read_text())
        run = tmp / "run"
        cai_wall, cai_rss = child([sys.executable, "-m", "cai_tools.cli.main", "sft", "--base", MODEL,
                                   "--data", DATA, "--all-rounds", "--mix", f"{MIX}:1", "--out", str(run),
                                   "--max-steps", str(args.steps), "--batch-size", str(BATCH),
                                   "--save-every", str(args.steps), "-q"])
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        cai_tok_s = sum(e["tokens"] for e in log) / log[-1]["elapsed_s"]
        timings = {}
        for name, extra in (("lora", []), ("merged_q8_0", ["--merged", "--type", "q8_0"]),
                            ("merged_f16", ["--merged", "--type", "f16"])):
            timings[name], _ = child([sys.executable, "-m", "cai_tools.cli.main", "export", str(run),
                                      "--gguf", str(tmp / f"{name}.gguf"), "-q", *extra])
        base_tok_s = base["tokens"] / base["train_s"]
        result = {
            "model": Path(MODEL).name, "steps": args.steps, "batch_size": BATCH, "device": "cpu",
            "baseline_trainer_tok_per_s": round(base_tok_s, 1),
            "cai_sft_tok_per_s": round(cai_tok_s, 1),
            "speedup": round(cai_tok_s / base_tok_s, 3),
            "baseline_trainer_peak_rss_mib": round(base_rss),
            "cai_sft_peak_rss_mib": round(cai_rss),
            "baseline_trainer_wall_s": round(base_wall, 1),
            "cai_sft_wall_s": round(cai_wall, 1),
            "cai_sft_loading_s": round(cai_wall - log[-1]["elapsed_s"], 1),
            "export_wall_s": {k: round(v, 1) for k, v in timings.items()},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sft.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
