"""Reruns every experiment of the report (SPEC §5) on the real offline data, one seed.

    bash experiments/run_report.sh [RUNS_DIR] [PRESET ...]   (default ./runs, all six)

Each preset trains in ``RUNS_DIR/<preset>`` (its output in ``RUNS_DIR/<preset>.log``);
rerunning resumes unfinished runs from their checkpoints and skips finished ones.
Environment: ``SEED=S`` trains seed S (default 0); ``EPOCHS_<preset>=N`` overrides a
preset's epochs; ``JOBS=N`` trains N presets at a time (``PIN_CPUS=1``: each on its share of
the CPUs); ``SEEDS=0,1,2`` trains those seeds of each preset in one run, one program
(``train.seeds``: ``RUNS_DIR/<preset>/seed<S>`` each seed's folder; chained presets take each
seed's stage from the source's run of that seed); ``SHARE_AE_STAGE=0`` trains each preset's AE stage itself; ``EVAL_PASSES=N`` judges each
finished run with ``raegan eval RUNS_DIR/<preset> --passes N`` (its output in
``RUNS_DIR/<preset>.eval.log``; ``python experiments/make_results.py judge RUNS_DIR`` tables
them).

**The AE stage is trained once.** ``cifar10_rae``, ``cifar10_aegan`` and ``cifar10_raegan``
begin with the same AE stage (``train.ae_stage_epochs``: 120 epochs of the plain AE at batch
32), update for update, on the offline 7,068 training images (the full CIFAR-10 gives the GAN presets
other images than ``cifar10_rae``; ``cifar10_ae`` trains at batch 16, so its run is not that
stage: :func:`raegan_jax.runs.ae_stage_chain` decides). ``cifar10_rae`` keeps the
checkpoint of that epoch (``train.keep_epochs``) and the GAN presets start from it
(``train.ae_stage_from``) as soon as ``cifar10_rae`` has trained past it: the same weights
and numbers as training the stage again (tests/test_remedies.py).

**Two presets at a time** (``JOBS``, default 2 on a machine with two or more CPUs and no
accelerator). XLA:CPU keeps ~1.35 of 2 cores busy with one of these small CIFAR-10 models
(batch 32), so two runs side by side train more images per second between them than one
run alone (benchmarks/RESULTS.md: two 3-epoch ``cifar10_ae`` runs at once took 84-87 s
against 66 s for one alone, 1.5x the throughput). Each run keeps its own two-thread pool,
so it computes exactly what it computes alone. ``PIN_CPUS=1`` pins each worker to its share
of the CPUs (``taskset``) instead: no faster there, and a run with fewer threads rounds
its reductions otherwise (other numbers in the last digits). ``JOBS=1`` runs one preset at
a time.

SIGINT/SIGTERM are passed on to the runs, which save a mid-epoch checkpoint and stop; the
same command then resumes them exactly.
"""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Callable

from raegan_jax.config import IMAGE_SHAPES
from raegan_jax.configs import get_preset
from raegan_jax.data import available_splits, train_used
from raegan_jax.launch import Job, run_jobs
from raegan_jax.runs import ae_stage_chain
from raegan_jax.workdir import read_records

PRESETS = ("mnist_ae", "cifar10_ae", "cifar10_rae", "mnist_aegan", "cifar10_aegan",
           "cifar10_raegan")
# How often a worker with nothing to start looks again (seconds; 0.1 in the tests).
POLL_S = float(os.environ.get("RUN_REPORT_POLL_S", "2"))


def default_jobs(cpus: list[int]) -> int:
    """2 where there are two or more CPUs and no GPU/TPU (which two runs would share), else 1."""
    dev = pathlib.Path("/dev")
    accelerator = any(dev.glob("nvidia[0-9]*")) or any(dev.glob("accel[0-9]*"))
    return 2 if len(cpus) >= 2 and not accelerator else 1


def cpu_groups(cpus: list[int], jobs: int) -> list[list[int]] | None:
    """``cpus`` split into ``jobs`` contiguous groups of near-equal size, one per worker
    (``PIN_CPUS=1``); None (no pinning) for one job, fewer CPUs than jobs, or no ``taskset``."""
    if jobs < 2 or len(cpus) < jobs or not shutil.which("taskset"):
        return None
    cuts = [round(i * len(cpus) / jobs) for i in range(jobs + 1)]
    return [cpus[a:b] for a, b in zip(cuts, cuts[1:])]


def plan(presets: list[str], share: bool, sizes: dict[str, tuple[int, int]]
         ) -> tuple[dict[str, str], dict[str, int]]:
    """Which presets take their AE stage from which, and how long each stage is.

    Args:
      presets: the presets to run.
      share: whether chained presets take their stage from an earlier run.
      sizes: dataset -> (train, test) images on disk (:func:`~raegan_jax.data.available_splits`).

    Returns:
      ``({preset: source preset}, {preset: its train.ae_stage_epochs})`` for the chained
      presets; both empty when ``share`` is off.
    """
    if not share:
        return {}, {}
    chain = ae_stage_chain([get_preset(p) for p in presets], sizes)
    return chain, {name: get_preset(name).train.ae_stage_epochs for name in chain}


def work(name: str, sizes: dict[str, tuple[int, int]], chained: bool) -> float:
    """What a preset's run costs, roughly: the pixels its AE passes over (D's passes
    counted too), over the epochs it trains itself (a chained preset skips its stage)."""
    cfg = get_preset(name)
    images = train_used(cfg, sizes[cfg.data.dataset][0])
    epochs = cfg.train.epochs - (cfg.train.ae_stage_epochs if chained else 0)
    return (images * epochs * math.prod(IMAGE_SHAPES[cfg.data.dataset])
            * cfg.model.passes * (1 + cfg.is_gan))


def order(presets: list[str], chain: dict[str, str], sizes: dict[str, tuple[int, int]]
          ) -> list[str]:
    """The order workers take presets in: the sources of AE stages first (the chained ones
    wait for them), then the rest, the costliest first (:func:`work`), so that no long run
    is left to run alone at the end. A worker takes the first one that may start."""
    sources = [p for p in presets if p in set(chain.values())]
    rest = [p for p in presets if p not in sources]
    return sources + sorted(rest, key=lambda p: work(p, sizes, p in chain), reverse=True)


def stage_ready(source: pathlib.Path, epoch: int, source_ended: bool) -> bool:
    """Whether a run may start from ``source``'s checkpoint of ``epoch``: the source has
    recorded a later epoch (so that checkpoint is complete) or has stopped. A many-seed
    source records in its seeds' folders, all at once."""
    recorded = read_records(next(iter(sorted(source.glob("seed*/"))), source))
    return source_ended or any(r["epoch"] > epoch for r in recorded)


def command(preset: str, runs: pathlib.Path, chain: dict[str, str], stage: dict[str, int],
            env: dict[str, str]) -> list[str]:
    """The ``raegan train`` command of ``preset`` (seed, epochs and stage sharing set): a
    source keeps the checkpoint of every epoch its chained presets' stages end at."""
    seeds = f"train.seeds={env['SEEDS']}" if env.get("SEEDS") else f"train.seed={env.get('SEED', '0')}"
    cmd = ["raegan", "train", "--preset", preset, "--workdir", str(runs / preset),
           "--no-progress", "--set", seeds]
    if env.get(f"EPOCHS_{preset}"):
        cmd += ["--set", f"train.epochs={env[f'EPOCHS_{preset}']}"]
    keep = sorted({stage[name] for name, src in chain.items() if src == preset})
    if keep:
        cmd += ["--set", f"train.keep_epochs={','.join(map(str, keep))}"]
    if preset in chain:
        cmd += ["--set", f"train.ae_stage_from={runs / chain[preset]}"]
    return cmd


def eval_command(run: pathlib.Path, env: dict[str, str]) -> list[str]:
    """``raegan eval`` of a finished run (a many-seed run's: each seed's, in turn)."""
    return ["raegan", "eval", str(run), "--passes", env["EVAL_PASSES"]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: bash experiments/run_report.sh [RUNS_DIR] [PRESET ...]"
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    # Checked before anything is written: `--help` once became a runs folder named "--help".
    for a in argv:
        if a.startswith("-"):
            raise SystemExit(f"run_report: unknown option {a!r}; {usage}")
    runs = pathlib.Path(argv[0] if argv else "runs")
    presets = list(argv[1:]) or list(PRESETS)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"run_report: unknown preset(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(PRESETS)}; {usage}")
    env = dict(os.environ)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    jobs_at_once = int(env.get("JOBS") or default_jobs(cpus))
    if jobs_at_once < 1:
        raise SystemExit(f"JOBS={jobs_at_once}: must be at least 1")
    runs.mkdir(parents=True, exist_ok=True)
    sizes = available_splits([get_preset(p) for p in presets], log=lambda msg: None)
    chain, stage = plan(presets, env.get("SHARE_AE_STAGE", "1") == "1", sizes)
    todo = order(presets, chain, sizes)
    groups = cpu_groups(cpus, jobs_at_once) if env.get("PIN_CPUS") == "1" else None
    commit = subprocess.run(["git", "-C", str(pathlib.Path(__file__).parent), "rev-parse",
                             "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; python {sys.prefix}; {jobs_at_once} at a time"
          + (f", pinned to CPUs {groups}" if groups else "")
          + (f"; AE stages from {chain}" if chain else ""), flush=True)

    def ready(preset: str) -> Callable[[set[str]], bool]:
        if preset not in chain:
            return lambda ended: True
        return lambda ended: stage_ready(runs / chain[preset], stage[preset], chain[preset] in ended)

    def started(job: Job, cmd: list[str]) -> None:
        print(f"=== {job.name} {time.strftime('%FT%TZ', time.gmtime())}: {' '.join(cmd)}",
              flush=True)

    def finished(job: Job, rc, seconds: float) -> None:
        print(f"--- {job.name}: {'ok' if rc == 0 else f'FAILED rc={rc}'}, wall {seconds:.0f} s "
              f"(log {job.log})", flush=True)

    jobs = [Job(p, lambda p=p: command(p, runs, chain, stage, env), runs / f"{p}.log", ready(p))
            for p in todo]
    if env.get("EVAL_PASSES"):  # each run judged once it has ended (after any run still to start)
        jobs += [Job(f"{p}:eval", lambda p=p: eval_command(runs / p, env),
                     runs / f"{p}.eval.log", lambda ended, p=p: p in ended) for p in todo]
    wrap = (lambda i, cmd: ["taskset", "-c", ",".join(map(str, groups[i]))] + cmd) if groups else None
    start = time.time()
    outcome = run_jobs(jobs, jobs_at_once, poll_s=POLL_S, wrap=wrap, on_start=started,
                       on_end=finished)
    left = [name for name in presets + [f"{p}:eval" for p in presets] if name in outcome.not_run]
    print(f"whole report: {time.time() - start:.0f} s"
          + (f"; FAILED: {' '.join(outcome.failed)}" if outcome.failed else "")
          + (f"; not run: {' '.join(left)}" if left else ""), flush=True)
    return 1 if outcome.failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
