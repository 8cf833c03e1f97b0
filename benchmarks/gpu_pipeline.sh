#!/usr/bin/env bash
# The `gpu` preset's whole pipeline under a 9-minute budget on one GPU
# (benchmarks/timed_pipeline.py), then the files worth keeping into $OUT.
# Usage: OUT=/tmp/out bash benchmarks/gpu_pipeline.sh [budget_s] [overrides...]
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu_pipeline_out}; mkdir -p "$OUT"
BUDGET=${1:-540}; shift || true
W=/tmp/gpu_run
python3 - <<'PY'
import jax, flax, optax, orbax.checkpoint as ocp, chex
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', ocp.__version__, 'chex', chex.__version__, jax.devices())
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 benchmarks/timed_pipeline.py --config=configs/gridworld.py:gpu \
  --workdir=$W --budget_s="$BUDGET" --out="$OUT/timed_pipeline.json" -- "$@"
rc=$?
tail -c 3000000 $W/timed_pipeline.log > "$OUT/timed_pipeline.log"
cp $W/REPORT.md "$OUT/" 2>/dev/null
cp $W/control/results.json "$OUT/control_results.json" 2>/dev/null
cp $W/control/fig4_controllability.png "$OUT/" 2>/dev/null
find $W -name beta_traces.png | head -1 | xargs -r -I{} cp {} "$OUT/beta_traces.png"
find $W -name fig8_success.png | head -1 | xargs -r -I{} cp {} "$OUT/fig8_success.png"
exit $rc
