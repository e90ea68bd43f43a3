#!/usr/bin/env bash
# Reruns every experiment of the report (SPEC §5) on the real offline data, one seed.
# Usage: bash experiments/run_report.sh [RUNS_DIR] [PRESET ...]   (default ./runs, all six)
# Each preset trains in RUNS_DIR/<preset> (its output in RUNS_DIR/<preset>.log); rerunning
# resumes / continues. SEED=S trains seed S (default 0); SEEDS=0,1,2 trains those seeds in one
# run, one program (RUNS_DIR/<preset>/seed<S>); EPOCHS_<preset>=N overrides a
# preset's epochs (e.g. EPOCHS_cifar10_rae=40); JOBS=N trains N presets at a time (default
# 2 on a CPU-only machine with 2+ cores; JOBS=1: one after the other; PIN_CPUS=1 pins each
# to its share of the cores); SHARE_AE_STAGE=0 trains each preset's AE stage itself
# instead of starting cifar10_aegan/raegan from cifar10_rae's stage; EVAL_PASSES=N judges each
# finished run (raegan eval --passes N). experiments/run_report.py
# says why and how. PYTHON=/path/to/python runs it with that interpreter (default: python).
exec "${PYTHON:-python}" "$(dirname "$0")/run_report.py" "$@"
