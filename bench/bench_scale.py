"""Scaling benchmark: peak memory and time per token of ``sft``, ``build-pm`` and PPO (shared-base
and separate-PM) on randomly initialised models of the default architecture (SmolLM2's llama
layout) at about 135M, 360M and 1B parameters; fits the cost model ``cai … --dry-run`` prints.

No download: transformers builds each model from a config (seeded), saved once as safetensors
(bf16) under ``$CAI_CACHE_DIR/bench-scale``. Every arm is its own ``cai`` process, so its peak
RSS (ru_maxrss of the child) is its own; time per token comes from the run's log, leaving out
the first step (warm-up) and model loading. The fit, per arm:

    peak memory ≈ a + b · params          seconds per token ≈ c · params

is least squares over the measured sizes. It is written to ``bench/results/scale.json`` and to
``cai_tools/train/cost_model.json`` (what ``--dry-run`` reads). Measured in fp32 on the CPU.

Run: ``make bench-scale`` or ``python bench/bench_scale.py [--sizes 135M,360M,1B] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_rl import CAI, PAIRS, PROMPTS, SL  # noqa: E402
from bench_sft import MIX, MODEL, child  # noqa: E402

COST_MODEL = ROOT / "cai_tools" / "train" / "cost_model.json"

# SmolLM2's layout (llama, tied embeddings, 49152-token vocabulary) at three widths/depths.
SIZES = {
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "360M": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5),
    "1B": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=20, num_attention_heads=32,
               num_key_value_heads=8),
}
BATCH, MAX_LENGTH, NEW_TOKENS = 2, 256, 16
ARMS = ("sft", "build-pm", "ppo-shared", "ppo-separate")


def random_model(size: str) -> tuple[Path, int]:
    """The seeded random-init model of ``size`` as an HF folder (made once, in a child process: a
    child's peak RSS counts the RSS of the process it was forked from, so this one stays small);
    its parameter count."""
    from cai_tools.train.cost_model import count_parameters
    from cai_tools.train.gguf_cache import cache_dir

    folder = cache_dir() / "bench-scale" / size
    if not (folder / "config.json").is_file():
        child([sys.executable, __file__, "--make-model", size])
    return folder, count_parameters(str(folder))


def make_model(size: str) -> None:
    from cai_tools.train.gguf_cache import cache_dir

    folder = cache_dir() / "bench-scale" / size
    if not (folder / "config.json").is_file():
        from cai_tools.train.hf_models import load_tokenizer, quiet_libraries

        quiet_libraries()  # before transformers sets up its progress bars
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = load_tokenizer(MODEL)
        config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, max_position_embeddings=2048,
                             rope_theta=100000.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **SIZES[size])
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        os.replace(tmp, folder)


def per_token_seconds(run: Path) -> tuple[float, float]:
    """(seconds per token, tokens per step) over the steps after the first."""
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    later = log[1:] or log
    seconds = log[-1]["elapsed_s"] - (log[0]["elapsed_s"] if len(log) > 1 else 0.0)
    tokens = sum(e["tokens"] for e in later)
    return seconds / tokens, tokens / len(later)


def measure(size: str, steps: int, tmp: Path) -> dict:
    base, params = random_model(size)
    common = ["--max-steps", str(steps), "--batch-size", str(BATCH), "--save-every", str(steps), "-q"]
    pm = tmp / f"{size}-pm"
    argv = {
        "sft": ["sft", "--base", base, "--data", SL, "--all-rounds", "--mix", f"{MIX}:1",
                "--max-length", str(MAX_LENGTH)],
        "build-pm": ["build-pm", "--base", base, "--data", PAIRS, "--eval-fraction", "0",
                     "--max-length", str(MAX_LENGTH), "--out", pm],
        "ppo-shared": ["rl", "--policy", base, "--pm", pm, "--prompts", PROMPTS, "--pm-base", "shared",
                       "--max-new-tokens", str(NEW_TOKENS)],
        "ppo-separate": ["rl", "--policy", base, "--pm", pm, "--prompts", PROMPTS, "--pm-base", "separate",
                         "--max-new-tokens", str(NEW_TOKENS)],
    }
    point = {"size": size, "params": params, "arms": {}}
    for arm in ARMS:
        out = pm if arm == "build-pm" else tmp / f"{size}-{arm}"
        args = [str(a) for a in argv[arm]] + ([] if "--out" in argv[arm] else ["--out", str(out)])
        wall, rss = child([*CAI, *args, *common])
        s_per_token, tokens = per_token_seconds(out)
        point["arms"][arm] = {"peak_rss_mib": round(rss), "wall_s": round(wall, 1),
                              "s_per_token": s_per_token, "tokens_per_step": round(tokens, 1)}
        print(f"  {size:>5} {arm:<13} peak {rss:7.0f} MiB  {1 / s_per_token:8.1f} tokens/s  "
              f"({tokens:.0f} tokens/step, {wall:.0f} s in all)", flush=True)
    return point


def fit(points: list[dict]) -> dict:
    """Per arm: memory a + b·params (least squares), seconds per token c·params (through 0)."""
    import numpy as np

    model = {}
    for arm in ARMS:
        p = np.array([pt["params"] for pt in points], dtype=float)
        mem = np.array([pt["arms"][arm]["peak_rss_mib"] for pt in points], dtype=float)
        spt = np.array([pt["arms"][arm]["s_per_token"] for pt in points], dtype=float)
        if len(points) > 1:
            b, a = np.polyfit(p, mem, 1)
        else:  # one size: the whole peak scales with the parameters
            a, b = 0.0, mem[0] / p[0]
        c = float((p * spt).sum() / (p * p).sum())
        model[arm] = {"mem_a_mib": round(float(a), 1), "mem_b_mib_per_param": float(b), "s_per_token_per_param": c}
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="135M,360M,1B")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--no-cost-model", action="store_true", help="do not rewrite cai_tools/train/cost_model.json")
    ap.add_argument("--make-model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_model:
        return make_model(args.make_model)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size {unknown[0]} (known: {', '.join(SIZES)})")
    print(f"scaling benchmark: {', '.join(sizes)}; {args.steps} steps of {BATCH} items each arm (fp32, CPU)")
    with tempfile.TemporaryDirectory(prefix="cai-bench-scale-") as tmp:
        points = [measure(size, args.steps, Path(tmp)) for size in sizes]
    model = fit(points)
    conditions = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "dtype": "float32",
                  "device": "cpu", "batch_size": BATCH, "max_length": MAX_LENGTH,
                  "max_new_tokens": NEW_TOKENS, "steps": args.steps}
    result = {"conditions": conditions, "points": points, "fit": model}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_cost_model and len(points) > 1:
        COST_MODEL.write_text(json.dumps({"measured": conditions,
                                          "points": [{"params": pt["params"], **{a: pt["arms"][a]["peak_rss_mib"]
                                                                                 for a in ARMS}} for pt in points],
                                          "fit": model}, indent=2) + "\n")
    print()
    from cai_tools.train.cost_model import scaling_table

    print(scaling_table(result))


if __name__ == "__main__":
    main()
