#!/usr/bin/env bash
# Every number in docs/results.md: baselines and loss variants on the Vietnamese
# LibreOffice-help test pages. Same bitext, steps, seed and warm start for every variant.
# Usage: scripts/results_vi.sh [PYTHON] [STEPS]     (after `make demo` prepared data/vi)
set -euo pipefail
PY=${1:-python3}
STEPS=${2:-40}
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/results-vi}
RECIPE=recipes/vi/quickstart.yaml
mkdir -p "$OUT"

clir() {  # clir NAME ARGS...: English queries → Vietnamese pages
  local name=$1; shift
  [ -f "$OUT/$name/eval-clir/metrics.json" ] || "$PY" -m optical eval --task beir --path data/vi/clir \
    --out "$OUT/$name/eval-clir" "$@" > /dev/null
}
bitext() {  # bitext NAME ARGS...: held-out sentence pairs, both directions
  local name=$1; shift
  [ -f "$OUT/$name/eval-bitext/metrics.json" ] || "$PY" -m optical eval --task bitext --path data/vi/test.tsv \
    --lang vi --out "$OUT/$name/eval-bitext" "$@" > /dev/null
}
train() {  # train NAME STEPS ARGS...: distill with the quickstart recipe plus overrides
  local name=$1 steps=$2; shift 2
  # the variants below were measured against these OT settings (the quickstart has since
  # adopted the best ones: epsilon 0.02, IDF masses); later --set flags override them
  [ -f "$OUT/$name/student/modules.json" ] || "$PY" -m optical distill --recipe "$RECIPE" --out "$OUT/$name" \
    --steps "$steps" --quiet --set ot.epsilon=0.05 --set ot.masses=uniform "$@"
  clir "$name" --student "$OUT/$name" --query-encoder teacher --doc-encoder student
  bitext "$name" --student "$OUT/$name"
}

MINILM=packaged:all-minilm-l6-v2
E5=packaged:multilingual-e5-small
# baselines: the teacher on both sides (its English run is the upper bound), e5 as it ships
clir teacher --query-encoder "$MINILM" --doc-encoder "$MINILM" --teacher "$MINILM"
clir e5-as-is --query-encoder "$E5" --doc-encoder "$E5"
bitext e5-as-is --student "$E5"
# the student before distillation: identity head, no warm start, no steps
train untrained 0 --set warm_start.method=none
# closed-form warm start alone, then each loss for STEPS steps from it
train warm-start-only 0
train mse "$STEPS" --loss mse:1
train token-ot "$STEPS" --loss token_ot:1
train token-ot+mse "$STEPS" --loss token_ot:1,mse:1
# the same fine-tuning without the warm start
train token-ot+mse-no-warm-start "$STEPS" --loss token_ot:1,mse:1 --set warm_start.method=none
# what the OT literature suggests, token_ot alone so the change is isolated
train token-ot-eps0.1 "$STEPS" --loss token_ot:1 --set ot.epsilon=0.1
train token-ot-eps0.02 "$STEPS" --loss token_ot:1 --set ot.epsilon=0.02
train token-ot-idf "$STEPS" --loss token_ot:1 --set ot.masses=idf
train token-ot-unbalanced "$STEPS" --loss token_ot:1 --set ot.rho=0.5
# mse on normalised 384-d vectors is ~1/200 of token_ot: weight it so both terms count
train token-ot+mse100 "$STEPS" --loss token_ot:1,mse:100
# layer choice: transport the teacher's second-to-last layer
train token-ot-layer-2 "$STEPS" --loss token_ot:1 --set teacher.layer=-2
# the helpful settings together
train token-ot-best "$STEPS" --loss token_ot:1,mse:100 --set ot.epsilon=0.02 --set ot.masses=idf
# a longer budget for the two best: does the token-level term pay off with more steps?
train mse-150-steps 150 --loss mse:1
train token-ot-best-150-steps 150 --loss token_ot:1,mse:100 --set ot.epsilon=0.02 --set ot.masses=idf
"$PY" scripts/collect_results.py "$OUT"
