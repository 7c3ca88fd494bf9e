#!/usr/bin/env bash
# What only a GPU can show, in one call (a session's device time is short): the CUDA paths of
# the tests, the OT solvers (torch, fused Triton, POT) and the training loop against a plain
# PyTorch loop. Every step runs even when one before it fails; results go to OUT.
# Usage: scripts/gpu_checks.sh OUT [DEVICE]      DEVICE: cuda (default) or cpu (a quick dry run)
# The machine needs this project's dependencies installed (and, for step 3, the packaged
# models prepared); docs/benchmarks.md, "What is not measured here", says what each step decides.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_checks.sh OUT [DEVICE]}
DEVICE=${2:-cuda}
PY=${PY:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }
if [ "$DEVICE" = cuda ]; then SIZES=64x32,256x32,64x64,64x128; REPEATS=20; QUICK=; else SIZES=8x16; REPEATS=1; QUICK=--quick; fi

stamp "1/3 tests of the CUDA paths (OT solvers, fused Sinkhorn, two processes)"
"$PY" -m pytest -q tests/test_ot.py tests/test_sinkhorn_triton.py tests/test_multiprocess.py > "$OUT/tests.txt" 2>&1
tail -3 "$OUT/tests.txt"

stamp "2/3 OT solvers: optical (torch, triton) against POT"
"$PY" -m benchmarks.ot_solver --device "$DEVICE" --sizes "$SIZES" --repeats "$REPEATS" --out "$OUT" 2>&1 | tail -6

stamp "3/3 training loop against a plain PyTorch loop (needs the packaged models: optical models prepare ...)"
"$PY" -m benchmarks.loop_throughput --device "$DEVICE" $QUICK --out "$OUT" 2>&1 | tail -6

stamp "done: $(ls "$OUT" | tr '\n' ' ')"
