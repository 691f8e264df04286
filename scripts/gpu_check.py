"""``make gpu-check``: what the toolkit does on this machine's GPU, measured.

Run inside the CUDA venv that ``scripts/gpu_check.sh`` builds. Steps (each a ``cai`` process):
generation with every layer offloaded, then a short ``sft``, ``build-pm`` and shared-base PPO in
bf16 and with a 4-bit base, on the bundled tiny model and on the 1B random-init model of the
scaling benchmark. For each it prints tokens/s, peak GPU memory (torch's max allocated, from
the run's log) and the cost model's prediction beside it (fitted on the CPU, so a GPU's
time per token is far lower; memory should be near it). Results: ``out/gpu_check.json``, rewritten
after every step, so a run cut short keeps what it measured. An arm that fails is recorded with
its error and the others still run; the 4-bit arms are skipped, with a line saying so, where
bitsandbytes cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scale import CAI, MIX, MODEL, PAIRS, PROMPTS, SL, random_model  # noqa: E402

STEPS = 6
RESULTS = ROOT / "out" / "gpu_check.json"


def cai(*args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    result = subprocess.run([*CAI, *map(str, args)], input=stdin, capture_output=True, timeout=1800)
    if result.returncode != 0:  # a negative code is a signal (-11: a segfault, which leaves stderr empty)
        raise SystemExit(f"cai {args[0]} failed (exit code {result.returncode}):\n{result.stderr.decode()[-2000:]}")
    return result


def check_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch: make gpu-check needs a GPU")
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        raise SystemExit("llama-cpp-python in this venv was built without GPU offload (rebuild with "
                         "CMAKE_ARGS=-DGGML_CUDA=on)")
    return torch.cuda.get_device_name(0)


def versions() -> dict:
    """The versions of the libraries the measurements ran on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "llama_cpp_python"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    import llama_cpp
    import torch

    found["llama_cpp_python"] = found["llama_cpp_python"] or llama_cpp.__version__  # a build not pip-installed
    found["cuda"] = torch.version.cuda
    return found


def save(result: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


def generation() -> dict:
    """Tokens/s of cai generate with every layer on the GPU, on the red-team prompts."""
    prompts = [json.loads(x) for x in Path(PROMPTS).read_text().splitlines() if x.strip()]
    stdin = b"".join(json.dumps({"prompt": p["prompt"]}).encode() + b"\n" for p in prompts)
    start = time.perf_counter()
    out = cai("generate", "-m", MODEL, "--n-gpu-layers", "99", "--max-tokens", "128", "--seed", "0", "-q",
              stdin=stdin)
    wall = time.perf_counter() - start
    records = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    import llama_cpp

    vocab = llama_cpp.Llama(MODEL, vocab_only=True, verbose=False)
    tokens = sum(len(vocab.tokenize(r["response"].encode(), add_bos=False)) for r in records)
    return {"records": len(records), "completion_tokens": tokens, "wall_s": round(wall, 1),
            "tokens_per_s": round(tokens / wall, 1) if tokens else None}


def training(base: Path, params: int, load_in: str, tmp: Path, rows: list[dict], result: dict) -> None:
    """Appends one row per arm to ``rows`` (saving ``result`` after each): measured, or the error."""
    from cai_tools.train.cost_model import estimate

    quant = ["--load-in", load_in] if load_in else []
    pm = tmp / f"pm-{base.name}-{load_in or 'bf16'}"
    runs = {
        "sft": ["sft", "--base", base, "--data", SL, "--all-rounds", "--mix", f"{MIX}:1", "--max-length", "256"],
        "build-pm": ["build-pm", "--base", base, "--data", PAIRS, "--eval-fraction", "0", "--max-length", "256"],
        "ppo-shared": ["rl", "--policy", base, "--pm", pm, "--prompts", PROMPTS, "--max-new-tokens", "32"],
    }
    for arm, args in runs.items():
        out = pm if arm == "build-pm" else tmp / f"{arm}-{base.name}-{load_in or 'bf16'}"
        try:
            cai(*args, "--out", out, "--max-steps", STEPS, "--batch-size", "4", "--device", "cuda", *quant, "-q")
        except SystemExit as exc:
            rows.append({"model": base.name, "arm": arm, "precision": load_in or "bf16", "error": str(exc)[-1500:]})
            save(result)
            print(f"  {base.name[:28]:<28} {arm:<11} {load_in or 'bf16':<5} FAILED: {str(exc)[-300:]}", flush=True)
            continue
        log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        later = log[1:]
        if not later:  # a run that stopped after its first step (a NaN reward or KL stops PPO)
            run = json.loads((out / "cai_run.json").read_text()) if (out / "cai_run.json").is_file() else {}
            error = f"{len(log)} step(s) logged of {STEPS}; stopped_by: {run.get('stopped_by')}"
            rows.append({"model": base.name, "arm": arm, "precision": load_in or "bf16", "error": error,
                         "peak_gpu_mib": max((e["peak_mib"] for e in log), default=None)})
            save(result)
            print(f"  {base.name[:28]:<28} {arm:<11} {load_in or 'bf16':<5} NOT MEASURED: {error}", flush=True)
            continue
        seconds = log[-1]["elapsed_s"] - log[0]["elapsed_s"]
        tokens = sum(e["tokens"] for e in later)
        peak = max(e["peak_mib"] for e in log)
        predicted = estimate(arm, params, load_in or "bfloat16", tokens / len(later))
        rows.append({"model": base.name, "arm": arm, "precision": load_in or "bf16",
                     "tokens_per_s": round(tokens / seconds, 1), "peak_gpu_mib": peak,
                     "predicted_peak_mib": round(predicted["peak_mib"]),
                     "predicted_cpu_tokens_per_s": round(tokens / len(later) / predicted["s_per_step"], 1)})
        r = rows[-1]
        print(f"  {r['model'][:28]:<28} {arm:<11} {r['precision']:<5} {r['tokens_per_s']:9.1f} tok/s  "
              f"peak {peak:8.0f} MiB (cost model {r['predicted_peak_mib']} MiB; CPU {r['predicted_cpu_tokens_per_s']} tok/s)",
              flush=True)
        save(result)


def main() -> None:
    from cai_tools.train.cost_model import count_parameters

    device = check_cuda()
    print(f"GPU: {device}")
    result = {"gpu": device, "versions": versions(), "generation": generation()}
    save(result)
    g = result["generation"]
    print(f"  generate, all layers on the GPU: {g['tokens_per_s']} tokens/s ({g['records']} records, {g['wall_s']} s)")
    precisions = ["", "4bit"]
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # missing, or its CUDA library does not load
        precisions = [""]
        result["skipped"] = f"4-bit arms: bitsandbytes cannot be imported here ({exc})"
        print(f"  {result['skipped']}: skipped", flush=True)
    rows = result["training"] = []
    big, big_params = random_model("1B")
    with tempfile.TemporaryDirectory(prefix="cai-gpu-check-") as tmp:
        for load_in in precisions:  # bf16 on both models first: what a cut-short run keeps
            for base, params in ((MODEL, count_parameters(MODEL)), (big, big_params)):
                training(Path(base), params, load_in, Path(tmp), rows, result)
    save(result)
    print(f"results in {RESULTS.relative_to(ROOT)}")
    if any("error" in r for r in rows):
        raise SystemExit("gpu-check: some arms failed (their errors are in the results)")


if __name__ == "__main__":
    main()
