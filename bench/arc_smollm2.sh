#!/usr/bin/env bash
# Issue #6 on SmolLM2, the whole ARC pipeline on the 12-task subset, each step resumable:
#   1. icl / oracle / untrained-teacher TTT (K=arc.samples)
#   2. ReST-EM over specs (binary reward, K=$SEAL_ARC_RL_SAMPLES) -> teacher v1
#   3. TTT with teacher v1's specs
#   bash bench/arc_smollm2.sh [RUN_DIR]    then: .venv/bin/seal arc report RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-results/arc-12}
TASKS=${SEAL_ARC_TASKS:-../shared/data/arc/arc-agi_training_challenges_filtered_1B_training_set.json}
SEAL=.venv/bin/seal
ARGS=(-c configs/arc-smollm2.yaml --set arc.spec_sampling=constrained --set "runtime.threads=${SEAL_THREADS:-1}")
mkdir -p "$RUN"
$SEAL arc eval "${ARGS[@]}" --tasks "$TASKS" --conditions icl,oracle,ttt --out "$RUN"
$SEAL arc rl "${ARGS[@]}" --tasks "$TASKS" --rounds 1 --samples "${SEAL_ARC_RL_SAMPLES:-4}" --out "$RUN/rl"
$SEAL arc eval "${ARGS[@]}" --tasks "$TASKS" --conditions "teacher:$RUN/rl@1" --out "$RUN"
$SEAL arc report "$RUN"
