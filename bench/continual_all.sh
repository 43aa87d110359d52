#!/usr/bin/env bash
# The continual protocol for every mode (MODES, default "ours naive merge old-ours"), sequence by sequence,
# so that a run cut short still has every mode on the same sequences; each mode also reports the canary. Resumable: finished sequences are skipped. Run two of these on disjoint
# sequence lists to use both cores:
#   bash bench/continual_all.sh results/continual-se "0 2" &
#   bash bench/continual_all.sh results/continual-se "1 3" &
set -euo pipefail
out=${1:?usage: continual_all.sh OUT "SEQS" [--set k=v ...]}
seqs=${2:?sequence indices, e.g. "0 2"}
shift 2
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
for s in $seqs; do
  for mode in ${MODES:-ours naive merge old-ours}; do
    "$py" bench/continual.py --config configs/default.yaml --mode "$mode" --sequences 4 --length 8 --only "$s" \
      --out "$out" --set runtime.threads=1 "$@"
  done
done
