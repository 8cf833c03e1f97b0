#!/usr/bin/env bash
# The accelerator checks of one lease, in the order of their value, each cut
# to the time left of a fixed budget: ant-pinpad's MJX steps/s against
# Brax's ant, the data-parallel scaling benchmark (bfloat16 and float32) on
# the `gpu` gridworld preset, the ant expert with the `paper` PPO settings
# sized to what is left (steps from the measured rate), then the ant base
# model's pretraining steps/s on that expert's data. JSON and the log go to
# $OUT (at most 8 files; each benchmark writes its JSON at its end, so one
# cut off by its limit leaves only its printed rows in the log). CHECKS picks
# them. The limits are set from one H200 lease (2026-11-30, docs/scaling.md),
# where 90 s did not finish the ant benchmark and 100 s not the three
# scaling phases.
# Usage: OUT=/tmp/out [CHECKS="ant_throughput scaling expert ant_pretrain"] \
#          bash benchmarks/gpu_checks.sh [budget_s]
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu_checks_out}; mkdir -p "$OUT"
BUDGET=${1:-545}
CHECKS=${CHECKS:-ant_throughput scaling expert ant_pretrain}
want() { [[ " $CHECKS " == *" $1 "* ]]; }
left() { echo $((BUDGET - SECONDS)); }
# Runs "$@" under a timeout of at most $1 seconds (and the time left).
step() {
  local t=$1; shift
  local l; l=$(left); [ "$t" -gt "$l" ] && t=$l
  if [ "$t" -lt 15 ]; then echo "== skipped (no time): $*"; return 1; fi
  echo "== $(date +%T) [${SECONDS}s] timeout ${t}s: $*"
  timeout "$t" "$@"; local rc=$?
  echo "== exit $rc after ${SECONDS}s"
  return $rc
}
python3 - <<'PY'
import jax, flax, optax, orbax.checkpoint as ocp, chex
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', ocp.__version__, 'chex', chex.__version__, jax.devices())
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader

# 1. The arena's simulation rate (also sizes the expert below).
want ant_throughput && step 130 python3 benchmarks/ant_throughput.py \
  --num_envs=2048,8192 --num_steps=50 --repeats=3 \
  --out="$OUT/ant_throughput.json"

# 2. Scaling benchmark, one device: MFU in bfloat16 and float32.
if want scaling; then
  step 70 python3 benchmarks/scaling.py --preset=gpu --devices=1 \
    --dtype=bfloat16 --phases=pretrain --out="$OUT/scaling_bf16.json"
  step 150 python3 benchmarks/scaling.py --preset=gpu --devices=1 \
    --dtype=bfloat16 --phases=metacontroller,internal_rl \
    --out="$OUT/scaling_bf16_mc_rl.json"
  step 90 python3 benchmarks/scaling.py --preset=gpu --devices=1 \
    --dtype=float32 --phases=pretrain --out="$OUT/scaling_f32.json"
fi

# 3. The ant expert: the paper's PPO settings, its steps sized to 12% of
# the ant's measured simulation rate (PPO also runs the networks and the
# updates: 17.7M steps took 127 s after compiling at 2048 environments, 15%
# of the bare rate) over what is left after ~130 s for compiling and
# evaluating, and after the ant base model's check when it is wanted; at
# most the preset's 100M. The expert is saved only at its end.
RESERVE=0; want ant_pretrain && RESERVE=130
want expert && STEPS=$(python3 - "$OUT/ant_throughput.json" \
    "$(($(left) - RESERVE))" <<'PY'
import json, sys
try:
  rows = json.load(open(sys.argv[1]))['rows']
  sps = max(r['steps_per_sec'] for r in rows
            if r['env'] == 'ant_pinpad' and r['num_envs'] == 2048)
except Exception:  # no measurement: a guess
  sps = 3e5
train_s = max(int(sys.argv[2]) - 130, 30)
per_iter = 1024 * 32 * 10    # batch x minibatches x unroll
steps = min(int(0.12 * sps * train_s), 100_000_000)
print(max(steps // per_iter, 1) * per_iter)
PY
)
if want expert; then
  echo "ant expert: $STEPS env steps"
  step $(($(left) - 10 - RESERVE)) python3 experiments/train_expert.py \
    --config=configs/ant.py:paper --workdir=/tmp/ant \
    --config.expert.num_timesteps="$STEPS"
  cp /tmp/ant/expert/summary.json "$OUT/expert_summary.json" 2>/dev/null
fi

# 4. The ant base model (Hawk 8 x 256, batch 512 x 500 steps) on that data.
if want ant_pretrain && [ -f /tmp/ant/checkpoints/expert.msgpack ] && \
    [ "$(left)" -ge 60 ]; then
  step 120 python3 benchmarks/scaling.py --config_file=configs/ant.py \
    --preset=paper --devices=1 --dtype=bfloat16 --phases=pretrain \
    --log_every=5 --repeats=2 \
    --expert_checkpoint=/tmp/ant/checkpoints/expert.msgpack \
    --out="$OUT/scaling_ant.json"
fi
echo "== done after ${SECONDS}s"
