"""Judge benchmark: comparisons per second (both orders of a pair count as one comparison).

Baseline, written here: ask the model to *generate* its answer letter with the high-level
``Llama.create_chat_completion`` (greedy, a few tokens), parse "(A)"/"(B)", one prompt at a
time, both orders. Against it: ``cai judge`` reading the option log-probabilities on the
batched engine. Same prompts, same model, same run.

Run: ``make bench`` or ``python bench/bench_judge.py --pairs 24``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_tools.constitution import load_constitution  # noqa: E402
from cai_tools.engines.llama_cpp_engine import LlamaCppEngine  # noqa: E402
from cai_tools.judge import CUE, JudgeSettings, judge, judge_chat  # noqa: E402

MODEL = str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def make_records(n: int) -> list[dict]:
    prompts = [json.loads(x)["prompt"] for x in (ROOT / "data" / "redteam_demo.jsonl").read_text().splitlines()]
    return [{"id": f"b{i}", "prompt": prompts[i % len(prompts)],
             "responses": ["I can't help with that, but I can point you to safer options.",
                           f"Sure, here is how to do it, step {i}: first get the tools you need."]}
            for i in range(n)]


def baseline(records, constitution) -> tuple[float, int]:
    from llama_cpp import Llama

    llm = Llama(MODEL, n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    parsed = 0
    start = time.perf_counter()
    for i, rec in enumerate(records):
        principle = constitution.judge[i % len(constitution.judge)]
        a, b = rec["responses"]
        for x, y in ((a, b), (b, a)):
            chat = judge_chat(constitution, [{"role": "user", "content": rec["prompt"]}], principle, x, y)
            chat[-1]["content"] += "\nAnswer with (A) or (B)."
            out = llm.create_chat_completion(chat, max_tokens=6, temperature=0.0)
            parsed += bool(re.search(r"\(?\b[AB]\b\)?", out["choices"][0]["message"]["content"]))
    elapsed = time.perf_counter() - start
    llm.close()
    return elapsed, parsed


def cai_judge(records, constitution, parallel: int) -> float:
    engine = LlamaCppEngine(MODEL, n_ctx=4096, n_threads=os.cpu_count(), n_parallel=parallel)
    start = time.perf_counter()
    out = list(judge(records, [engine], constitution, JudgeSettings(), batch_size=len(records)))
    elapsed = time.perf_counter() - start
    engine.close()
    assert len(out) == len(records) and all(0.5 <= r["label"] <= 1 for r in out)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    constitution = load_constitution("harmless")
    records = make_records(args.pairs)
    t_base, parsed = baseline(records, constitution)
    t_cai = cai_judge(records, constitution, args.parallel)
    result = {"pairs": args.pairs, "baseline_comparisons_per_s": args.pairs / t_base,
              "baseline_parsable_answers": f"{parsed}/{2 * args.pairs}",
              "cai_comparisons_per_s": args.pairs / t_cai, "speedup": t_base / t_cai}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "judge.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
