#!/usr/bin/env bash
# make gpu-check on a machine with no network: the wheels and sources brought along.
#
# For a GPU machine that has python3 with CUDA torch, transformers, peft and accelerate but no
# package index. What it lacks travels in the git-ignored folder .gpu/, made beforehand on a
# machine with network, in two parts (a part per transfer where transfers are capped):
#   .gpu/p1/model.part1        the first bytes of models/SmolLM2-135M-Instruct.Q4_1.gguf
#   .gpu/p1/llama-src.tar.xz   llama-cpp-python's sdist (pyproject's pinned version), without
#                              vocab GGUFs, docs, tests, examples and unused ggml backends
#   .gpu/p2/model.part2        the rest of the model; .gpu/p2/model.sha256 the whole file's sum
#   .gpu/p2/site/              unpacked cp312 manylinux wheels: orjson, gguf, diskcache and
#                              bitsandbytes (with only its CPU and CUDA 13.0 libraries)
# Steps:
#   scripts/gpu_check_offline.sh start    keep part 1 in $GPU_WORK, unpack llama-cpp-python and
#                                         start its CUDA build there in the background
#   scripts/gpu_check_offline.sh finish   join the model, wait for the build, run
#                                         scripts/gpu_check.py; results (and logs) in $OUT
# On a lent machine each call carries what it needs: `start` .gpu/p1, `finish` .gpu/p2 (an
# ignored folder not carried did not stay there between calls; $GPU_WORK, outside the checkout, did).
# `start` and `finish` may run in separate calls on the same machine; GPU_CHECK_BUDGET (seconds,
# counted from `finish`'s start) bounds the whole of `finish`.
set -uo pipefail
work=${GPU_WORK:-/tmp/cai-gpu}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
llama=llama_cpp_python-0.3.36
export PATH="$PATH:/usr/local/cuda/bin"

case "${1:-}" in
start)
  cd "$root" || exit 1
  mkdir -p "$work" || exit 1
  cp .gpu/p1/model.part1 "$work/" || exit 1
  tar xJf .gpu/p1/llama-src.tar.xz -C "$work" 2>/dev/null || python3 -c \
    'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu/p1/llama-src.tar.xz "$work" || exit 1
  cp "$root/scripts/gpu_check_offline.sh" "$work/offline.sh"
  setsid nohup bash "$work/offline.sh" build </dev/null >"$work/build.log" 2>&1 &
  echo "build started (pid $!); $(nproc) CPUs"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nvcc --version | tail -2; cmake --version | head -1
  ;;
build)  # CMake directly on the sdist's CMakeLists (what pip's scikit-build-core would run)
  cd "$work/$llama" || exit 1
  t0=$(date +%s)
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DSKBUILD_PLATLIB_DIR="$work/site" \
      -DCMAKE_INSTALL_PREFIX="$work/prefix" \
    && cmake --build build -j "$(nproc)" && cmake --install build && cp -r llama_cpp "$work/site/"
  echo "$? $(( $(date +%s) - t0 ))" > "$work/build.done"
  ;;
finish)
  t0=$(date +%s)
  budget=${GPU_CHECK_BUDGET:-540}
  cd "$root" || exit 1
  mkdir -p models "$out"
  test -f "$model" || cat "$work/model.part1" .gpu/p2/model.part2 > "$model" || exit 1
  echo "$(cut -d' ' -f1 .gpu/p2/model.sha256)  $model" | sha256sum -c - || exit 1
  while [ ! -f "$work/build.done" ] && [ $(( $(date +%s) - t0 )) -lt $(( budget - 60 )) ]; do sleep 2; done
  tail -c 1000000 "$work/build.log" > "$out/build.log"
  read -r rc secs < "$work/build.done" || { echo "llama-cpp-python build not finished"; exit 1; }
  echo "llama-cpp-python CUDA build: exit $rc, ${secs} s"
  [ "$rc" = 0 ] || { tail -40 "$work/build.log"; exit 1; }
  # $work/site: the sdist's llama_cpp package with the libraries the build put in its lib/.
  export PYTHONPATH="$root:$work/site:$root/.gpu/p2/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  left=$(( budget - ($(date +%s) - t0) - 15 ))
  [ "$left" -gt 30 ] || { echo "no time left for gpu_check.py"; exit 1; }
  # In a process that has imported that image's torch, llama.cpp's tokenizer (std::regex, while
  # loading the vocabulary) segfaulted (seen 2026-12-04, one H200 machine) unless the system
  # libstdc++ was loaded first.
  stdcxx=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
  [ -f "$stdcxx" ] && export LD_PRELOAD="$stdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
  timeout "$left" python3 scripts/gpu_check.py
  rc=$?
  cp out/gpu_check.json "$out/" 2>/dev/null
  exit $rc
  ;;
*)
  echo "usage: $0 start|finish" >&2; exit 2
  ;;
esac
