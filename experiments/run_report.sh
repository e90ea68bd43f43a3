#!/usr/bin/env bash
# Reruns every experiment of the report (SPEC §5) on the real offline data, one seed.
# Usage: bash experiments/run_report.sh [RUNS_DIR] [PRESET ...]   (default ./runs, all six)
# Each preset trains in RUNS_DIR/<preset>; rerunning resumes / continues.
# EPOCHS_<preset>=N overrides a preset's epochs (e.g. EPOCHS_cifar10_rae=40);
# SEED=S trains seed S (default 0).
# cifar10_rae, cifar10_aegan and cifar10_raegan begin with an AE stage (train.ae_stage_epochs)
# that is, update for update, the first 120 epochs of cifar10_ae (on the offline 8,068
# images; the full CIFAR-10 gives the GAN presets other images: bench.ae_stage_chain
# decides). When cifar10_ae runs here first, it keeps the checkpoint of that epoch and they
# start from it (train.ae_stage_from): the same weights and numbers as training the stage
# again (tests/test_remedies.py), in ~38 min less (benchmarks/RESULTS.md).
# SHARE_AE_STAGE=0 trains each preset on its own.
set -uo pipefail
runs=${1:-runs}; shift || true
presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(mnist_ae cifar10_ae cifar10_rae mnist_aegan cifar10_aegan cifar10_raegan)
mkdir -p "$runs"
start=$(date +%s)
echo "commit $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null)"
keep="" chained=" " source=""
if [[ "${SHARE_AE_STAGE:-1}" == 1 ]]; then
  # "SOURCE K name ...": the plain-AE preset, its epochs to keep, the presets chained to it.
  read -r source keep names < <(python - "${presets[@]}" <<'PY'
import sys
from raegan_jax.bench import ae_stage_chain, available_splits
from raegan_jax.config import get_preset
names = sys.argv[1:]
chain = ae_stage_chain(names, available_splits(names, log=lambda msg: None))
src = sorted(set(chain.values()))
if len(src) == 1:
    print(src[0], ",".join(sorted({str(get_preset(n).train.ae_stage_epochs) for n in chain})), *chain)
PY
)
  chained=" ${names:-} "
fi
for preset in "${presets[@]}"; do
  var="EPOCHS_${preset}"
  extra=(--set "train.seed=${SEED:-0}")
  [[ -n "${!var:-}" ]] && extra+=(--set "train.epochs=${!var}")
  if [[ -n "$source" && "$preset" == "$source" ]]; then
    extra+=(--set "train.keep_epochs=$keep")
  elif [[ "$chained" == *" $preset "* ]]; then
    extra+=(--set "train.ae_stage_from=$runs/$source")
  fi
  echo "=== $preset $(date -u +%FT%TZ) ${extra[*]}"
  /usr/bin/time -f "wall %e s" raegan train --preset "$preset" --workdir "$runs/$preset" --no-progress "${extra[@]}"
done
echo "whole report: $(( $(date +%s) - start )) s"
