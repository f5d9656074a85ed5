#!/usr/bin/env bash
# The prepared accelerator run (benchmarks/device.py): one command, no network, no install step.
#   bash benchmarks/device.sh [--dry-run] [--data-dir DIR] [--budget-s S] [--parts a,b]
# Writes $OUT/device.md (printed at the end), $OUT/device.json, $OUT/log.txt and $OUT/trace.tar.gz
# ($OUT defaults to runs/device). Python: $PYTHON, else python3.
# Packages jaxscape imports that the machine lacks travel as wheels in .whl/ (`make wheels`; carry ".whl"):
# they are installed into a scratch folder, never from the network; jaxscape itself runs from this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-runs/device}
mkdir -p "$OUT"

missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("matfree", "mnist1d") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  site=${DEVICE_SITE:-/tmp/jaxscape-site}
  wheels=()
  for m in $missing; do
    w=$(ls .whl/"$m"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$w" ]; then
      echo "device.sh: $m is not installed and .whl/ has no wheel of it: run 'make wheels' here and carry .whl" >&2
      exit 2
    fi
    wheels+=("$w")
  done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" benchmarks/device.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
