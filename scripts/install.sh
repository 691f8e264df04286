#!/usr/bin/env bash
# Install the project into a venv, showing llama.cpp's compile progress ([n/N] steps)
# instead of pip's silence; the full pip log is kept in $VENV/install.log.
set -uo pipefail
venv=${1:-.venv}
extras=${2:-test}
log="$venv/install.log"
py="$venv/bin/python"

# llama.cpp builds for the host CPU (-march=native). On CPUs that advertise Intel AMX, that
# compiles ggml's AMX kernels, which crash with a general-protection fault (ldtilecfg) on
# VMs that do not hand AMX state to guests, such as the machines this project is tested on:
# every decode died with SIGSEGV. Build native minus AMX there, unless the user chose.
no_amx_flags="-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cpu_has_amx() { [ "$(uname -m)" = x86_64 ] && grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; }
if cpu_has_amx && [[ "${CMAKE_ARGS:-}" != *GGML_NATIVE* ]]; then
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS='$no_amx_flags' -DCMAKE_CXX_FLAGS='$no_amx_flags'"
  echo "  this CPU advertises AMX: building llama.cpp without ggml's AMX kernels (see scripts/install.sh)"
fi

watch_pip() {  # run pip in the background, printing llama.cpp's compile steps
  "$py" -m pip "$@" >> "$log" 2>&1 &
  local pid=$! last="" step
  while kill -0 "$pid" 2>/dev/null; do
    step=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$log" 2>/dev/null | tail -n 1 | tr -d ' ' || true)
    if [ -n "$step" ] && [ "$step" != "$last" ]; then
      if [ -t 1 ]; then printf '\r  compiling llama.cpp %s ' "$step"; else echo "  compiling llama.cpp $step"; fi
      last=$step
    fi
    sleep 5
  done
  if wait "$pid"; then
    [ -n "$last" ] && [ -t 1 ] && echo
    return 0
  fi
  echo
  tail -n 30 "$log"
  echo "install failed: see $log" >&2
  exit 1
}

: > "$log"
watch_pip install -v -e ".[$extras]"

# pip reuses a wheel it built before, whatever CMAKE_ARGS says now: a cached build with AMX
# kernels (from before this check) would still crash, so rebuild it once without the cache.
if cpu_has_amx && [[ "${CMAKE_ARGS:-}" == *mno-amx* ]] &&
   "$py" -c "import llama_cpp, sys; sys.exit('AMX_INT8' not in llama_cpp.llama_print_system_info().decode())" 2>/dev/null; then
  echo "  the llama-cpp-python wheel in pip's cache has AMX kernels: rebuilding it"
  version=$("$py" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
  watch_pip install -v --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$version"
fi
echo "  installed (pip log: $log)"
