"""The workdir of a run: its lock, its config check, and its metrics log.

A workdir holds one run: ``config.json``, ``metrics.jsonl`` (one record per
epoch), ``checkpoints/``, TensorBoard events, figures and ``summary.json``.
A run holds a lock on it for as long as it runs, so a second command on the
same workdir is refused at once instead of interleaving its epochs with the
first's.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib

from raegan_jax.config import Config, diff, from_dict

# Fields that may change when a run is continued: more epochs, other logging, and
# implementation choices that compute the same function with the same parameters.
RESUMABLE_FIELDS = {"train.epochs", "train.eval_every_epochs", "train.checkpoint_every_epochs",
                    "train.keep_checkpoints", "train.num_figure_images", "train.steps_per_dispatch",
                    "data.data_dir", "model.decoder_impl", "gan.stage_impl", "model.unroll",
                    "model.batch_chunks", "train.diagnostics", "train.init_from",
                    "train.init_from_d", "train.init_from_state", "train.ae_stage_from",
                    "train.keep_epochs"}


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


def check_config(cfg: Config, workdir: pathlib.Path) -> bool:
    """Returns True if ``workdir`` holds a run of ``cfg`` (to resume), False if it holds none.

    Raises:
      WorkdirError: the workdir holds a run of another preset or of settings
        that change what is computed (fields outside :data:`RESUMABLE_FIELDS`).
    """
    cfg_file = workdir / "config.json"
    if not cfg_file.exists():
        return False
    try:
        old = from_dict(json.loads(cfg_file.read_text()))
    except (ValueError, json.JSONDecodeError) as e:
        raise WorkdirError(f"{cfg_file} is unreadable ({e}); use another --workdir") from e
    problem = config_mismatch(old, cfg)
    if problem:
        raise WorkdirError(f"workdir {workdir} holds a run of {problem}; use another --workdir")
    return True


def config_mismatch(old: Config, cfg: Config) -> str | None:
    """What makes a run of ``old`` impossible to continue as ``cfg`` (None if nothing)."""
    if old.preset != cfg.preset:
        return f"preset '{old.preset}', not '{cfg.preset}'"
    changed = [f for f in diff(old, cfg) if f not in RESUMABLE_FIELDS
               or (f == "train.epochs" and (old.train.schedule_spans_run or cfg.train.schedule_spans_run))]
    if changed == ["train.epochs"]:
        return (f"{old.train.epochs} epochs, not {cfg.train.epochs}: its learning-rate schedule "
                f"ends with the run (train.lr_schedule / train.cooldown_fraction)")
    return f"other settings ({', '.join(changed)})" if changed else None


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
