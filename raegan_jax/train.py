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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from raegan_jax import data as data_lib
from raegan_jax import figures, losses
from raegan_jax.checkpoint import Checkpointer, CheckpointError, load_checkpoint, load_params
from raegan_jax.config import Config, ConfigError, diff, from_dict, validate
from raegan_jax.figures import train_recon_loss
from raegan_jax.models import to_images
from raegan_jax.parallel import (barrier, check_batch_divides, make_mesh, put_batch,
                                 put_replicated, to_host)
from raegan_jax.programs import (epoch_permutation, make_eval_step, make_multi_step,
                                 sweep_batches, sweep_sharded)
from raegan_jax.stages import (AE_STAGE, GROUPED_METRICS, STEP_GROUPS, Sweep, ae_stage_config,
                               ae_stage_mismatch, sweep_plan)
from raegan_jax.state import (STAGE_RECON, TrainState, carry_opt_state, create_train_state, eval_params,
                              restart_ae_optimizer)
from raegan_jax.steps import ae_logits, bind
from raegan_jax.workdir import (RESUMABLE_FIELDS, WorkdirError, WorkdirLock, append_record,
                                check_config, config_mismatch, read_history, read_records,
                                write_records)

# Step counts (summed, not averaged) and the names they are logged under.
_COUNTS = {"ae_updates": "ae_steps", "d_updates": "d_steps", "stage_switches": "stage_switches"}


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


def _is_main() -> bool:
    return jax.process_index() == 0


def _log(msg: str) -> None:
    if _is_main():
        print(msg, flush=True)


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


def _value(x) -> Any:
    """A fetched metric as a float or a list of floats (per pass)."""
    x = np.asarray(x, np.float64)
    return float(x) if x.ndim == 0 else x.tolist()


def sweep_means(sums: dict, prefix: str, groups: bool = True) -> dict:
    """Per-step means of one sweep's metric sums (already fetched), named ``prefix + key``.

    Step groups (:data:`~raegan_jax.stages.STEP_GROUPS`) are averaged over
    their own steps, with ``<group>/fraction`` their share of the sweep's
    steps; step counts (``ae_steps``, ``d_steps``, ``stage_switches``) are sums.
    """
    n = int(sums["count"])
    rec: dict[str, Any] = {f"{prefix}steps": n}
    for k, v in sums.items():
        group = k.split("/")[0]
        if k in ("count", "nonfinite_step") or group in STEP_GROUPS:
            continue
        if k in _COUNTS:
            rec[prefix + _COUNTS[k]] = int(v)
        else:
            rec[prefix + k] = _value(np.asarray(v) / max(n, 1))
    for g in STEP_GROUPS if groups else ():
        g_steps = int(sums.get(f"{g}/steps", 0))
        if g_steps == 0:
            continue
        rec[f"{prefix}{g}/fraction"] = g_steps / max(n, 1)
        for k in GROUPED_METRICS:
            if f"{g}/{k}" in sums:
                rec[f"{prefix}{g}/{k}"] = _value(np.asarray(sums[f"{g}/{k}"]) / g_steps)
    return rec


def _epoch_record(epoch: int, sweeps: list[tuple[str | None, dict]], evals: dict | None,
                  seconds: float, batch_size: int) -> dict:
    """One metrics.jsonl record from the epoch's per-sweep sums (already fetched).

    An epoch of one sweep logs ``train/<metric>``; an epoch of several
    (``phases``) logs each sweep under its own name, ``train/<sweep>/<metric>``,
    and no blend of them.
    """
    steps = sum(int(s["count"]) for _, s in sweeps)
    rec: dict[str, Any] = {"epoch": epoch, "steps": steps,
                           "images_per_sec": steps * batch_size / seconds if seconds > 0 else 0.0,
                           "epoch_seconds": seconds}
    for name, sums in sweeps:
        # Step groups matter within a sweep whose stage can change (threshold, alternate).
        rec.update(sweep_means(sums, "train/" if len(sweeps) == 1 else f"train/{name}/",
                               groups=len(sweeps) == 1))
    for k in ("ae_updates", "d_updates"):  # counts add up honestly over sweeps
        if k in sweeps[0][1]:
            rec[_COUNTS[k]] = sum(int(s[k]) for _, s in sweeps)
    if evals:
        for k, v in evals.items():
            rec[f"val/{k}"] = _value(v)
        for suffix in ("", "_live"):  # _live: the live D's, beside its weight average
            if "d_fake_acc" + suffix in evals:
                rec["val/balance_gap" + suffix] = losses.balance_gap(evals["d_fake_acc" + suffix])
    return rec


class _Evaluator:
    """Evaluates the state on the test set, held on device as sharded, zero-padded batches."""

    def __init__(self, cfg: Config, mesh, test_images: np.ndarray):
        bs = cfg.train.batch_size
        n = len(test_images)
        pad = (-n) % bs
        images = np.concatenate([test_images, np.zeros((pad, *test_images.shape[1:]), np.uint8)])
        weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        self.batches = [put_batch((images[i:i + bs], weights[i:i + bs]), mesh)
                        for i in range(0, len(images), bs)]
        self.step = make_eval_step(cfg, mesh=mesh)

    def __call__(self, state: TrainState) -> dict:
        """Weighted means over the whole test set (still on device)."""
        parts = [self.step(state, x, w) for x, w in self.batches]
        weight = sum(m["weight"] for m in parts)
        return {k: sum(m[k] * m["weight"] for m in parts) / weight for k in parts[0] if k != "weight"}


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
    resuming = check_config(cfg, workdir)
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
    if not _is_main():
        barrier("raegan_data_prepared")
    ds = data_lib.load(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_examples=0))
                       if resample else cfg, data_dir)
    if _is_main():
        barrier("raegan_data_prepared")
    barrier("raegan_data_loaded")
    n_train, n_test = len(ds.train.images), len(ds.test.images)
    n_used = min(cfg.data.train_examples, n_train) if resample else n_train
    if n_used < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} exceeds the {n_used} training images")
    _log(f"data: {ds.source}: {n_train} train / {n_test} test images"
         + (f"; each epoch draws {n_used} of them afresh" if resample else ""))
    if ds.note:
        _log("!" * 78 + f"\n!! FEWER IMAGES THAN THE PRESET ASKS FOR: {ds.note}\n" + "!" * 78)
    if not resuming and _is_main():
        (workdir / "config.json").write_text(cfg.to_json())
    bs = cfg.train.batch_size
    spe = n_used // bs  # drop_remainder
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints,
                        keep_steps=tuple(e * spe for e in cfg.train.keep_epochs))
    try:
        return _loop(cfg, workdir, mesh, ds, spe, ckpt, progress, t_start)
    finally:
        ckpt.close()  # also on errors: no Orbax thread outlives the run


def _loop(cfg: Config, workdir: pathlib.Path, mesh, ds, spe: int, ckpt: Checkpointer,
          progress: bool, t_start: float) -> dict:
    bs, n_train = cfg.train.batch_size, len(ds.train.images)
    state = put_replicated(create_train_state(cfg, jax.random.key(cfg.train.seed)), mesh)
    state, start_epoch, partial = _resume(cfg, ckpt, state, mesh, spe, n_train)
    history = read_history(workdir, start_epoch, rewrite=_is_main())
    step = int(to_host(state.step))  # tracked on the host from here: no device syncs

    # One program per kind of sweep the remaining epochs run, each compiled ahead
    # of time, so every step, the first included, is timed alike.
    n_dispatch = min(cfg.train.steps_per_dispatch, spe)
    kinds = {sw.program for e in range(start_epoch, cfg.train.epochs) for sw in sweep_plan(cfg, e)}
    batches_like = jax.ShapeDtypeStruct((spe, bs, *ds.train.images.shape[1:]), np.uint8,
                                        sharding=sweep_sharded(mesh))
    programs, compile_s = {}, 0.0
    for kind in sorted(kinds, key=repr):
        if kind == AE_STAGE:  # the plain AE's step, on this run's state
            programs[kind] = make_multi_step(ae_stage_config(cfg), n_dispatch, steps_per_epoch=spe,
                                             mesh=mesh)
        else:
            programs[kind] = make_multi_step(cfg, n_dispatch, steps_per_epoch=spe, mesh=mesh,
                                             stage=kind)
        compile_s += programs[kind].compile(state, batches_like)
    evaluate = _Evaluator(cfg, mesh, ds.test.images)
    barrier("raegan_compiled")  # every process starts stepping (and collecting) together
    writer = _tb_writer(workdir)
    bar = _progress(progress, cfg.train.epochs, start_epoch, cfg.preset)
    stop = _StopRequests()
    dispatches = 0
    evals, last = None, False
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
                if pos == 0 and sweep.stage is not None:
                    state = state.replace(stage=jnp.int32(sweep.stage))
                if pos == 0 and sweep.restart_ae_optimizer:
                    state = restart_ae_optimizer(cfg, state)
                program = programs[sweep.program]
                perm = np.asarray(epoch_permutation(cfg.train.seed, step // spe, n_train))
                batches = sweep_batches(ds.train.images, perm, spe, bs, mesh)
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
            bad = [int(s["nonfinite_step"]) for _, s in sweeps if int(s["nonfinite_step"]) >= 0]
            if bad:
                raise TrainingDiverged(
                    f"the loss became NaN/Inf at step {bad[0]} (epoch {epoch + 1}); "
                    f"stopped; the last good checkpoint is kept in {ckpt.directory}")
            last = epoch + 1 == cfg.train.epochs
            evals = None
            if (epoch + 1) % cfg.train.eval_every_epochs == 0 or last:
                evals = to_host(evaluate(state))
            rec = _epoch_record(epoch + 1, sweeps, evals, seconds, bs)
            if epoch == start_epoch:
                rec["compile_seconds"] = compile_s
            history.append(rec)
            # The record first: a kill between the two leaves a record past the newest
            # checkpoint, which the rerun drops and redoes (never a checkpoint without it).
            if _is_main():
                append_record(workdir, rec, writer)
            if (epoch + 1) % cfg.train.checkpoint_every_epochs == 0 or last:
                ckpt.save(step, state, {"config": cfg.to_dict(), "epoch": epoch + 1, "step": step})
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_postfix(rec))
            else:  # no bar (--no-progress or not a terminal): one line per epoch
                _log(f"epoch {epoch + 1}/{cfg.train.epochs} {_postfix(rec)}")
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    # The last epoch was just evaluated; a rerun of a finished run evaluates anew.
    final_eval = evals if last else to_host(evaluate(state))
    summary = _summary(cfg, ds, history, final_eval, compile_s, time.perf_counter() - t_start, step)
    if _is_main():
        _figures(cfg, state, ds, history, workdir)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        _log(f"summary: {json.dumps({k: summary[k] for k in ('val_recon_loss', 'images_per_sec')})}"
             f" -> {workdir / 'summary.json'}")
    return summary


def _resume(cfg: Config, ckpt: Checkpointer, state: TrainState, mesh, spe: int, n_train: int
            ) -> tuple[TrainState, int, dict | None]:
    """Restores the newest intact checkpoint of this run (or, in a new run, applies
    ``train.init_from`` or ``train.ae_stage_from``).

    Returns:
      ``(state, epochs completed, partial)``: ``partial`` describes an epoch
      a signal interrupted (its finished sweeps' and current sweep's metric
      sums, seconds spent), or None.
    """
    def check_meta(path: pathlib.Path, meta: dict) -> None:
        try:
            problem = config_mismatch(from_dict(meta["config"]), cfg)
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"checkpoint {path} has no readable config ({e})") from e
        if problem:
            raise CheckpointError(f"checkpoint {path} belongs to a run of {problem}")

    found = ckpt.restore_newest(state, check_meta, log=_log)
    if found is None:
        if cfg.train.init_from_state:
            state, epoch = _branch_from(cfg, state, mesh, workdir=ckpt.directory.parent)
            return state, epoch, None
        if cfg.train.ae_stage_from:
            state = _ae_stage_from(cfg, state, mesh, ckpt.directory.parent, spe, n_train)
            return state, cfg.train.ae_stage_epochs, None
        if cfg.train.init_from:
            state = _init_from(cfg, state, mesh)
        return state, 0, None
    step, state, meta = found
    partial = meta.get("partial")
    where = f"epoch {meta['epoch'] + 1}, mid-epoch" if partial else f"epoch {meta['epoch']}"
    _log(f"resuming from checkpoint {ckpt.path(step)} ({where}, step {int(to_host(state.step))})")
    if partial:
        partial = {"sweeps": [(n, _decode(s)) for n, s in partial["sweeps"]],
                   "current": None if partial["current"] is None else _decode(partial["current"]),
                   "seconds": partial["seconds"]}
    return state, meta["epoch"], partial


def _preempt(cfg: Config, ckpt: Checkpointer, state: TrainState, step: int, epoch: int,
             done: list, current: tuple[Sweep, Any], seconds: float, signum: int) -> Preempted:
    """Saves a mid-epoch checkpoint (with the epoch's metric sums so far); returns the exception."""
    sweep, sums = current
    if step in ckpt.all_steps():  # nothing ran since the last checkpoint
        path = ckpt.path(step)
    else:
        partial = {"sweeps": [(n, _encode(to_host(s))) for n, s in done],
                   "current": None if sums is None else _encode(to_host(sums)),
                   "seconds": seconds}
        ckpt.save(step, state, {"config": cfg.to_dict(), "epoch": epoch, "step": step,
                                "partial": partial})
        path = ckpt.path(step)
    name = signal.Signals(signum).name
    return Preempted(f"stopped by {name} at step {step} (epoch {epoch + 1}); saved checkpoint "
                     f"{path}; rerun the same command to resume from it", signum, path)


def _encode(sums: dict) -> dict:
    """Metric sums as exact JSON (dtype kept), for a mid-epoch checkpoint's meta."""
    return {k: [str(np.asarray(v).dtype), np.asarray(v).tolist()] for k, v in sums.items()}


def _decode(enc: dict) -> dict:
    return {k: np.asarray(v, dtype=dtype) for k, (dtype, v) in enc.items()}


@jax.jit  # one dispatch per call instead of one per metric
def _add_sums(a: dict, b: dict) -> dict:
    """Accumulates two calls' metric sums on device (keeping the first non-finite step)."""
    out = {k: a[k] + b[k] for k in a if k != "nonfinite_step"}
    out["nonfinite_step"] = jnp.where(a["nonfinite_step"] >= 0, a["nonfinite_step"], b["nonfinite_step"])
    return out


def _init_from(cfg: Config, state: TrainState, mesh) -> TrainState:
    """Starts ``state`` from the parameters of another run (``train.init_from``).

    The source may be a workdir (its newest checkpoint) or one checkpoint
    folder. Its AE (and with ``train.init_from_d`` its D) must have this
    model's dataset and shapes; optimizer states stay fresh.
    """
    src_cfg, src = load_params(cfg.train.init_from,
                               lambda d: create_train_state(from_dict(d), jax.random.key(0)))
    if src_cfg["data"]["dataset"] != cfg.data.dataset:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: a {src_cfg['data']['dataset']} "
                          f"model cannot start a {cfg.data.dataset} run")
    parts = ["ae_params"] + (["d_params"] if cfg.train.init_from_d else [])
    for part in parts:
        mine, theirs = getattr(state, part), getattr(src, part)
        if theirs is None:
            raise ConfigError(f"train.init_from {cfg.train.init_from} holds no discriminator "
                              f"(family {src_cfg['model']['family']!r})")
        shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)  # noqa: E731
        if jax.tree.structure(mine) != jax.tree.structure(theirs) or shapes(mine) != shapes(theirs):
            raise ConfigError(f"train.init_from {cfg.train.init_from}: its {part} have other "
                              f"layers or shapes than this model's")
    state = state.replace(**{p: put_replicated(jax.device_get(getattr(src, p)), mesh) for p in parts})
    if state.ae_ema is not None:  # the average starts where the AE starts
        state = state.replace(ae_ema=put_replicated(jax.device_get(src.ae_params), mesh))
    if state.d_ema is not None and cfg.train.init_from_d:  # D's, where D starts
        state = state.replace(d_ema=put_replicated(jax.device_get(src.d_params), mesh))
    _log(f"initialised {' and '.join(p[:-7].upper() for p in parts)} from {cfg.train.init_from}")
    return state


# What a branch's source must share with it (train.init_from_state): the fields that
# decide the state's shapes, the images and their order.
_BRANCH_SAME = ("model.", "data.", "train.batch_size", "train.seed")


def _branch_from(cfg: Config, state: TrainState, mesh, workdir: pathlib.Path
                 ) -> tuple[TrainState, int]:
    """Continues another run's checkpoint under ``cfg`` (``train.init_from_state``).

    Returns:
      ``(state, epochs the source completed)``; the source's metric records of
      those epochs are copied into ``workdir/metrics.jsonl``.

    Raises:
      ConfigError: naming the fields in which the source differs from ``cfg`` where
        it must not (:data:`_BRANCH_SAME`), or a mid-epoch checkpoint.
    """
    src = cfg.train.init_from
    meta, src_state, folder = load_checkpoint(
        src, lambda d: create_train_state(from_dict(d), jax.random.key(0)))
    differ = [f for f in diff(from_dict(meta["config"]), cfg)
              if f.startswith(_BRANCH_SAME) and f not in RESUMABLE_FIELDS]
    if differ:
        raise ConfigError(f"train.init_from {src}: a branch must share the source's model, data, "
                          f"batch size and seed; these differ: {', '.join(differ)}")
    if meta.get("partial"):
        raise ConfigError(f"train.init_from {src}: checkpoint {folder} was saved mid-epoch; "
                          f"a branch starts from the end of an epoch")
    # A changed learning-rate schedule (e.g. a cool-down) changes the optax state's parts.
    src_state = src_state.replace(
        ae_opt_state=carry_opt_state(src_state.ae_opt_state, state.ae_opt_state),
        d_opt_state=carry_opt_state(src_state.d_opt_state, state.d_opt_state))
    if jax.tree.structure(src_state) != jax.tree.structure(state):
        raise ConfigError(f"train.init_from {src}: its train state has other parts than this "
                          f"config's (a weight average or a controller on one side only)")
    epoch = int(meta["epoch"])
    if epoch >= cfg.train.epochs:
        raise ConfigError(f"train.init_from {src}: the source completed {epoch} epochs; "
                          f"train.epochs ({cfg.train.epochs}) leaves nothing to train")
    _copy_records(folder, workdir, epoch)
    _log(f"branching from {folder} (epoch {epoch}, step {int(to_host(src_state.step))})")
    return put_replicated(jax.device_get(src_state), mesh), epoch


def _ae_stage_from(cfg: Config, state: TrainState, mesh, workdir: pathlib.Path, spe: int,
                   n_train: int) -> TrainState:
    """Stands another run's checkpoint in for this run's AE stage (``train.ae_stage_from``).

    The AE stage trains only the AE (its parameters, Adam state and weight
    average) with the plain AE's step; everything else in the state stays as
    initialised. So the state at the stage's end is the fresh ``state`` with the
    source's AE parts and step count, and the flag the stage leaves
    (reconstruction). The source's records of those epochs are copied into
    ``metrics.jsonl`` without their evaluations (those evaluated the source's model).

    Args:
      cfg: this run's config; ``state``: its fresh train state.
      workdir: this run's workdir; ``spe``, ``n_train``: its steps per epoch and
        training images.

    Returns:
      The state at the end of epoch ``train.ae_stage_epochs``.

    Raises:
      ConfigError: the source trains the AE otherwise than this stage would
        (naming the fields), or stopped at another step.
      CheckpointError: it has no checkpoint at the end of that epoch.
    """
    src, k = cfg.train.ae_stage_from, cfg.train.ae_stage_epochs
    meta, src_state, folder = load_checkpoint(
        src, lambda d: create_train_state(from_dict(d), jax.random.key(0)), epoch=k,
        what="train.ae_stage_from")
    src_cfg = from_dict(meta["config"])
    differ = ae_stage_mismatch(src_cfg, cfg, n_train, RESUMABLE_FIELDS)
    if differ:
        raise ConfigError(f"train.ae_stage_from {src}: that run trains the AE otherwise than "
                          f"this run's AE stage would; these differ: {', '.join(differ)}")
    if int(to_host(src_state.step)) != k * spe:
        raise ConfigError(f"train.ae_stage_from {src}: its epoch {k} ended at step "
                          f"{int(to_host(src_state.step))}, this run's would at {k * spe} "
                          f"(other training images?)")
    # A weight average of this run's is the source's (ae_stage_mismatch: the same decay).
    # A source that cools down after the stage has a schedule's count in its optax state.
    state = state.replace(
        step=src_state.step, stage=jnp.asarray(STAGE_RECON, jnp.int32),
        ae_params=src_state.ae_params,
        ae_opt_state=carry_opt_state(src_state.ae_opt_state, state.ae_opt_state),
        ae_ema=src_state.ae_ema if state.ae_ema is not None else None)
    _copy_records(folder, workdir, k, keep=lambda key: not key.startswith("val/"))
    _log(f"AE stage (epochs 1-{k}) taken from {folder} (step {k * spe})")
    return put_replicated(jax.device_get(state), mesh)


def _copy_records(checkpoint: pathlib.Path, workdir: pathlib.Path, epoch: int,
                  keep=lambda key: True) -> None:
    """Starts ``workdir/metrics.jsonl`` with the records of epochs 1..``epoch`` of the run
    that wrote ``checkpoint`` (``<its workdir>/checkpoints/<step>``), their fields that
    ``keep`` accepts, each marked ``copied_from`` that run (its speed is not this run's)."""
    src = checkpoint.parent.parent
    if _is_main() and (src / "metrics.jsonl").exists():  # the source may still be training
        recs = [{**{k: v for k, v in r.items() if keep(k)}, "copied_from": str(src)}
                for r in read_records(src) if r["epoch"] <= epoch]
        write_records(workdir, recs)


def _tb_writer(workdir: pathlib.Path):
    if not _is_main():
        return None
    # tensorboardX imports torch whenever it is installed, only to accept torch tensors:
    # 2 s of every run's start on 2 cores (the `test` extra installs torch). The runs log
    # scalars only, so tensorboardX is imported as if torch were absent.
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # an import of it raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter(str(workdir / "tensorboard"))


def _progress(on: bool, total: int, done: int, name: str):
    if not (on and _is_main() and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc=name, unit="epoch")


def _postfix(rec: dict) -> str:
    parts = [f"train {train_recon_loss(rec)[0]:.4f}"]
    if "val/recon_loss" in rec:
        parts.append("val " + "/".join(f"{v:.4f}" for v in rec["val/recon_loss"]))
    if "val/d_fake_acc" in rec:
        parts.append(f"D acc real {rec['val/d_real_acc']:.2f} fakes "
                     + "/".join(f"{v:.2f}" for v in rec["val/d_fake_acc"]))
    if "d_steps" in rec:
        parts.append(f"ae/d steps {rec['ae_steps']}/{rec['d_steps']}")
    parts.append(f"{rec['images_per_sec']:.0f} img/s")
    return " ".join(parts)


def _summary(cfg: Config, ds, history: list[dict], final_eval: dict, compile_s, wall: float,
             steps: int) -> dict:
    own = [h["images_per_sec"] for h in history if "copied_from" not in h]
    speeds = own[1:] or own  # the first epoch this run trained is left out, as in any run
    out = {
        "preset": cfg.preset,
        "family": cfg.model.family,
        "passes": cfg.model.passes,
        "train_examples": len(ds.train.images),
        "resample_train": cfg.data.resample_train,  # then each epoch drew data.train_examples of them
        "test_examples": len(ds.test.images),
        "available_examples": list(ds.available),
        "data_source": ds.source,
        "data_note": ds.note,
        "epochs": cfg.train.epochs,
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "val_recon_loss": np.asarray(final_eval["recon_loss"]).tolist(),
        "val_psnr": np.asarray(final_eval["psnr"]).tolist(),
        "val_ssim": np.asarray(final_eval["ssim"]).tolist(),
        # Under train.ae_ema the values above are the weight average's; this is the live AE's.
        **({"val_recon_loss_live": np.asarray(final_eval["recon_loss_live"]).tolist()}
           if "recon_loss_live" in final_eval else {}),
        # What a perfect reconstruction scores on these test images (BCE's floor is
        # their entropy, not 0): compare val losses across test sets above it.
        "val_recon_floor": losses.recon_floor(ds.test.images, cfg.train.recon_loss),
        "train_recon_loss": train_recon_loss(history[-1]) if history else None,
        # The last epoch's training metrics as logged: per sweep for phases,
        # per step group (where D / the AE learned) for step-wise policies.
        "last_epoch_train": {k: v for k, v in history[-1].items() if k.startswith("train/")}
        if history else None,
        "images_per_sec": float(np.median(speeds)) if speeds else None,
        "compile_seconds": compile_s,
        "wall_seconds": wall,
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})",
        "jax_version": jax.__version__,
    }
    if cfg.is_gan:
        out.update({"d_real_acc": float(final_eval["d_real_acc"]),
                    "d_fake_acc": np.asarray(final_eval["d_fake_acc"]).tolist(),
                    "d_loss": float(final_eval["d_loss"]),
                    # D's mean P(real): on each pass's fakes, how often it is fooled on average.
                    "d_real_prob": float(final_eval["d_real_prob"]),
                    "d_fake_prob": np.asarray(final_eval["d_fake_prob"]).tolist(),
                    "balance_gap": losses.balance_gap(final_eval["d_fake_acc"]),
                    # Under gan.d_ema the values above are D's weight average's; these the live D's.
                    **({"d_real_acc_live": float(final_eval["d_real_acc_live"]),
                        "d_fake_acc_live": np.asarray(final_eval["d_fake_acc_live"]).tolist(),
                        "balance_gap_live": losses.balance_gap(final_eval["d_fake_acc_live"]),
                        "d_real_prob_live": float(final_eval["d_real_prob_live"]),
                        "d_fake_prob_live": np.asarray(final_eval["d_fake_prob_live"]).tolist()}
                       if "d_fake_acc_live" in final_eval else {}),
                    "adv_lambda": figures.adv_lambda(history[-1]) if history else None,
                    "stage_policy": cfg.gan.stage_policy,
                    "adv_weight_mode": cfg.gan.adv_weight_mode})
    out["last_3_epochs"] = _last_epochs_mean(history, 3)
    return out


# Validation measures averaged over the last epochs in summary.json (the goal is judged
# over several epochs, not on one that the game happened to end well or badly).
_LAST_EPOCHS_KEYS = {"val_recon_loss": "val/recon_loss", "val_recon_loss_live": "val/recon_loss_live",
                     "val_psnr": "val/psnr",
                     "val_ssim": "val/ssim", "d_real_acc": "val/d_real_acc",
                     "d_fake_acc": "val/d_fake_acc", "balance_gap": "val/balance_gap",
                     "d_real_prob": "val/d_real_prob", "d_fake_prob": "val/d_fake_prob",
                     "d_real_acc_live": "val/d_real_acc_live", "d_fake_acc_live": "val/d_fake_acc_live",
                     "balance_gap_live": "val/balance_gap_live"}


def _last_epochs_mean(history: list[dict], n: int) -> dict:
    """Means over the last ``n`` evaluated epochs of the validation measures (and λ)."""
    recs = [h for h in history if "val/recon_loss" in h][-n:]
    out: dict[str, Any] = {"epochs": [h["epoch"] for h in recs]}
    for name, key in _LAST_EPOCHS_KEYS.items():
        vals = [h[key] for h in recs if key in h]
        if vals:
            out[name] = _value(np.mean(np.asarray(vals, np.float64), axis=0))
    lams = [lam for lam in (figures.adv_lambda(h) for h in history[-n:]) if lam is not None]
    if lams:
        out["adv_lambda"] = _value(np.mean(np.asarray(lams, np.float64), axis=0))
    return out


def _figures(cfg: Config, state: TrainState, ds, history: list[dict], workdir: pathlib.Path) -> None:
    n = min(cfg.train.num_figure_images, len(ds.test.images))
    x = jnp.asarray(ds.test.images[:n], jnp.float32) / 255.0
    b = bind(cfg)
    params = to_host(eval_params(state))
    outs = np.asarray(to_images(ae_logits(b, params, x)))
    passes = "pass 1" if cfg.model.passes == 1 else f"passes 1..{cfg.model.passes}"
    title = f"{cfg.preset}: test images (top), reconstructions after {passes}"
    figures.reconstruction_grid(np.asarray(x), outs, workdir / "reconstructions.png", title)
    if history:
        figures.history_figures(history, cfg.preset, workdir)
        if cfg.train.diagnostics:
            figures.diagnostics({cfg.preset: history}, workdir / "diagnostics.png",
                                f"{cfg.preset}: plateau instruments")
