#!/usr/bin/env bash
# Install the project into a venv, showing llama.cpp's compile progress ([n/N] steps)
# instead of pip's silence; the full pip log is kept in $VENV/install.log.
set -uo pipefail
venv=${1:-.venv}
extras=${2:-test}
log="$venv/install.log"

"$venv/bin/python" -m pip install -v -e ".[$extras]" > "$log" 2>&1 &
pid=$!
last=""
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
  echo "  installed (pip log: $log)"
else
  echo
  tail -n 30 "$log"
  echo "install failed: see $log" >&2
  exit 1
fi
