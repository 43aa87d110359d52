#!/usr/bin/env bash
# Issue #5 on SmolLM2: ReST-EM rounds on one core while the held-out evaluation runs on the other.
# The evaluation starts at once (passage-only and the round-0 teacher need no trained teacher) and re-runs
# whenever a new teacher version appears; both resume from what they wrote if killed.
#   bash bench/rl_smollm2.sh [RUN_DIR]    then: .venv/bin/seal rl report RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-results/rl-smol}
DATA=${SEAL_SQUAD:-../shared/data/squad/dev.json}
SEAL=.venv/bin/seal
ROUNDS=$(.venv/bin/python -c "from core.config import load_config; print(load_config('configs/rl-smollm2.yaml').rl.rounds)")
mkdir -p "$RUN"
$SEAL rl --passages "$DATA" -c configs/rl-smollm2.yaml --out "$RUN" > "$RUN/train.log" 2>&1 &
TRAIN=$!
trap 'kill $TRAIN 2>/dev/null || true' EXIT
until [ -f "$RUN/contexts.json" ]; do sleep 5; done
evaluated=-1
while :; do
  have=$(ls "$RUN"/teachers/versions/t*.json 2>/dev/null | wc -l || true)
  if [ "$have" -gt "$evaluated" ]; then
    if $SEAL rl eval "$RUN" --passages "$DATA" --limit "${SEAL_HELDOUT:-30}" >> "$RUN/heldout.log" 2>&1; then
      evaluated=$have
    else  # retried on the next pass; training goes on meanwhile
      echo "held-out evaluation failed (see $RUN/heldout.log); retrying in 60s" >&2
      sleep 60
    fi
  elif [ "$have" -ge "$ROUNDS" ] || ! kill -0 $TRAIN 2>/dev/null; then
    break
  else
    sleep 30
  fi
done
wait $TRAIN || true
$SEAL rl report "$RUN" | tee "$RUN/report.txt"
