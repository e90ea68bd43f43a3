#!/usr/bin/env bash
# One call on a lent GPU machine (the workplace's `device` tool): benchmarks, then
# the given sweep specs in parallel, then everything small packed into $OUT.
#   bash experiments/device_run.sh SECONDS SPEC.json [SPEC.json ...]
# It expects carried wheels in .whl/ (tfds and friends, absent from that image)
# and the raw CIFAR-10 npz in .gpudata/cifar10/ (../shared is not there).
set -u
budget=${1:?seconds}; shift
end=$((SECONDS + budget))
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD RAEGAN_DATA_DIR=$PWD/.gpudata PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint, torch; print(jax.__version__, jax.devices(), flax.__version__, optax.__version__, torch.__version__)" | tee -a "$out/env.txt"
# Prepare the tfds datasets once, before parallel runs read them.
python3 -c "import raegan_jax as rj; [rj.load_data(rj.get_preset(p)) for p in ('mnist_ae', 'cifar10_ae')]" || exit 4
if [[ -n "${BENCH:-}" ]]; then  # alone on the machine: nothing else runs while it times
  timeout "${BENCH}" python3 -m raegan_jax.cli bench --torch --repeats 20 --warmup 5 ${BENCH_ARGS:-} \
    --out "$out/bench_gpu" > "$out/bench.log" 2>&1; tail -20 "$out/bench.log"
fi
runs=/tmp/runs; mkdir -p $runs
python3 - "$@" > /tmp/all.json <<'PY'
import json, sys
print(json.dumps([e for p in sys.argv[1:] for e in json.load(open(p))]))
PY
timeout $((end - SECONDS - 25)) python3 experiments/sweep.py run /tmp/all.json --runs $runs \
  --jobs "${JOBS:-12}" --set train.steps_per_dispatch=32 \
  --set train.checkpoint_every_epochs=1000 2>&1 | tee "$out/sweep.log" | tail -5
for spec in "$@"; do
  python3 experiments/sweep.py table "$spec" --runs $runs --json "$out/$(basename "$spec" .json)_rows.json" \
    > "$out/$(basename "$spec" .json)_table.md" 2>&1
done
tar czf "$out/runs.tgz" --exclude=checkpoints --exclude=tensorboard -C /tmp runs && rm -f "$out"/*_rows.json
ls -la "$out"
