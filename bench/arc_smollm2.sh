#!/usr/bin/env bash
# Issue #6 on SmolLM2: the ARC pipeline on the 12-task subset, each step resumable.
#   1. icl / oracle / untrained-teacher TTT (K=arc.samples) on the 12 tasks
#   2. ReST-EM over specs (binary reward, K=4) on tasks the 12 do not include: by default synthetic
#      "mirror the grid" tasks (seal arc synth), as the paper trains on tasks it does not evaluate on
#   3. TTT with the RL-trained teacher's specs (teacher v1) on the 12 tasks ($SEAL_ARC_PROCS shards at once)
#   bash bench/arc_smollm2.sh [RUN_DIR]    then: .venv/bin/seal arc report RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-results/arc-12}
TASKS=${SEAL_ARC_TASKS:-../shared/data/arc/arc-agi_training_challenges_filtered_1B_training_set.json}
RL_RUN=${SEAL_ARC_RL_RUN:-results/arc-synthetic/rl}
RL_TASKS=${SEAL_ARC_RL_TASKS:-results/arc-synthetic/tasks/synthetic-flip_h_challenges.json}
SEAL=.venv/bin/seal
ARGS=(-c configs/arc-smollm2.yaml --set arc.spec_sampling=constrained --set "runtime.threads=${SEAL_THREADS:-1}")
mkdir -p "$RUN"
$SEAL arc eval "${ARGS[@]}" --tasks "$TASKS" --conditions icl,oracle,ttt --out "$RUN"
[ -f "$RL_TASKS" ] || $SEAL arc synth --rule flip_h --n 3 --side 3 --out "$(dirname "$RL_TASKS")"
$SEAL arc rl "${ARGS[@]}" --tasks "$RL_TASKS" --rounds 1 --samples 4 --out "$RL_RUN"
P=${SEAL_ARC_PROCS:-2}  # processes (one per core) sharing the run directory, one shard of the tasks each
pids=()
for i in $(seq 0 $((P - 1))); do
  $SEAL arc eval "${ARGS[@]}" --tasks "$TASKS" --conditions "teacher:$RL_RUN@1" --shard "$i/$P" --out "$RUN" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
$SEAL arc report "$RUN"
