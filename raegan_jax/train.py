"""The training loop: :func:`train_and_evaluate` (what the ``raegan train`` CLI runs).

Per epoch it runs one sweep over the training images (three for the
``phases`` policy: reconstruction, D, adversarial AE), evaluates every pass on
the test images, logs metrics (which leave the device only here, once per
epoch), and saves an Orbax checkpoint. Running it again on the same workdir
resumes from the newest intact checkpoint and ends with exactly the parameters
of an uninterrupted run: per-step randomness is ``fold_in(rng, step)`` and the
data order of sweep k is ``permutation(fold_in(seed, k))``.

A SIGTERM or SIGINT (preemption on Colab, TPU VMs, SLURM; Ctrl-C) lets the
step in flight finish, saves a checkpoint mid-epoch (with the epoch's metric
sums so far) and raises :class:`Preempted`; the rerun resumes at that step.
In a multi-process run, only process 0 writes logs, figures and the summary,
and a SIGTERM is agreed on through JAX's preemption sync point so that every
process saves at the same step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from raegan_jax import data as data_lib
from raegan_jax import runs
from raegan_jax import seeds as seeds_lib
from raegan_jax.config import Config, ConfigError, validate
from raegan_jax.figures import run_figures
from raegan_jax.parallel import (barrier, check_batch_divides, is_main, log, make_mesh,
                                 put_replicated, to_host)
from raegan_jax.programs import (Evaluator, device_sweep_batches, start_sweep, sweep_order,
                                 sweep_programs, sweep_sharded)
from raegan_jax.stages import Sweep, sweep_plan
from raegan_jax.workdir import (WorkdirError, WorkdirLock, append_record, encode_sums, epoch_line,
                                epoch_record, read_history, summary as run_summary,
                                tensorboard_writer)


if TYPE_CHECKING:  # annotations only
    from raegan_jax.checkpoint import Checkpointer
    from raegan_jax.state import TrainState


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf. The last good checkpoint is kept."""


class Preempted(RuntimeError):
    """The run stopped on a signal after saving a checkpoint; rerunning resumes it.

    Attributes:
      signum: the signal (``signal.SIGTERM``, ``signal.SIGINT``).
      checkpoint: the checkpoint folder it saved (or the one already there).
    """

    def __init__(self, msg: str, signum: int, checkpoint: pathlib.Path):
        super().__init__(msg)
        self.signum = signum
        self.checkpoint = checkpoint


class _StopRequests:
    """Turns SIGTERM/SIGINT into a request to stop at the next step boundary.

    One process: Python handlers set a flag (a second signal acts as usual,
    e.g. a second Ctrl-C interrupts at once). Several processes: SIGTERM is
    left to JAX's preemption service, and :meth:`requested` asks its sync
    point, which every process reaches at the same dispatch, so all of them
    stop and save together (a lone flag would leave the others waiting in a
    collective).
    """

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        signums = [signal.SIGTERM, signal.SIGINT] if jax.process_count() == 1 else []
        for signum in signums:
            self._old[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now, the usual way
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def requested(self, dispatch: int) -> bool:
        """True (on every process alike) if the run should save and stop before ``dispatch``."""
        if jax.process_count() > 1:
            if multihost_utils.reached_preemption_sync_point(dispatch):
                self.signum = signal.SIGTERM
                return True
            return False
        return self.signum is not None

    def restore(self) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old = {}


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *, data_dir: str | None = None,
                       progress: bool = True) -> dict:
    """Trains ``config`` in ``workdir`` (resuming if it holds this run) and evaluates it.

    Args:
      config: a validated :class:`~raegan_jax.config.Config` (see ``get_preset``).
      workdir: where the config, metrics, checkpoints, figures and summary go.
      data_dir: where the raw data lives (overrides ``data.data_dir``).
      progress: show a progress bar.

    Returns:
      The summary dict also written to ``<workdir>/summary.json``.

    Raises:
      ConfigError, DataError, WorkdirError, CheckpointError, TrainingDiverged:
        with a message naming the problem; nothing on disk is deleted.
      Preempted: a SIGTERM/SIGINT arrived; a checkpoint was saved at the
        step reached, and calling again resumes there.
    """
    cfg = config
    validate(cfg)
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {workdir} is a file")
    resuming = runs.check_config(cfg, workdir)
    mesh = make_mesh(batch_size=cfg.train.batch_size)
    try:
        check_batch_divides(cfg.train.batch_size, mesh)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    # Held until the run ends, however it ends (the kernel drops it if the process dies).
    lock = WorkdirLock(workdir, jax.process_index())
    try:
        return _train(cfg, workdir, mesh, resuming, data_dir, progress)
    finally:
        lock.release()


def _train(cfg: Config, workdir: pathlib.Path, mesh, resuming: bool, data_dir: str | None,
           progress: bool) -> dict:
    t_start = time.perf_counter()
    resample = cfg.data.resample_train
    # Resampling loads the whole training split; each sweep's permutation of it
    # picks that sweep's train_examples images (its first spe * batch entries).
    # Several processes: process 0 prepares the tfds dataset (once), then the others read it.
    if not is_main():
        barrier("raegan_data_prepared")
    ds = data_lib.load(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_examples=0))
                       if resample else cfg, data_dir)
    if is_main():
        barrier("raegan_data_prepared")
    barrier("raegan_data_loaded")
    n_train, n_test = len(ds.train.images), len(ds.test.images)
    n_used = min(cfg.data.train_examples, n_train) if resample else n_train
    if n_used < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} exceeds the {n_used} training images")
    held = ("no validation split: the test split stands in for it (data.validation_examples=0)"
            if ds.validation is None else f"{len(ds.validation.images)} validation")
    log(f"data: {ds.source}: {n_train} train / {held} / {n_test} test images"
        + (f"; each epoch draws {n_used} of them afresh" if resample else ""))
    if ds.note:
        log("!" * 78 + f"\n!! FEWER IMAGES THAN THE PRESET ASKS FOR: {ds.note}\n" + "!" * 78)
    if not resuming and is_main():
        (workdir / "config.json").write_text(cfg.to_json())
    if is_main() and seeds_lib.many(cfg):  # each seed's folder: its own run's config
        for mcfg, mdir in seeds_lib.members(cfg, workdir):
            mdir.mkdir(exist_ok=True)
            (mdir / "config.json").write_text(mcfg.to_json())
    bs = cfg.train.batch_size
    spe = n_used // bs  # drop_remainder
    ckpt = runs.checkpointer(cfg, workdir, spe)
    try:
        return _loop(cfg, workdir, mesh, ds, spe, ckpt, progress, t_start)
    finally:
        ckpt.close()  # also on errors: no Orbax thread outlives the run


def _loop(cfg: Config, workdir: pathlib.Path, mesh, ds, spe: int, ckpt: Checkpointer,
          progress: bool, t_start: float) -> dict:
    bs, n_train = cfg.train.batch_size, len(ds.train.images)
    state, start_epoch, partial = runs.start(cfg, ckpt, mesh, spe, n_train)
    # The run itself, or each seed of a many-seed run (train.seeds): its config and
    # the workdir of its records, figures and summary.
    members = seeds_lib.members(cfg, workdir)
    histories = [read_history(d, start_epoch, rewrite=is_main()) for _, d in members]
    step = seeds_lib.step_of(state)  # tracked on the host from here: no device syncs

    # One program per kind of sweep the remaining epochs run, each compiled ahead
    # of time, so every step, the first included, is timed alike.
    n_dispatch = min(cfg.train.steps_per_dispatch, spe)
    kinds = {sw.program for e in range(start_epoch, cfg.train.epochs) for sw in sweep_plan(cfg, e)}
    seeded = seeds_lib.many(cfg)
    batches_like = jax.ShapeDtypeStruct(
        (*(len(members),) * seeded, spe, bs, *ds.train.images.shape[1:]), np.uint8,
        sharding=sweep_sharded(mesh, seeded))
    programs = sweep_programs(cfg, kinds, n_dispatch, spe, mesh)
    compile_s = sum(program.compile(state, batches_like) for program in programs.values())
    evaluate = Evaluator(cfg, mesh, ds.val.images)
    # The training images live on the devices for the whole run; each sweep's batches are
    # gathered there in its order (only the order crosses from the host).
    train_images = put_replicated(ds.train.images, mesh)
    barrier("raegan_compiled")  # every process starts stepping (and collecting) together
    writers = [tensorboard_writer(d) for _, d in members]
    for writer in writers:
        if writer is not None:  # which split TensorBoard's val/… is
            writer.add_text("val_split", f"val/… is the {ds.val_split} split ({len(ds.val.images)} images)")
    bar = _progress(progress, cfg.train.epochs, start_epoch, cfg.preset)
    stop = _StopRequests()
    dispatches = 0
    evals, last = [None] * len(members), False
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            plan = sweep_plan(cfg, epoch)
            done = [(n, put_replicated(s, mesh)) for n, s in partial["sweeps"]] if partial else []
            t0 = time.perf_counter() - (partial["seconds"] if partial else 0.0)
            for i in range(len(done), len(plan)):
                sweep, pos = plan[i], step % spe
                sums = None
                if partial and partial["current"] is not None:
                    sums = put_replicated(partial["current"], mesh)
                partial = None
                if pos == 0:
                    state = start_sweep(cfg, state, sweep)
                program = programs[sweep.program]
                order = put_replicated(sweep_order(cfg, step // spe, n_train), mesh)
                batches = device_sweep_batches(train_images, order, spe, bs, mesh)
                while pos < spe:
                    if stop.requested(dispatches):
                        raise _preempt(cfg, ckpt, state, step, epoch, done, (sweep, sums),
                                       time.perf_counter() - t0, stop.signum)
                    state, s = program(state, batches)
                    sums = s if sums is None else _add_sums(sums, s)
                    dispatches += 1
                    ran = min(n_dispatch, spe - pos)
                    pos, step = pos + ran, step + ran
                done.append((sweep.name, sums))
            sweeps = to_host(done)  # metrics leave the device once per epoch
            seconds = time.perf_counter() - t0
            mine = [[(n, seeds_lib.member_of(cfg, s, k)) for n, s in sweeps]
                    for k in range(len(members))]
            for (mcfg, _), sw in zip(members, mine):
                bad = [int(s["nonfinite_step"]) for _, s in sw if int(s["nonfinite_step"]) >= 0]
                if bad:
                    who = f" (seed {mcfg.train.seed})" if seeded else ""
                    raise TrainingDiverged(
                        f"the loss became NaN/Inf at step {bad[0]} (epoch {epoch + 1}){who}; "
                        f"stopped; the last good checkpoint is kept in {ckpt.directory}")
            last = epoch + 1 == cfg.train.epochs
            evaluated = (epoch + 1) % cfg.train.eval_every_epochs == 0 or last
            lines = []
            for k, ((mcfg, mdir), writer) in enumerate(zip(members, writers)):
                evals[k] = to_host(evaluate(seeds_lib.member_of(cfg, state, k))) if evaluated else None
                rec = epoch_record(epoch + 1, mine[k], evals[k], seconds, bs)
                if epoch == start_epoch:
                    rec["compile_seconds"] = compile_s
                histories[k].append(rec)
                # The record first: a kill between the two leaves a record past the newest
                # checkpoint, which the rerun drops and redoes (never a checkpoint without it).
                if is_main():
                    append_record(mdir, rec, writer)
                lines.append((f"seed {mcfg.train.seed}: " if seeded else "") + epoch_line(rec))
            if (epoch + 1) % cfg.train.checkpoint_every_epochs == 0 or last:
                ckpt.save(step, state, {"config": cfg.to_dict(), "epoch": epoch + 1, "step": step})
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(lines[0])
            else:  # no bar (--no-progress or not a terminal): one line per epoch (and seed)
                for line in lines:
                    log(f"epoch {epoch + 1}/{cfg.train.epochs} {line}")
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        for writer in writers:
            if writer is not None:
                writer.close()
    return _finish(cfg, workdir, mesh, ds, state, members, histories, evals if last else None,
                   evaluate, compile_s, t_start, step)


def _finish(cfg: Config, workdir: pathlib.Path, mesh, ds, state: TrainState, members: list,
            histories: list, evals: list | None, evaluate: Evaluator, compile_s: float,
            t_start: float, step: int) -> dict:
    """Each member's final evaluation, test split (read once, here), figures and summary;
    a many-seed run also saves each seed's final state in its folder (a run that
    ``raegan eval`` and warm starts read) and writes the table over the seeds."""
    # The last epoch was just evaluated (``evals``); a rerun of a finished run evaluates anew.
    test = None if ds.validation is None else Evaluator(cfg, mesh, ds.test.images)
    summaries = {}
    for k, (mcfg, mdir) in enumerate(members):
        mstate = seeds_lib.member_of(cfg, state, k)
        final_eval = evals[k] if evals is not None else to_host(evaluate(mstate))
        # The test split where it stands in for val is the same evaluation.
        test_eval = final_eval if test is None else to_host(test(mstate))
        summ = run_summary(mcfg, ds, histories[k], final_eval, test_eval, compile_s,
                           time.perf_counter() - t_start, step)
        summaries[mcfg.train.seed] = summ
        if seeds_lib.many(cfg):
            seeds_lib.save_member(mcfg, mdir, mstate, step)
        if is_main():
            run_figures(mcfg, mstate, ds, histories[k], mdir)
            (mdir / "summary.json").write_text(json.dumps(summ, indent=2))
    summary = (seeds_lib.table(cfg, summaries, compile_s, time.perf_counter() - t_start)
               if seeds_lib.many(cfg) else summaries[cfg.train.seed])
    if is_main():
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"summary: {json.dumps({k: summary[k] for k in ('val_recon_loss', 'test_recon_loss', 'images_per_sec')})}"
            f" -> {workdir / 'summary.json'}")
    return summary


def _preempt(cfg: Config, ckpt: Checkpointer, state: TrainState, step: int, epoch: int,
             done: list, current: tuple[Sweep, Any], seconds: float, signum: int) -> Preempted:
    """Saves a mid-epoch checkpoint (with the epoch's metric sums so far); returns the exception."""
    sweep, sums = current
    if step in ckpt.all_steps():  # nothing ran since the last checkpoint
        path = ckpt.path(step)
    else:
        partial = {"sweeps": [(n, encode_sums(to_host(s))) for n, s in done],
                   "current": None if sums is None else encode_sums(to_host(sums)),
                   "seconds": seconds}
        ckpt.save(step, state, {"config": cfg.to_dict(), "epoch": epoch, "step": step,
                                "partial": partial})
        path = ckpt.path(step)
    name = signal.Signals(signum).name
    return Preempted(f"stopped by {name} at step {step} (epoch {epoch + 1}); saved checkpoint "
                     f"{path}; rerun the same command to resume from it", signum, path)


@jax.jit  # one dispatch per call instead of one per metric
def _add_sums(a: dict, b: dict) -> dict:
    """Accumulates two calls' metric sums on device (keeping the first non-finite step)."""
    out = {k: a[k] + b[k] for k in a if k != "nonfinite_step"}
    out["nonfinite_step"] = jnp.where(a["nonfinite_step"] >= 0, a["nonfinite_step"], b["nonfinite_step"])
    return out


def _progress(on: bool, total: int, done: int, name: str):
    if not (on and is_main() and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc=name, unit="epoch")


