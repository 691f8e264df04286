"""HTTP backend benchmark: records/min through a loopback ``llama_cpp.server`` at
--parallel 1 vs 4 (requests in flight), measured in the same run.

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


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count()),
         "--n_threads_batch", str(max(1, (os.cpu_count() or 2) // 2))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("llama_cpp.server did not start (pip install "
                                   "'llama-cpp-python[server]')") from None
            time.sleep(0.5)


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
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=15)
