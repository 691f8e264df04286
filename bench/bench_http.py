"""HTTP backend benchmark: records/min through a loopback ``llama_cpp.server`` at
--parallel 1 vs 4 (requests in flight), measured in the same run; and two servers (half the
threads each, the same machine) against one, through ``--server A --server B``.

llama_cpp.server handles one request at a time, so this measures the client's overhead and
ordering more than concurrency; llama.cpp's ``llama-server --parallel N`` and vLLM batch
concurrent requests, which is where --parallel pays.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cai_tools.engines.openai_http_engine import OpenAIHttpEngine  # noqa: E402
from cai_tools.sl.generate import generate  # noqa: E402
from cai_tools.sl.sampling import Sampling  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, what: str, limit_s: float) -> tuple[subprocess.Popen, str]:
    """(proc, url) once ``url``/models answers; RuntimeError (the process killed) if it exits or
    ``limit_s`` passes first."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.5)


def start_server(model: str, threads: int | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads or os.cpu_count()),
         "--n_threads_batch", str(max(1, (os.cpu_count() or 2) // 2))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_serving(proc, f"http://127.0.0.1:{port}/v1",
                              "llama_cpp.server (pip install 'llama-cpp-python[server]')", 90)


def http_bench(model: str, prompts: list[dict], max_tokens: int) -> dict:
    proc, url = start_server(model)
    try:
        sampling = Sampling(max_tokens=max_tokens, temperature=0.7)
        result = {}
        for parallel in (1, 4):
            engine = OpenAIHttpEngine(url, parallel=parallel)
            start = time.perf_counter()
            out = list(generate(prompts, engine, sampling=sampling, seed=0, batch_size=len(prompts)))
            elapsed = time.perf_counter() - start
            engine.close()
            assert len(out) == len(prompts)
            result[f"parallel{parallel}_records_per_min"] = len(prompts) / elapsed * 60
        result["speedup"] = result["parallel4_records_per_min"] / result["parallel1_records_per_min"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    result.update(two_servers_bench(model, prompts, max_tokens))
    return result


def two_servers_bench(model: str, prompts: list[dict], max_tokens: int) -> dict:
    """One server with every core against two with half each (one request in flight per server):
    what spreading over processes gives on the same machine, and that the records match."""
    from cai_tools.engines.multi_server import MultiServerEngine

    half = max(1, (os.cpu_count() or 2) // 2)
    sampling = Sampling(max_tokens=max_tokens, temperature=0.7)
    runs = {}
    for name, threads in (("one_server", None), ("two_servers", half)):
        procs = [start_server(model, threads) for _ in range(1 if name == "one_server" else 2)]
        try:
            urls = [url for _, url in procs]
            engine = OpenAIHttpEngine(urls[0], parallel=1) if len(urls) == 1 else MultiServerEngine(urls, parallel=1)
            start = time.perf_counter()
            out = list(generate(prompts, engine, sampling=sampling, seed=0, batch_size=len(prompts)))
            elapsed = time.perf_counter() - start
            engine.close()
            runs[name] = (len(prompts) / elapsed * 60, [r["response"] for r in out])
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(timeout=15)
    return {"one_server_records_per_min": runs["one_server"][0], "two_servers_records_per_min": runs["two_servers"][0],
            "two_servers_ratio": runs["two_servers"][0] / runs["one_server"][0],
            "two_servers_same_records": runs["one_server"][1] == runs["two_servers"][1]}
