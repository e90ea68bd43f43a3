#!/usr/bin/env bash
# Reruns every experiment of the report (SPEC §5) on the real offline data, one seed.
# Usage: bash experiments/run_report.sh [RUNS_DIR] [PRESET ...]   (default ./runs, all six)
# Each preset trains in RUNS_DIR/<preset>; rerunning resumes / continues.
# EPOCHS_<preset>=N overrides a preset's epochs (e.g. EPOCHS_cifar10_rae=40);
# SEED=S trains seed S (default 0).
set -uo pipefail
runs=${1:-runs}; shift || true
presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(mnist_ae cifar10_ae cifar10_rae mnist_aegan cifar10_aegan cifar10_raegan)
mkdir -p "$runs"
start=$(date +%s)
echo "commit $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null)"
for preset in "${presets[@]}"; do
  var="EPOCHS_${preset}"
  extra=(--set "train.seed=${SEED:-0}")
  [[ -n "${!var:-}" ]] && extra+=(--set "train.epochs=${!var}")
  echo "=== $preset $(date -u +%FT%TZ) ${extra[*]}"
  /usr/bin/time -f "wall %e s" raegan train --preset "$preset" --workdir "$runs/$preset" --no-progress "${extra[@]}"
done
echo "whole report: $(( $(date +%s) - start )) s"
