"""What a training run will cost, before it loads anything heavy (``--dry-run``).

``bench/bench_scale.py`` measures peak memory and seconds per token of ``sft``, ``build-pm`` and
PPO (shared-base and separate-PM) on random-init models of 135M-1B parameters and fits, per
arm, memory ≈ a + b·params and seconds per token ≈ c·params (``cost_model.json``, beside this
file). The fit was measured in fp32 on the CPU; other precisions scale the per-parameter memory
term by the bytes a weight takes (bf16 2 of 4, NF4 with double quantization about 0.56 of 4),
which is an extrapolation, and say so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ModelError

FIT_FILE = Path(__file__).with_name("cost_model.json")
BYTES_PER_WEIGHT = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "8bit": 1.0, "4bit": 0.5625}
EXTRAPOLATE_TO = (1.5e9, 3e9, 7e9, 8e9)
PPO_PROMPT_TOKENS = 256  # the prompt length a PPO estimate assumes


def count_parameters(base: str) -> int:
    """Parameters of a base from its file headers only: a GGUF's tensor table, or the headers of
    an HF folder's safetensors files."""
    path = Path(base)
    if path.is_file():
        from ..models.gguf_reading import gguf_reader
        from .hf_models import base_kind

        base_kind(base)   # what a real run checks first: a model GGUF that transformers can train
        try:   # the whole tensor table, read against the file's size: a truncated file is an error
            return sum(int(t.n_elements) for t in gguf_reader(path).tensors)
        except Exception as exc:  # the reader raises many types for a broken file
            raise ModelError(f"cannot read the tensor table of {base}: {exc}") from None
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{base}: no GGUF file or *.safetensors weights to count")
    from safetensors import safe_open

    total = 0
    for f in files:
        with safe_open(str(f), "np") as weights:  # reads the header; tensors stay on disk
            total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    return total


def load_fit() -> dict:
    if not FIT_FILE.is_file():
        raise ModelError(f"{FIT_FILE} is missing: run 'make bench-scale' to measure the cost model")
    return json.loads(FIT_FILE.read_text())


def estimate(arm: str, params: int, precision: str, tokens_per_step: float, fit: dict | None = None) -> dict:
    """Peak memory (MiB) and seconds per step of ``arm`` for a base of ``params`` parameters held
    in ``precision`` (float32, bfloat16, 8bit, 4bit); ``extrapolated`` when outside the measured
    sizes or precision."""
    fit = fit or load_fit()
    coef = fit["fit"][arm]
    scale = BYTES_PER_WEIGHT[precision] / BYTES_PER_WEIGHT["float32"]
    measured = [pt["params"] for pt in fit["points"]]
    mem = coef["mem_a_mib"] + coef["mem_b_mib_per_param"] * params * scale
    return {"peak_mib": mem, "s_per_step": coef["s_per_token_per_param"] * params * tokens_per_step,
            "extrapolated": precision != "float32" or not min(measured) * 0.9 <= params <= max(measured) * 1.1}


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def scaling_table(result: dict) -> str:
    """The README's tables: measured points, then the fit extrapolated (labelled)."""
    arms = list(result["fit"])
    lines = ["Measured (fp32, CPU, " + result["conditions"]["machine"] + "): peak memory; tokens/s",
             "", "| params | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for pt in result["points"]:
        cells = [f"{_gib(pt['arms'][a]['peak_rss_mib'])}; {1 / pt['arms'][a]['s_per_token']:.0f}" for a in arms]
        lines.append(f"| {pt['params'] / 1e6:.0f}M | " + " | ".join(cells) + " |")
    ratio_rows = [f"{pt['params'] / 1e6:.0f}M: shared-base PPO peak = "
                  f"{pt['arms']['ppo-shared']['peak_rss_mib'] / pt['arms']['sft']['peak_rss_mib']:.2f}× sft's, "
                  f"{pt['arms']['ppo-shared']['peak_rss_mib'] / pt['arms']['ppo-separate']['peak_rss_mib']:.2f}× "
                  "separate-PM PPO's" for pt in result["points"]]
    lines += ["", *ratio_rows, "", "Extrapolated from the fit (peak memory; not measured):", "",
              "| params | precision | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    fit = {"fit": result["fit"], "points": [{"params": pt["params"]} for pt in result["points"]]}
    for params in EXTRAPOLATE_TO:
        for precision in ("float32", "bfloat16", "4bit"):
            cells = [_gib(estimate(a, int(params), precision, 1, fit)["peak_mib"]) for a in arms]
            lines.append(f"| {params / 1e9:g}B | {precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dry_run_report(step: str, cfg) -> str:
    """What ``cai STEP --dry-run`` prints: the base's size and the estimate for these settings."""
    base = cfg.base
    if step == "rl":
        from .rl_policy import policy_source

        base = policy_source(cfg.policy)[0]
    params = count_parameters(base)
    precision = cfg.load_in or (cfg.dtype if cfg.dtype != "auto" else "float32")  # load_in is checked
    if step == "rl":
        from .rl_shared_pm import choose_pm_base

        mode = choose_pm_base(cfg.pm_base, cfg.pm, base) if cfg.pm else "shared"
        arm = f"ppo-{mode}"
        note = "" if cfg.algo == "ppo" else f" (measured for ppo; {cfg.algo} differs)"
        tokens = cfg.batch_size * (PPO_PROMPT_TOKENS + cfg.max_new_tokens)
        what = f"{cfg.batch_size} prompts of ≤{PPO_PROMPT_TOKENS} tokens + {cfg.max_new_tokens} new tokens"
    else:
        arm, note = step, ""
        pairs = 2 if step == "build-pm" else 1
        tokens = cfg.batch_size * cfg.grad_accum * cfg.max_length * pairs
        what = f"at most {tokens} tokens (batch {cfg.batch_size} × {cfg.grad_accum} × {cfg.max_length}"
        what += " × 2 sides)" if pairs == 2 else ")"
    fit = load_fit()
    est = estimate(arm, params, precision, tokens, fit)
    measured = fit["measured"]
    sizes = ", ".join(f"{p['params'] / 1e6:.0f}M" for p in fit["points"])
    lines = [f"{base}: {params / 1e6:.0f}M parameters, held in {precision}",
             f"{arm}{note}: peak memory ≈ {_gib(est['peak_mib'])}; ≈ {est['s_per_step']:.1f} s per step of "
             f"{what} on a CPU like the one measured ({measured['machine']})",
             "estimate " + ("EXTRAPOLATED beyond" if est["extrapolated"] else "within")
             + f" the measured points ({sizes} in fp32); "
               "a GPU's time per token is far lower (see 'make gpu-check')"]
    return "\n".join(lines)
