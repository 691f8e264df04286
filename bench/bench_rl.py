"""RL-CAI benchmark: PM training pairs/s, PPO steps/s and peak RSS on the tiny model (CPU).

Baselines, in the same run: TRL's RewardTrainer (hard labels) on the same pairs, LoRA config
and batch for the PM; TRL's GRPO through ``cai rl --algo grpo`` with the same prompts per
step and answer length, for context next to PPO (a different algorithm: no ratio is claimed).
Each arm runs in its own process; peak RSS is that process's.

Run: ``make bench`` or ``python bench/bench_rl.py --steps 6``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_sft import MODEL, child  # noqa: E402

PAIRS = str(ROOT / "tests" / "data" / "pm_pairs.jsonl")
SL = str(ROOT / "tests" / "data" / "sl_records.jsonl")
PROMPTS = str(ROOT / "data" / "redteam_demo.jsonl")
BATCH = 4
CAI = [sys.executable, "-m", "cai_tools.cli.main"]


def reward_trainer_arm(steps: int, out: str) -> None:
    """The PM baseline, in its own process: TRL's RewardTrainer with hard labels."""
    from cai_tools.train.hf_models import quiet_libraries

    quiet_libraries()
    import time

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    from cai_tools.train.hf_models import load_reward_model, load_tokenizer
    from cai_tools.train.runs import targets_for
    from cai_tools.train.preferences import load_preferences

    pairs, _ = load_preferences([PAIRS], eval_fraction=0.0, seed=0)
    data = Dataset.from_list([{"prompt": p.chosen[:-1], "chosen": p.chosen[-1:], "rejected": p.rejected[-1:]}
                              for p in pairs])
    tok = load_tokenizer(MODEL)
    model = load_reward_model(MODEL, torch.float32)
    model.config.pad_token_id = tok.pad_token_id  # TRL pads on the right and pools by pad id
    args = RewardConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH,
                        learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[],
                        use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True, seed=0)
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                   target_modules=targets_for("llama"), task_type="SEQ_CLS"))
    start = time.perf_counter()
    trainer.train()
    Path(out, "bench.json").write_text(json.dumps({"train_s": time.perf_counter() - start}))


def _median_and_range(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def log_elapsed(run: Path) -> float:
    return json.loads((run / "log.jsonl").read_text().splitlines()[-1])["elapsed_s"]


def step_time(run: Path) -> float:
    """Seconds spent in training steps, from TRL's per-step 'step_time' log entries."""
    return sum(json.loads(x).get("step_time", 0.0) for x in (run / "log.jsonl").read_text().splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each PM trainer (medians and ranges)")
    ap.add_argument("--arm", choices=["reward-trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        reward_trainer_arm(args.steps, args.out)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    try:
        def pm_arms(tag: str, env: dict[str, str] | None = None) -> dict:
            """Both PM trainers on the same pairs, each in its own process: pairs/s in training
            and the process's peak RSS."""
            _, base_rss = child([sys.executable, __file__, "--arm", "reward-trainer", "--steps",
                                 str(args.steps), "--out", str(tmp / f"rt{tag}")], env)
            base_s = json.loads((tmp / f"rt{tag}" / "bench.json").read_text())["train_s"]
            _, pm_rss = child(CAI + ["build-pm", "--data", PAIRS, "--out", str(tmp / f"pm{tag}"),
                                     "--eval-fraction", "0", "--max-steps", str(args.steps),
                                     "--batch-size", str(BATCH), "-q"], env)
            return {"baseline_pairs_per_s": pairs / base_s, "cai_pairs_per_s": pairs / log_elapsed(tmp / f"pm{tag}"),
                    "baseline_peak_rss_mib": base_rss, "cai_peak_rss_mib": pm_rss}

        pairs = args.steps * BATCH
        # Peak RSS of the same run varies by a few hundred MiB from run to run (glibc's heap):
        # each arm runs --repeats times, and the medians and ranges are reported.
        runs = [pm_arms(str(i)) for i in range(args.repeats)]
        pm = tmp / "pm0"
        # Both again with glibc's mmap threshold pinned (no dynamic raise): does the memory gap
        # between them survive when freed blocks of varying batch widths are not kept in the heap?
        pinned = pm_arms("-mmap", {"MALLOC_MMAP_THRESHOLD_": "65536"})
        sft = tmp / "sft"
        child(CAI + ["sft", "--data", SL, "--out", str(sft), "--max-steps", "1", "-q"])
        rl_args = ["--policy", str(sft), "--pm", str(pm), "--prompts", PROMPTS, "--max-steps", str(args.steps),
                   "--batch-size", "2", "--max-new-tokens", "24", "-q"]
        ppo_wall, ppo_rss = child(CAI + ["rl", "--out", str(tmp / "ppo"), *rl_args])
        grpo_wall, grpo_rss = child(CAI + ["rl", "--algo", "grpo", "--num-generations", "2",
                                           "--out", str(tmp / "grpo"), *rl_args])
        result = {
            "model": Path(MODEL).name, "device": "cpu", "steps": args.steps,
            "pm": {"batch_pairs": BATCH, "repeats": args.repeats,
                   **{key: _median_and_range([r[key] for r in runs]) for key in runs[0]},
                   "speedup": round(statistics.median(r["cai_pairs_per_s"] / r["baseline_pairs_per_s"] for r in runs), 3),
                   "memory_ratio": round(statistics.median(r["cai_peak_rss_mib"] / r["baseline_peak_rss_mib"]
                                                           for r in runs), 3),
                   "with_MALLOC_MMAP_THRESHOLD_65536": {key: round(value, 3) for key, value in pinned.items()}},
            "ppo": {"prompts_per_step": 2, "max_new_tokens": 24,
                    "steps_per_s": round(args.steps / log_elapsed(tmp / "ppo"), 4),
                    "peak_rss_mib": round(ppo_rss), "wall_s": round(ppo_wall, 1)},
            "grpo_trl_for_context": {"prompts_per_step": 2, "num_generations": 2,
                                     "steps_per_s": round(args.steps / step_time(tmp / "grpo"), 4),
                                     "peak_rss_mib": round(grpo_rss), "wall_s": round(grpo_wall, 1)},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "rl.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
