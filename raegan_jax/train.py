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
from raegan_jax.checkpoint import Checkpointer, CheckpointError
from raegan_jax.config import Config, ConfigError, diff, from_dict, validate
from raegan_jax.models import to_images
from raegan_jax.parallel import check_batch_divides, make_mesh, put_batch, put_replicated
from raegan_jax.state import STAGE_AE, STAGE_D, STAGE_RECON, TrainState, create_train_state
from raegan_jax.steps import ae_logits, bind, epoch_permutation, make_eval_step, make_multi_step

# Fields that may change when a run is continued: more epochs, other logging, and
# implementation choices that compute the same function with the same parameters.
RESUMABLE_FIELDS = {"train.epochs", "train.eval_every_epochs", "train.checkpoint_every_epochs",
                    "train.keep_checkpoints", "train.num_figure_images", "train.steps_per_dispatch",
                    "data.data_dir", "model.decoder_impl", "gan.stage_impl", "model.unroll",
                    "model.batch_chunks"}


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


def _epoch_record(epoch: int, sums: dict, evals: dict | None, seconds: float, images: int,
                  is_gan: bool) -> dict:
    """Turns on-device sums (already fetched) into one metrics.jsonl record."""
    n = max(int(sums["count"]), 1)
    rec: dict[str, Any] = {"epoch": epoch, "steps": int(sums["count"]),
                           "train/loss": float(sums["loss"]) / n,
                           "train/recon_loss": (np.asarray(sums["recon_loss"]) / n).tolist(),
                           "images_per_sec": images / seconds if seconds > 0 else 0.0,
                           "epoch_seconds": seconds}
    if is_gan:
        rec.update({"train/adv_loss": (np.asarray(sums["adv_loss"]) / n).tolist(),
                    "train/d_loss": float(sums["d_loss"]) / n,
                    "train/d_real_acc": float(sums["d_real_acc"]) / n,
                    "train/d_fake_acc": (np.asarray(sums["d_fake_acc"]) / n).tolist(),
                    "ae_steps": int(sums["ae_updates"]), "d_steps": int(sums["d_updates"])})
    if evals:
        for k, v in evals.items():
            rec[f"val/{k}"] = np.asarray(v).tolist()
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
    ds = data_lib.load(cfg, data_dir)
    n_train, n_test = len(ds.train.images), len(ds.test.images)
    if n_train < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} exceeds the {n_train} training images")
    _log(f"data: {ds.source}: {n_train} train / {n_test} test images")
    if ds.note:
        _log("!" * 78 + f"\n!! FEWER IMAGES THAN THE PRESET ASKS FOR: {ds.note}\n" + "!" * 78)

    workdir.mkdir(parents=True, exist_ok=True)
    if not resuming and _is_main():
        (workdir / "config.json").write_text(cfg.to_json())
    spe = n_train // cfg.train.batch_size  # drop_remainder
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
    history = _read_history(workdir, start_epoch)

    n_dispatch = min(cfg.train.steps_per_dispatch, spe)
    multi = make_multi_step(cfg, n_dispatch, steps_per_epoch=spe, mesh=mesh)
    train_images = put_replicated(ds.train.images, mesh)
    evaluate = _Evaluator(cfg, mesh, ds.test.images)
    writer = _tb_writer(workdir)
    calls_per_sweep = math.ceil(spe / n_dispatch)
    compile_s = None
    bar = _progress(progress, cfg.train.epochs, start_epoch, cfg.preset)

    sweep = int(state.step) // spe  # sweeps done so far (exact, also for phases)
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        sums = None
        for stage in sweep_stages(cfg, epoch):
            if stage is not None:
                state = state.replace(stage=jnp.int32(stage))
            perm = put_replicated(epoch_permutation(cfg.train.seed, sweep, n_train), mesh)
            for _ in range(calls_per_sweep):
                if compile_s is None:
                    tc = time.perf_counter()
                    state, s = multi(state, train_images, perm)
                    jax.block_until_ready(s)
                    compile_s = time.perf_counter() - tc
                else:
                    state, s = multi(state, train_images, perm)
                sums = s if sums is None else _add_sums(sums, s)
            sweep += 1
        sums = jax.device_get(sums)  # metrics leave the device once per epoch
        seconds = time.perf_counter() - t0
        if epoch == start_epoch:  # compile time is logged apart from images/s
            seconds -= compile_s
        if int(sums["nonfinite_step"]) >= 0:
            raise TrainingDiverged(
                f"the loss became NaN/Inf at step {int(sums['nonfinite_step'])} (epoch {epoch + 1}); "
                f"stopped; the last good checkpoint is kept in {ckpt.directory}")
        last = epoch + 1 == cfg.train.epochs
        evals = None
        if (epoch + 1) % cfg.train.eval_every_epochs == 0 or last:
            evals = jax.device_get(evaluate(state))
        images = int(sums["count"]) * cfg.train.batch_size
        rec = _epoch_record(epoch + 1, sums, evals, seconds, images, cfg.is_gan)
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
    parts = [f"train {rec['train/recon_loss'][0]:.4f}"]
    if "val/recon_loss" in rec:
        parts.append("val " + "/".join(f"{v:.4f}" for v in rec["val/recon_loss"]))
    if "train/d_loss" in rec:
        parts.append(f"D {rec['train/d_loss']:.3f} ae/d steps {rec['ae_steps']}/{rec['d_steps']}")
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
        "test_examples": len(ds.test.images),
        "available_examples": list(ds.available),
        "data_source": ds.source,
        "data_note": ds.note,
        "epochs": cfg.train.epochs,
        "steps": int(state.step),
        "batch_size": cfg.train.batch_size,
        "val_recon_loss": np.asarray(final_eval["recon_loss"]).tolist(),
        "train_recon_loss": history[-1]["train/recon_loss"] if history else None,
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
        if cfg.is_gan and all("val/d_fake_acc" in h for h in history):
            figures.fool_rates(history, workdir / "d_accuracy.png",
                               f"{cfg.preset}: can the AE fool D at every pass?")
