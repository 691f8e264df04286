#!/usr/bin/env bash
# make gpu-check: build a CUDA venv (.venv-gpu: torch with CUDA, llama-cpp-python compiled with
# GGML_CUDA, bitsandbytes) and run scripts/gpu_check.py in it. Nothing in `make test` needs this.
set -euo pipefail
venv=${GPU_VENV:-.venv-gpu}
python=${PYTHON:-python3}
command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: this needs an NVIDIA GPU" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -x "$venv/bin/cai" ]; then
  echo "gpu-check: building $venv (torch with CUDA, llama.cpp with CUDA: 10-20 minutes the first time)"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q torch                # PyPI's Linux wheel is the CUDA build
  CMAKE_ARGS="-DGGML_CUDA=on ${CMAKE_ARGS:-}" FORCE_CMAKE=1 \
    "$venv/bin/python" -m pip install -q --no-binary llama-cpp-python -e ".[train,quant]" \
    > "$venv/install.log" 2>&1 || { tail -30 "$venv/install.log"; exit 1; }
fi
test -f models/SmolLM2-135M-Instruct.Q4_1.gguf || "$venv/bin/cai" fetch-model --dest models
exec "$venv/bin/python" scripts/gpu_check.py
