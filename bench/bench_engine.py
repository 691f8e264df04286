"""Engine benchmarks: every figure is a ratio against a baseline measured in the same run.

1. SL-CAI stage (generate + one critique/revision round, 64 varied prompts from
   ``bench/data/sl_prompts.jsonl``: half red-team, half ordinary, 30-500 characters, more
   records than slots; 96 new tokens): the loop a user writes by hand with
   ``Llama.create_chat_completion``, one record at a time, against cai's steps on the
   batched shared-prefix engine.
2. Raw decode and prompt throughput of the engine, and greedy agreement between
   --parallel 1 and --parallel 8.
3. (--http) the OpenAI-compatible backend against a loopback llama_cpp.server,
   --parallel 1 vs 4, and two such servers against one.
4. (--llama-server) the same SL stage through llama.cpp's own llama-server (built once from the
   llama.cpp that llama-cpp-python vendors; --parallel slots, prompt cache) at equal
   parallelism: cai's in-process engine as a ratio of the best peer serving the same work.

Judging is measured by bench_judge.py. Run: ``make bench`` (or
``python bench/bench_engine.py --prompts 64``). Results are saved to bench/results/engine.json.
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
from cai_tools.sl.critique import critique  # noqa: E402
from cai_tools.engines.base import SamplingParams  # noqa: E402
from cai_tools.engines import EngineOptions
from cai_tools.engines.llama_cpp_engine import LlamaCppEngine  # noqa: E402
from cai_tools.sl.generate import generate  # noqa: E402
from cai_tools.sl.revise import revise  # noqa: E402
from cai_tools.sl.prompts import clean_revision, critique_chat, revision_chat  # noqa: E402
from cai_tools.sl.sampling import Sampling  # noqa: E402

MODEL = str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
THREADS = os.cpu_count()


def load_prompts(n: int) -> list[dict]:
    lines = (ROOT / "bench" / "data" / "sl_prompts.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines if x.strip()]
    assert len(recs) >= n, f"sl_prompts.jsonl has {len(recs)} prompts, fewer than {n}"
    return recs[:n]


def sl_baseline(prompts, constitution, max_tokens: int, seed: int) -> tuple[float, int]:
    """The hand-written loop: high-level Llama, one record at a time."""
    from llama_cpp import Llama

    llm = Llama(MODEL, n_ctx=4096, n_threads=THREADS, verbose=False)
    tokens = 0
    start = time.perf_counter()
    for i, rec in enumerate(prompts):
        msgs = [{"role": "user", "content": rec["prompt"]}]
        p = constitution.critique_revision[i % len(constitution.critique_revision)]
        kw = dict(max_tokens=max_tokens, temperature=0.7, top_p=0.95, seed=seed + i)
        r = llm.create_chat_completion(msgs, **kw)
        answer = r["choices"][0]["message"]["content"]
        c = llm.create_chat_completion(critique_chat(constitution, msgs, answer, p.critique), **kw)
        crit = c["choices"][0]["message"]["content"]
        v = llm.create_chat_completion(
            revision_chat(constitution, msgs, answer, p.critique, crit, p.revision), **kw)
        clean_revision(v["choices"][0]["message"]["content"])
        tokens += sum(x["usage"]["completion_tokens"] for x in (r, c, v))
    elapsed = time.perf_counter() - start
    llm.close()
    return elapsed, tokens


def sl_cai(prompts, constitution, max_tokens: int, seed: int, parallel: int) -> tuple[float, int, dict]:
    engine = LlamaCppEngine(MODEL, EngineOptions(ctx=4096, threads=THREADS, parallel=parallel))
    sampling = Sampling(max_tokens=max_tokens, temperature=0.7, top_p=0.95)
    start = time.perf_counter()
    answered = generate(prompts, engine, sampling=sampling, seed=seed, batch_size=len(prompts))
    critiqued = critique(answered, engine, constitution, sampling=sampling, seed=seed,
                         batch_size=len(prompts))
    out = list(revise(critiqued, engine, constitution, sampling=sampling, seed=seed,
                      batch_size=len(prompts)))
    elapsed = time.perf_counter() - start
    stats = dict(engine.decoder.stats)
    engine.close()
    assert len(out) == len(prompts) and all(r["history"][0]["revision"] for r in out)
    return elapsed, stats["generated_tokens"], stats


def sl_llama_server(prompts, constitution, max_tokens: int, seed: int, parallel: int) -> tuple[float, int]:
    """The same SL stage through llama.cpp's own llama-server (``parallel`` slots, prompt cache),
    the best peer that serves this work: (seconds, generated tokens)."""
    from llama_server import ensure_llama_server, start_llama_server  # noqa: PLC0415

    from cai_tools.engines.openai_http_engine import OpenAIHttpEngine  # noqa: PLC0415

    proc, url = start_llama_server(ensure_llama_server(log=lambda m: print(m, file=sys.stderr)), MODEL, parallel)
    try:
        engine = _CountingEngine(OpenAIHttpEngine(url, parallel=parallel))
        sampling = Sampling(max_tokens=max_tokens, temperature=0.7, top_p=0.95)
        start = time.perf_counter()
        answered = generate(prompts, engine, sampling=sampling, seed=seed, batch_size=len(prompts))
        critiqued = critique(answered, engine, constitution, sampling=sampling, seed=seed, batch_size=len(prompts))
        out = list(revise(critiqued, engine, constitution, sampling=sampling, seed=seed, batch_size=len(prompts)))
        elapsed = time.perf_counter() - start
        engine.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert len(out) == len(prompts) and all(r["history"][0]["revision"] for r in out)
    return elapsed, engine.generated_tokens


class _CountingEngine:
    """An engine that adds up the tokens its generations report."""

    def __init__(self, engine):
        self.engine, self.info, self.generated_tokens = engine, engine.info, 0

    def generate(self, chats, params):
        out = self.engine.generate(chats, params)
        self.generated_tokens += sum(getattr(g, "completion_tokens", 0) for g in out)
        return out

    def choice_logprobs(self, *args, **kwargs):
        return self.engine.choice_logprobs(*args, **kwargs)

    def close(self):
        self.engine.close()


def throughput() -> dict:
    """Aggregate decode tok/s (16 short prompts, 128 tokens) and prompt tok/s (long prompt)."""
    engine = LlamaCppEngine(MODEL, EngineOptions(ctx=2048, threads=THREADS, parallel=8))
    chats = [[{"role": "user", "content": f"Tell me a long story about the number {i}."}] for i in range(16)]
    params = [SamplingParams(max_tokens=128, temperature=0.7, seed=i) for i in range(16)]
    start = time.perf_counter()
    engine.generate(chats, params)
    decode_tps = engine.decoder.stats["generated_tokens"] / (time.perf_counter() - start)
    long_text = " ".join(f"Sentence number {i} says something about apples." for i in range(120))
    toks = engine.tokenize_prompt(engine.render([{"role": "user", "content": long_text}])[0])
    engine.decoder.prefix = []
    engine.decoder.L.llama_memory_clear(engine.decoder.mem, True)
    start = time.perf_counter()
    engine.decoder._set_prefix(toks)
    prompt_tps = len(toks) / (time.perf_counter() - start)
    engine.close()
    return {"decode_tok_per_s_parallel8": decode_tps, "prompt_tok_per_s": prompt_tps,
            "prompt_tokens": len(toks)}


def agreement(n: int) -> dict:
    prompts = [p["prompt"] for p in load_prompts(n)]
    chats = [[{"role": "user", "content": p}] for p in prompts]
    params = [SamplingParams(max_tokens=64, temperature=0.0)] * n
    outs = {}
    for parallel in (1, 8):
        engine = LlamaCppEngine(MODEL, EngineOptions(ctx=1024, threads=THREADS, parallel=parallel))
        outs[parallel] = [g.text for g in engine.generate(chats, params)]
        engine.close()
    same = sum(a == b for a, b in zip(outs[1], outs[8]))
    prefix = [len(os.path.commonprefix([a, b])) / max(len(a), len(b), 1) for a, b in zip(outs[1], outs[8])]
    return {"records": n, "identical": same, "identical_rate": same / n,
            "mean_shared_prefix_fraction": sum(prefix) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--http", action="store_true", help="also benchmark the HTTP backend")
    ap.add_argument("--llama-server", action="store_true",
                    help="also run the SL stage through llama.cpp's llama-server (built once, cached)")
    args = ap.parse_args()
    constitution = load_constitution("harmless")
    prompts = load_prompts(args.prompts)
    results: dict = {"model": Path(MODEL).name, "threads": THREADS}

    print(f"SL-CAI stage: {args.prompts} prompts, {args.max_tokens} new tokens ...", file=sys.stderr)
    t_base, tok_base = sl_baseline(prompts, constitution, args.max_tokens, 0)
    t_cai, tok_cai, stats = sl_cai(prompts, constitution, args.max_tokens, 0, args.parallel)
    results["sl_stage"] = {
        "prompts": args.prompts, "max_tokens": args.max_tokens, "parallel": args.parallel,
        "baseline_records_per_min": args.prompts / t_base * 60,
        "cai_records_per_min": args.prompts / t_cai * 60, "speedup": t_base / t_cai,
        "baseline_generated_tok_per_s": tok_base / t_base,
        "cai_generated_tok_per_s": tok_cai / t_cai,
        "cai_prompt_tokens_decoded": stats["prompt_tokens"],
        "cai_prompt_tokens_reused_from_prefix": stats["prefix_reused"]}
    if args.llama_server:
        print(f"SL-CAI stage through llama-server --parallel {args.parallel} ...", file=sys.stderr)
        t_srv, tok_srv = sl_llama_server(prompts, constitution, args.max_tokens, 0, args.parallel)
        results["sl_stage_vs_llama_server"] = {
            "parallel": args.parallel, "llama_server_records_per_min": args.prompts / t_srv * 60,
            "cai_records_per_min": args.prompts / t_cai * 60, "ratio": t_srv / t_cai,
            "llama_server_generated_tok_per_s": tok_srv / t_srv, "cai_generated_tok_per_s": tok_cai / t_cai,
            "generated_tok_per_s_ratio": (tok_cai / t_cai) / (tok_srv / t_srv)}
    print("throughput and agreement ...", file=sys.stderr)
    results["throughput"] = throughput()
    results["greedy_agreement_parallel1_vs_8"] = agreement(min(args.prompts, 16))
    if args.http:
        from bench_http import http_bench  # noqa: PLC0415

        results["http"] = http_bench(MODEL, prompts[:16], args.max_tokens)

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
