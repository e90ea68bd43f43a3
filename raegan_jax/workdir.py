"""What a run leaves in its workdir: the lock while it runs, and the run-record format.

A workdir holds one run: ``config.json``, ``metrics.jsonl`` (one record per
epoch), ``checkpoints/``, TensorBoard events, figures and ``summary.json``.
A run holds a lock on it for as long as it runs, so a second command on the
same workdir is refused at once instead of interleaving its epochs with the
first's.

The records are written, read and summarised here, and only here: the loop writes
them (:func:`epoch_record`, :func:`append_record`, :func:`summary`), and the figures,
the sweeps and the report's tables read them (:func:`read_records`,
:func:`train_recon_loss`, :func:`adv_lambda`).
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib

import sys
from typing import Any

import jax
import numpy as np

from raegan_jax import losses
from raegan_jax.config import Config, from_dict
from raegan_jax.realism import hf_ratio
from raegan_jax.stages import GROUPED_METRICS, STEP_GROUPS


class WorkdirError(RuntimeError):
    """The workdir cannot take this run (another run holds it, or it holds another run)."""


class WorkdirLock:
    """An exclusive ``flock`` on ``<workdir>/.lock`` (``.lock.<i>`` for process ``i`` > 0).

    The kernel drops the lock when its process dies, however it dies, so a
    run killed with ``kill -9`` never blocks its own rerun; the file itself
    stays (it only names the last holder). Every process of a multi-process
    run locks its own file, so each process of a second run is refused on its
    own, without waiting for a collective.

    Args:
      workdir: the run's workdir (created if missing).
      process_index: this process's index in a multi-process run.

    Raises:
      WorkdirError: naming the workdir and the holder's PID, if another
        process holds the lock.
    """

    def __init__(self, workdir: str | os.PathLike, process_index: int = 0):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / (".lock" if process_index == 0 else f".lock.{process_index}")
        # Opened without truncating: the holder's PID must stay readable by whoever is refused.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise WorkdirError(f"workdir {self.workdir} is in use by another run (PID {holder}); "
                               f"wait for it to end or use another --workdir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Releases the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_config(workdir: str | os.PathLike) -> Config | None:
    """The run's ``config.json`` as a :class:`Config`; None where the workdir has none.

    Raises:
      ValueError: the file is not a config (``json.JSONDecodeError`` is one).
    """
    f = pathlib.Path(workdir) / "config.json"
    return from_dict(json.loads(f.read_text())) if f.is_file() else None


def read_records(workdir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of ``<workdir>/metrics.jsonl`` (none if it is missing).

    Only complete lines count: another process may be appending to the file (a run
    reading the records of a source that still trains), and a kill mid-write leaves
    a partial last line.
    """
    path = pathlib.Path(workdir) / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]


def read_history(workdir: pathlib.Path, upto_epoch: int, rewrite: bool) -> list[dict]:
    """Per-epoch records already written, up to the resumed epoch (later ones are redone).

    Args:
      workdir: the run's workdir.
      upto_epoch: the number of epochs the resumed checkpoint completed.
      rewrite: drop the later records (and a partial last line) from
        ``metrics.jsonl`` too (process 0).
    """
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    recs = read_records(workdir)
    keep = [r for r in recs if r["epoch"] <= upto_epoch]
    if rewrite and (len(keep) != len(recs) or not path.read_text().endswith("\n")):
        write_records(workdir, keep)
    return keep


def write_records(workdir: pathlib.Path, recs: list[dict]) -> None:
    """Replaces ``<workdir>/metrics.jsonl`` with ``recs``, one JSON line each."""
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def append_record(workdir: pathlib.Path, rec: dict, writer) -> None:
    """Appends one epoch's record to ``metrics.jsonl`` and TensorBoard (per-pass lists split)."""
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


# The record of an epoch: metrics.jsonl's format.

# Step counts (summed, not averaged) and the names they are logged under.
_COUNTS = {"ae_updates": "ae_steps", "d_updates": "d_steps", "stage_switches": "stage_switches"}


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


def epoch_record(epoch: int, sweeps: list[tuple[str | None, dict]], evals: dict | None,
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
        if "hf_energy" in evals:  # the high-frequency detail kept, per pass (realism.py)
            rec["val/hf_ratio"] = hf_ratio(evals)
        for suffix in ("", "_live"):  # _live: the live D's, beside its weight average
            if "d_fake_acc" + suffix in evals:
                rec["val/balance_gap" + suffix] = losses.balance_gap(evals["d_fake_acc" + suffix])
    return rec


def train_recon_loss(rec: dict) -> list[float] | None:
    """An epoch record's training reconstruction loss per pass: the epoch's, or
    its reconstruction sweep's when the epoch ran several sweeps (``phases``)."""
    return rec.get("train/recon_loss", rec.get("train/recon_sweep/recon_loss"))


def adv_lambda(rec: dict) -> list[float] | None:
    """An epoch record's mean adaptive adversarial weight λ per pass over the steps
    where the AE learned against D (the game sweep under ``phases``), or None."""
    for k in ("train/ae_learns/adv_lambda", "train/game_sweep/adv_lambda", "train/adv_lambda"):
        if k in rec:
            return rec[k]
    return None


def epoch_line(rec: dict) -> str:
    """An epoch's record in one line (the progress bar's postfix, or the log line)."""
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


def tensorboard_writer(workdir: pathlib.Path):
    """A TensorBoard writer into ``<workdir>/tensorboard`` (process 0; None elsewhere)."""
    if jax.process_index() != 0:  # process 0 logs
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


# The summary of a run: summary.json's format.

def summary(cfg: Config, ds, history: list[dict], final_eval: dict, test_eval: dict, compile_s,
            wall: float, steps: int) -> dict:
    """``summary.json``: the run's headline numbers (the final evaluation per pass, D's
    verdicts for GAN families), its data, speed and machine, and the means over its last
    three evaluated epochs.

    ``val_…`` are on ``val_split`` (``"validation"``, or ``"test"`` where the run has no
    validation split); ``test_…`` are the test split's, read once at the end."""
    own = [h["images_per_sec"] for h in history if "copied_from" not in h]
    speeds = own[1:] or own  # the first epoch this run trained is left out, as in any run
    out = {
        "preset": cfg.preset,
        "family": cfg.model.family,
        "passes": cfg.model.passes,
        "train_examples": len(ds.train.images),
        "resample_train": cfg.data.resample_train,  # then each epoch drew data.train_examples of them
        "validation_examples": 0 if ds.validation is None else len(ds.validation.images),
        "test_examples": len(ds.test.images),
        "val_split": ds.val_split,
        "available_examples": list(ds.available),
        "data_source": ds.source,
        "data_note": ds.note,
        "epochs": cfg.train.epochs,
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "val_recon_loss": np.asarray(final_eval["recon_loss"]).tolist(),
        "val_psnr": np.asarray(final_eval["psnr"]).tolist(),
        "val_ssim": np.asarray(final_eval["ssim"]).tolist(),
        "val_hf_ratio": hf_ratio(final_eval),
        **{f"test_{k}": np.asarray(test_eval[k]).tolist() for k in ("recon_loss", "psnr", "ssim")},
        "test_hf_ratio": hf_ratio(test_eval),
        # Under train.ae_ema the values above are the weight average's; this is the live AE's.
        **({"val_recon_loss_live": np.asarray(final_eval["recon_loss_live"]).tolist()}
           if "recon_loss_live" in final_eval else {}),
        # What a perfect reconstruction scores on these images (BCE's floor is their
        # entropy, not 0): compare losses across image sets above it.
        "val_recon_floor": losses.recon_floor(ds.val.images, cfg.train.recon_loss),
        "test_recon_floor": losses.recon_floor(ds.test.images, cfg.train.recon_loss),
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
                    "test_d_real_prob": float(test_eval["d_real_prob"]),
                    "test_d_fake_prob": np.asarray(test_eval["d_fake_prob"]).tolist(),
                    "adv_lambda": adv_lambda(history[-1]) if history else None,
                    "stage_policy": cfg.gan.stage_policy,
                    "adv_weight_mode": cfg.gan.adv_weight_mode})
    out["last_3_epochs"] = last_epochs_mean(history, 3)
    return out


# Validation measures averaged over the last epochs in summary.json (the goal is judged
# over several epochs, not on one that the game happened to end well or badly).
_LAST_EPOCHS_KEYS = {"val_recon_loss": "val/recon_loss", "val_recon_loss_live": "val/recon_loss_live",
                     "val_psnr": "val/psnr",
                     "val_ssim": "val/ssim", "val_hf_ratio": "val/hf_ratio",
                     "d_real_acc": "val/d_real_acc",
                     "d_fake_acc": "val/d_fake_acc", "balance_gap": "val/balance_gap",
                     "d_real_prob": "val/d_real_prob", "d_fake_prob": "val/d_fake_prob",
                     "d_real_acc_live": "val/d_real_acc_live", "d_fake_acc_live": "val/d_fake_acc_live",
                     "balance_gap_live": "val/balance_gap_live"}


def last_epochs_mean(history: list[dict], n: int) -> dict:
    """Means over the last ``n`` evaluated epochs of the validation measures (and λ)."""
    recs = [h for h in history if "val/recon_loss" in h][-n:]
    out: dict[str, Any] = {"epochs": [h["epoch"] for h in recs]}
    for name, key in _LAST_EPOCHS_KEYS.items():
        vals = [h[key] for h in recs if key in h]
        if vals:
            out[name] = _value(np.mean(np.asarray(vals, np.float64), axis=0))
    lams = [lam for lam in (adv_lambda(h) for h in history[-n:]) if lam is not None]
    if lams:
        out["adv_lambda"] = _value(np.mean(np.asarray(lams, np.float64), axis=0))
    return out


# A mid-epoch checkpoint's metric sums, as exact JSON.

def encode_sums(sums: dict) -> dict:
    """Metric sums as exact JSON (dtype kept), for a mid-epoch checkpoint's meta."""
    return {k: [str(np.asarray(v).dtype), np.asarray(v).tolist()] for k, v in sums.items()}


def decode_sums(enc: dict) -> dict:
    return {k: np.asarray(v, dtype=dtype) for k, (dtype, v) in enc.items()}
