#!/usr/bin/env bash
# Reruns every experiment of the report (SPEC §5) on the real offline data.
# Usage: bash experiments/run_report.sh [RUNS_DIR]   (default ./runs)
# Each preset trains in RUNS_DIR/<preset>; rerunning resumes / continues.
# EPOCHS_<preset>=N overrides a preset's epochs (e.g. EPOCHS_cifar10_rae=40).
set -uo pipefail
runs=${1:-runs}
mkdir -p "$runs"
for preset in mnist_ae cifar10_aegan cifar10_raegan mnist_aegan cifar10_ae cifar10_rae; do
  var="EPOCHS_${preset}"
  extra=()
  [[ -n "${!var:-}" ]] && extra=(--set "train.epochs=${!var}")
  echo "=== $preset $(date -u +%FT%TZ) ${extra[*]}"
  /usr/bin/time -f "wall %e s" raegan train --preset "$preset" --workdir "$runs/$preset" --no-progress "${extra[@]}"
done
