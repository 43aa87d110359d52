#!/usr/bin/env bash
# The issue #3 protocol for all three modes, sequence by sequence, so that a run cut short still has every
# mode on the same sequences. Resumable: finished sequences are skipped. Run two of these on disjoint
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
  for mode in naive merge ours; do
    cfg=configs/default.yaml
    [ "$mode" = ours ] && cfg=configs/continual-ours.yaml
    "$py" bench/continual.py --config "$cfg" --mode "$mode" --sequences 4 --length 8 --only "$s" \
      --out "$out" --set runtime.threads=1 "$@"
  done
done
