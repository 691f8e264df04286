"""Judge benchmark on varied comparisons: cai judge against the plain one-prefill-per-order loop.

Data: ``bench/data/judge_pairs.jsonl``, 144 comparisons written for the benchmark (distinct
conversations of 30-530 characters, answers of 15-900, 8 conversations used twice; nothing
is tuned on it).

Baseline: every prompt ``cai judge`` scores (both orders of each pair, the very same chats,
captured with the fake engine, rendered with the model's chat template and followed by the
answer cue "The answer is: (" exactly as the engine scores them) through llama-cpp-python's
``Llama.create_completion`` with ``max_tokens=1``, one at a time, both orders of a pair one
after the other so that llama-cpp-python's own prefix reuse applies. That is one prefill
per order: the floor a hand-written judge loop pays (reading the two options' probabilities
from that prefill would cost it no more decoding).

Against it, in the same run:
- ``cai judge`` (``judge()`` on the llama.cpp engine) on the first N comparisons with
  N records per engine call, N = 8, 32, 128: seconds per comparison as the batch grows
  (superlinear cost would show as a rising figure), each against the baseline's own
  seconds per comparison over the same N;
- shared conversations: the 8 conversations that appear twice, each judged with its four
  answers (6 pairs per conversation, as ``cai eval`` judges several models' answers to one
  prompt), against the baseline over the same prompts.

Run: ``make bench`` or ``python bench/bench_judge.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_tools.constitutions.constitution import load_constitution  # noqa: E402
from cai_tools.engines.fake_engine import FakeEngine  # noqa: E402
from cai_tools.engines import EngineOptions
from cai_tools.engines.llama_cpp_engine import LlamaCppEngine  # noqa: E402
from cai_tools.sl.judge import JudgeSettings, judge  # noqa: E402

MODEL = str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = ROOT / "bench" / "data" / "judge_pairs.jsonl"
THREADS = os.cpu_count()


def load_pairs() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def shared_conversations(records: list[dict]) -> list[dict]:
    """One record per conversation that appears more than once, with all its answers."""
    by_prompt: dict[str, list[str]] = {}
    for rec in records:
        by_prompt.setdefault(rec["prompt"], []).extend(rec["responses"])
    return [{"id": f"shared-{i}", "prompt": p, "responses": answers}
            for i, (p, answers) in enumerate(by_prompt.items()) if len(answers) > 2]


def judge_prompts(records: list[dict], constitution) -> list[str]:
    """The prompts cai judge scores for these records, in its submission order: each chat
    in the model's template, then the answer cue up to where the options differ."""
    fake = FakeEngine()
    list(judge(records, [fake], constitution, JudgeSettings(), batch_size=len(records)))
    engine = LlamaCppEngine(MODEL, EngineOptions(ctx=512, parallel=1))
    try:
        return [engine.formatter(messages=chat).prompt + cue + " ("
                for chat, (_, _, cue) in fake.calls]
    finally:
        engine.close()


def plain_loop(prompts: list[str]) -> list[float]:
    """Cumulative seconds after each prompt: one create_completion(max_tokens=1) each."""
    from llama_cpp import Llama

    llm = Llama(MODEL, n_ctx=4096, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    elapsed, start = [], time.perf_counter()
    try:
        for prompt in prompts:
            llm.create_completion(prompt, max_tokens=1, temperature=0.0)
            elapsed.append(time.perf_counter() - start)
    finally:
        llm.close()
    return elapsed


def cai_judge(records: list[dict], constitution, batch_size: int, parallel: int) -> dict:
    engine = LlamaCppEngine(MODEL, EngineOptions(ctx=4096, threads=THREADS, parallel=parallel))
    try:
        start = time.perf_counter()
        out = list(judge(records, [engine], constitution, JudgeSettings(), batch_size=batch_size))
        elapsed = time.perf_counter() - start
        stats = dict(engine.decoder.stats)
    finally:
        engine.close()
    assert all(0.5 <= r["label"] <= 1 for r in out)
    return {"seconds": elapsed, "comparisons": len(out), "prompt_tokens_decoded": stats["prompt_tokens"],
            "prompt_tokens_reused": stats["prefix_reused"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,32,128", help="comparisons per engine call to measure")
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    constitution = load_constitution("harmless")
    pairs = load_pairs()
    assert len(pairs) >= sizes[-1], f"{DATA} has {len(pairs)} comparisons, fewer than {sizes[-1]}"
    records = pairs[:sizes[-1]]

    print(f"plain loop over {len(records)} comparisons ...", file=sys.stderr)
    prompts = judge_prompts(records, constitution)
    assert len(prompts) == 2 * len(records)
    base = plain_loop(prompts)
    result: dict = {"model": Path(MODEL).name, "threads": THREADS, "parallel": args.parallel,
                    "data": str(DATA.relative_to(ROOT)), "by_batch": []}
    for n in sizes:
        print(f"cai judge, {n} comparisons per call ...", file=sys.stderr)
        cai = cai_judge(records[:n], constitution, n, args.parallel)
        base_s = base[2 * n - 1]
        result["by_batch"].append({
            "comparisons": n, "baseline_s_per_comparison": base_s / n,
            "cai_s_per_comparison": cai["seconds"] / n, "speedup": base_s / cai["seconds"],
            "cai_prompt_tokens_decoded": cai["prompt_tokens_decoded"],
            "cai_prompt_tokens_reused": cai["prompt_tokens_reused"]})

    shared = shared_conversations(pairs)
    print(f"shared conversations: {len(shared)} prompts with several answers ...", file=sys.stderr)
    base_shared = plain_loop(judge_prompts(shared, constitution))[-1]
    cai = cai_judge(shared, constitution, len(shared), args.parallel)
    result["shared_conversations"] = {
        "conversations": len(shared), "comparisons": cai["comparisons"],
        "baseline_s_per_comparison": base_shared / cai["comparisons"],
        "cai_s_per_comparison": cai["seconds"] / cai["comparisons"],
        "speedup": base_shared / cai["seconds"]}

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "judge.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
