#!/usr/bin/env bash
# Teacher RL on SmolLM2: ReST-EM rounds on one core while the held-out evaluation runs on the other.
# The evaluation starts at once (passage-only, passage-repeat and the round-0 teacher need no trained teacher)
# and re-runs whenever a new teacher version appears; both resume from what they wrote if killed.
#   bash bench/rl_smollm2.sh [RUN_DIR] [CONFIG]    then: .venv/bin/seal rl report RUN_DIR
# Issue #5's run:  bash bench/rl_smollm2.sh results/rl-smol configs/rl-smollm2.yaml
# Issue #17's run: SEAL_HELDOUT=40 SEAL_EVAL_ARGS="--every 6 --regime product --set train.epochs=10" \
#                  bash bench/rl_smollm2.sh results/rl-n30 configs/rl-smollm2-n30.yaml
# SEAL_EVAL_ONLY=1 runs only the evaluation loop (the rounds train elsewhere, e.g. on Celery workers).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-results/rl-smol}
CONFIG=${2:-configs/rl-smollm2.yaml}
DATA=${SEAL_SQUAD:-../shared/data/squad/dev.json}
SEAL=.venv/bin/seal
ROUNDS=$(.venv/bin/python -c "from core.config import load_config; print(load_config('$CONFIG').rl.rounds)")
mkdir -p "$RUN"
TRAIN=
if [ -z "${SEAL_EVAL_ONLY:-}" ]; then
  $SEAL rl --passages "$DATA" -c "$CONFIG" --out "$RUN" >> "$RUN/train.log" 2>&1 &
  TRAIN=$!
  trap 'kill $TRAIN 2>/dev/null || true' EXIT
fi
training() { if [ -n "$TRAIN" ]; then kill -0 "$TRAIN" 2>/dev/null; else pgrep -f "seal rl --passages .*--out $RUN" >/dev/null; fi; }
until [ -f "$RUN/contexts.json" ]; do sleep 5; done
evaluated=-1
while :; do
  have=$(ls "$RUN"/teachers/versions/t*.json 2>/dev/null | wc -l || true)
  if [ "$have" -gt "$evaluated" ]; then
    # shellcheck disable=SC2086
    if $SEAL rl eval "$RUN" --passages "$DATA" --limit "${SEAL_HELDOUT:-30}" ${SEAL_EVAL_ARGS:-} >> "$RUN/heldout.log" 2>&1; then
      evaluated=$have
    else  # retried on the next pass; training goes on meanwhile
      echo "held-out evaluation failed (see $RUN/heldout.log); retrying in 60s" >&2
      sleep 60
    fi
  elif [ "$have" -ge "$ROUNDS" ] || ! training; then
    break
  else
    sleep 30
  fi
done
if [ -n "$TRAIN" ]; then wait "$TRAIN" || true; fi
$SEAL rl report "$RUN" | tee "$RUN/report.txt"
