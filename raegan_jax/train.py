"""The training loop: :func:`train_and_evaluate` (what the ``raegan train`` CLI runs).

Per epoch it runs one sweep over the training images (three for the
``phases`` policy: reconstruction, D, adversarial AE), evaluates every pass on
the test images, logs metrics (which leave the device only here, once per
epoch), and saves an Orbax checkpoint. Running it again on the same workdir
resumes from the newest checkpoint and ends with exactly the parameters of an
uninterrupted run: per-step randomness is ``fold_in(rng, step)`` and the data
order of sweep k is ``permutation(fold_in(seed, k))``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import data as data_lib
from raegan_jax import figures
from raegan_jax.figures import train_recon_loss
from raegan_jax.checkpoint import Checkpointer, CheckpointError, load_params
from raegan_jax.config import Config, ConfigError, diff, from_dict, validate
from raegan_jax.models import to_images
from raegan_jax.parallel import check_batch_divides, make_mesh, put_batch, put_replicated
from raegan_jax.state import STAGE_AE, STAGE_D, STAGE_RECON, TrainState, create_train_state
from raegan_jax.steps import (GROUPED_METRICS, STEP_GROUPS, ae_logits, bind, epoch_permutation,
                              make_eval_step, make_multi_step)

# Fields that may change when a run is continued: more epochs, other logging, and
# implementation choices that compute the same function with the same parameters.
RESUMABLE_FIELDS = {"train.epochs", "train.eval_every_epochs", "train.checkpoint_every_epochs",
                    "train.keep_checkpoints", "train.num_figure_images", "train.steps_per_dispatch",
                    "data.data_dir", "model.decoder_impl", "gan.stage_impl", "model.unroll",
                    "model.batch_chunks", "train.diagnostics", "train.init_from",
                    "train.init_from_d"}

# What each sweep of a multi-sweep epoch is called in the metrics (by its stage).
SWEEP_NAMES = {STAGE_RECON: "recon_sweep", STAGE_D: "d_sweep", STAGE_AE: "game_sweep"}
# Step counts (summed, not averaged) and the names they are logged under.
_COUNTS = {"ae_updates": "ae_steps", "d_updates": "d_steps", "stage_switches": "stage_switches"}


class WorkdirError(RuntimeError):
    """The workdir holds a run that this config cannot continue."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf. The last good checkpoint is kept."""


def _is_main() -> bool:
    return jax.process_index() == 0


def _log(msg: str) -> None:
    if _is_main():
        print(msg, flush=True)


def sweep_stages(cfg: Config, epoch: int) -> list[int | None]:
    """The stage each sweep of ``epoch`` starts in (None: leave the state's flag).

    This is where the loop-level stage policies live: ``ae_pretrain_epochs``
    (reconstruction only), ``phases`` (the report's CIFAR-10 schedule: an AE
    reconstruction sweep, a D sweep, then an adversarial AE sweep), and the
    D-first start of the game after pretraining.
    """
    if not cfg.is_gan:
        return [None]
    pre = cfg.gan.ae_pretrain_epochs
    if epoch < pre:
        return [STAGE_RECON]
    if cfg.gan.stage_policy == "phases":
        return [STAGE_RECON, STAGE_D, STAGE_AE]
    if epoch == pre and pre > 0:
        return [STAGE_D]  # the game starts with D, as at step 0 without pretraining
    return [None]


def _check_workdir(cfg: Config, workdir: pathlib.Path) -> bool:
    """Returns True if the workdir holds a run of this config (to resume)."""
    cfg_file = workdir / "config.json"
    if not cfg_file.exists():
        return False
    try:
        old = from_dict(json.loads(cfg_file.read_text()))
    except (ValueError, json.JSONDecodeError) as e:
        raise WorkdirError(f"{cfg_file} is unreadable ({e}); use another --workdir") from e
    if old.preset != cfg.preset:
        raise WorkdirError(f"workdir {workdir} holds a run of preset '{old.preset}', not "
                           f"'{cfg.preset}'; use another --workdir")
    changed = [f for f in diff(old, cfg) if f not in RESUMABLE_FIELDS]
    if changed:
        raise WorkdirError(f"workdir {workdir} holds a run with other settings "
                           f"({', '.join(changed)}); use another --workdir")
    return True


def _value(x) -> Any:
    """A fetched metric as a float or a list of floats (per pass)."""
    x = np.asarray(x, np.float64)
    return float(x) if x.ndim == 0 else x.tolist()


def sweep_means(sums: dict, prefix: str, groups: bool = True) -> dict:
    """Per-step means of one sweep's metric sums (already fetched), named ``prefix + key``.

    Step groups (:data:`~raegan_jax.steps.STEP_GROUPS`) are averaged over
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
    """
    cfg = config
    validate(cfg)
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {workdir} is a file")
    resuming = _check_workdir(cfg, workdir)
    mesh = make_mesh(batch_size=cfg.train.batch_size)
    try:
        check_batch_divides(cfg.train.batch_size, mesh)
    except ValueError as e:
        raise ConfigError(str(e)) from e

    t_start = time.perf_counter()
    resample = cfg.data.resample_train
    # Resampling keeps the whole training split on device; each sweep's permutation
    # of it picks that sweep's train_examples images (its first spe * batch entries).
    ds = data_lib.load(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_examples=0))
                       if resample else cfg, data_dir)
    n_train, n_test = len(ds.train.images), len(ds.test.images)
    n_used = min(cfg.data.train_examples, n_train) if resample else n_train
    if n_used < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} exceeds the {n_used} training images")
    _log(f"data: {ds.source}: {n_train} train / {n_test} test images"
         + (f"; each epoch draws {n_used} of them afresh" if resample else ""))
    if ds.note:
        _log("!" * 78 + f"\n!! FEWER IMAGES THAN THE PRESET ASKS FOR: {ds.note}\n" + "!" * 78)

    workdir.mkdir(parents=True, exist_ok=True)
    if not resuming and _is_main():
        (workdir / "config.json").write_text(cfg.to_json())
    spe = n_used // cfg.train.batch_size  # drop_remainder
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints)

    state = create_train_state(cfg, jax.random.key(cfg.train.seed))
    state = put_replicated(state, mesh)
    start_epoch = 0
    latest = ckpt.latest_epoch()
    if latest is not None:
        meta = ckpt.read_meta(latest)
        if meta.get("config", {}).get("preset") != cfg.preset:
            raise CheckpointError(f"checkpoint {ckpt.path(latest)} belongs to preset "
                                  f"'{meta.get('config', {}).get('preset')}', not '{cfg.preset}'")
        state = ckpt.restore(latest, state)
        start_epoch = latest
        _log(f"resuming from checkpoint {ckpt.path(latest)} (epoch {latest}, step {int(state.step)})")
    elif cfg.train.init_from:
        state = _init_from(cfg, state, mesh)
    history = _read_history(workdir, start_epoch)

    n_dispatch = min(cfg.train.steps_per_dispatch, spe)
    multi = make_multi_step(cfg, n_dispatch, steps_per_epoch=spe, mesh=mesh)
    train_images = put_replicated(ds.train.images, mesh)
    evaluate = _Evaluator(cfg, mesh, ds.test.images)
    writer = _tb_writer(workdir)
    calls_per_sweep = math.ceil(spe / n_dispatch)
    bar = _progress(progress, cfg.train.epochs, start_epoch, cfg.preset)

    sweep = int(state.step) // spe  # sweeps done so far (exact, also for phases)
    # Compiled ahead of time, apart from any step: every step, the first included,
    # is then timed alike and images/s is honest from the first epoch on.
    compile_s = multi.compile(state, train_images,
                              put_replicated(epoch_permutation(cfg.train.seed, sweep, n_train), mesh))
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        sweeps = []
        for stage in sweep_stages(cfg, epoch):
            if stage is not None:
                state = state.replace(stage=jnp.int32(stage))
            perm = put_replicated(epoch_permutation(cfg.train.seed, sweep, n_train), mesh)
            sums = None
            for _ in range(calls_per_sweep):
                state, s = multi(state, train_images, perm)
                sums = s if sums is None else _add_sums(sums, s)
            sweeps.append((SWEEP_NAMES.get(stage), sums))
            sweep += 1
        sweeps = jax.device_get(sweeps)  # metrics leave the device once per epoch
        seconds = time.perf_counter() - t0
        bad = [int(s["nonfinite_step"]) for _, s in sweeps if int(s["nonfinite_step"]) >= 0]
        if bad:
            raise TrainingDiverged(
                f"the loss became NaN/Inf at step {bad[0]} (epoch {epoch + 1}); "
                f"stopped; the last good checkpoint is kept in {ckpt.directory}")
        last = epoch + 1 == cfg.train.epochs
        evals = None
        if (epoch + 1) % cfg.train.eval_every_epochs == 0 or last:
            evals = jax.device_get(evaluate(state))
        rec = _epoch_record(epoch + 1, sweeps, evals, seconds, cfg.train.batch_size)
        if epoch == start_epoch:
            rec["compile_seconds"] = compile_s
        history.append(rec)
        if (epoch + 1) % cfg.train.checkpoint_every_epochs == 0 or last:
            ckpt.save(epoch + 1, state, {"config": cfg.to_dict(), "epoch": epoch + 1})
        _write_epoch(workdir, rec, writer)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(_postfix(rec))
        else:  # no bar (--no-progress or not a terminal): one line per epoch
            _log(f"epoch {epoch + 1}/{cfg.train.epochs} {_postfix(rec)}")
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()

    final_eval = jax.device_get(evaluate(state))
    summary = _summary(cfg, ds, history, final_eval, compile_s, time.perf_counter() - t_start, state)
    if _is_main():
        _figures(cfg, state, ds, history, workdir)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        _log(f"summary: {json.dumps({k: summary[k] for k in ('val_recon_loss', 'images_per_sec')})}"
             f" -> {workdir / 'summary.json'}")
    ckpt.close()
    return summary


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
    _log(f"initialised {' and '.join(p[:-7].upper() for p in parts)} from {cfg.train.init_from}")
    return state


def _read_history(workdir: pathlib.Path, upto_epoch: int) -> list[dict]:
    """Per-epoch records already written, up to the resumed epoch (later ones are redone)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    keep = [r for r in recs if r["epoch"] <= upto_epoch]
    if len(keep) != len(recs) and _is_main():
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return keep


def _write_epoch(workdir: pathlib.Path, rec: dict, writer) -> None:
    if not _is_main():
        return
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if writer is not None:
        for k, v in rec.items():
            if k == "epoch":
                continue
            if isinstance(v, list):
                for j, x in enumerate(v):
                    writer.add_scalar(f"{k}/pass{j + 1}", x, rec["epoch"])
            elif isinstance(v, (int, float)) and v is not None:
                writer.add_scalar(k, v, rec["epoch"])
        writer.flush()


def _tb_writer(workdir: pathlib.Path):
    if not _is_main():
        return None
    from tensorboardX import SummaryWriter
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
             state: TrainState) -> dict:
    speeds = [h["images_per_sec"] for h in history[1:]] or [h["images_per_sec"] for h in history]
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
        "steps": int(state.step),
        "batch_size": cfg.train.batch_size,
        "val_recon_loss": np.asarray(final_eval["recon_loss"]).tolist(),
        "val_psnr": np.asarray(final_eval["psnr"]).tolist(),
        "val_ssim": np.asarray(final_eval["ssim"]).tolist(),
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
                    "stage_policy": cfg.gan.stage_policy})
    return out


def _figures(cfg: Config, state: TrainState, ds, history: list[dict], workdir: pathlib.Path) -> None:
    n = min(cfg.train.num_figure_images, len(ds.test.images))
    x = jnp.asarray(ds.test.images[:n], jnp.float32) / 255.0
    b = bind(cfg)
    params = jax.device_get(state.ae_params)
    outs = np.asarray(to_images(ae_logits(b, params, x)))
    passes = "pass 1" if cfg.model.passes == 1 else f"passes 1..{cfg.model.passes}"
    title = f"{cfg.preset}: test images (top), reconstructions after {passes}"
    figures.reconstruction_grid(np.asarray(x), outs, workdir / "reconstructions.png", title)
    if history:
        figures.loss_curves(history, workdir / "loss_curves.png", f"{cfg.preset} reconstruction loss")
        if cfg.train.diagnostics:
            figures.diagnostics({cfg.preset: history}, workdir / "diagnostics.png",
                                f"{cfg.preset}: plateau instruments")
        if cfg.is_gan and all("val/d_fake_acc" in h for h in history):
            figures.fool_rates(history, workdir / "d_accuracy.png",
                               f"{cfg.preset}: can the AE fool D at every pass?")
