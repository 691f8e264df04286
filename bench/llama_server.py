"""llama.cpp's own ``llama-server`` for the benchmarks: the best peer for serving generation.

Built once from the llama.cpp source that the llama-cpp-python sdist vendors (the same llama.cpp
version cai's engine runs), with the same CPU flags ``scripts/install.sh`` uses, and cached in
``$CAI_CACHE_DIR/llama-server/<version>/`` outside the repository. Building takes several
minutes on 2 cores; ``python bench/llama_server.py`` does only that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cai_tools.train.gguf_cache import cache_dir  # noqa: E402

VERSION = "0.3.36"   # llama-cpp-python's pinned version (pyproject.toml)
AMX_OFF = "-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def ensure_llama_server(log=print) -> Path:
    """The path of a built llama-server binary; builds it on first use."""
    target = cache_dir() / "llama-server" / VERSION / "llama-server"
    if target.is_file():
        return target
    log(f"building llama-server from llama-cpp-python {VERSION}'s vendored llama.cpp (once; several minutes)")
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"llama-cpp-python=={VERSION}",
                        "--no-binary", ":all:", "--no-deps", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        flags = ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                 "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"]
        if _cpu_has_amx():   # as scripts/install.sh: ggml's AMX kernels crash on these VMs
            flags += ["-DGGML_NATIVE=OFF", f"-DCMAKE_C_FLAGS={AMX_OFF}", f"-DCMAKE_CXX_FLAGS={AMX_OFF}"]
        build = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *flags], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
                       check=True, stdout=subprocess.DEVNULL)
        built = next(build.rglob("llama-server"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    return target


def _cpu_has_amx() -> bool:
    try:
        return os.uname().machine == "x86_64" and " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def start_llama_server(binary: Path, model: str, parallel: int, ctx_per_slot: int = 1024,
                       threads: int | None = None) -> tuple[subprocess.Popen, str]:
    """``llama-server`` with ``parallel`` slots (continuous batching) and prompt caching on a free
    port; (process, base URL) once it answers."""
    from bench_http import free_port, wait_until_serving

    port = free_port()
    threads = threads or os.cpu_count() or 2
    proc = subprocess.Popen([str(binary), "-m", model, "--host", "127.0.0.1", "--port", str(port),
                             "--parallel", str(parallel), "-c", str(ctx_per_slot * parallel), "-t", str(threads),
                             "--cache-prompt", "--no-webui"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_serving(proc, f"http://127.0.0.1:{port}/v1", "llama-server", 120)

if __name__ == "__main__":
    print(ensure_llama_server(log=lambda m: print(m, file=sys.stderr)))
