"""Orbax checkpoints of the train state. The only module that imports Orbax.

A checkpoint is saved under ``<workdir>/checkpoints/<step>/`` (``step`` = the
state's global step count) with two items: ``state`` (the
:class:`~raegan_jax.state.TrainState` pytree) and ``meta`` (JSON: the config,
the epochs completed and, for a checkpoint taken mid-epoch, where in the epoch
it stopped). Saving and restoring are collective across processes.

Integrity: after Orbax commits a checkpoint, process 0 writes
``raegan_sha256.json``, the SHA-256 of every file in it. Resuming checks those
digests *before* Orbax reads a byte, so a corrupt, truncated or half-written
checkpoint is found without Orbax failing mid-read (which leaves TensorStore
callbacks firing into a closed event loop); it is then moved, whole, to
``<workdir>/checkpoints_set_aside/`` (never deleted) and the next older one
is tried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import datetime
import hashlib
import itertools
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from raegan_jax.parallel import barrier

DIGESTS = "raegan_sha256.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used. The message names it."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files are damaged or missing (as opposed to one of another model)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, a lost mount); what it had written is gone."""


class Checkpointer:
    """Saves and restores train states, keeping the newest ``max_to_keep``.

    Args:
      directory: where the numbered checkpoints live.
      max_to_keep: how many of the newest checkpoints to keep.
      create: create ``directory`` if missing; False opens it read-only.
      keep_steps: checkpoints kept beside the newest whatever their age (e.g. the
        end of the epoch another run's ``train.ae_stage_from`` reads).
    """

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3, create: bool = True,
                 keep_steps: tuple[int, ...] = ()):
        self.directory = pathlib.Path(directory).resolve()
        if create:
            keep = ocp.checkpoint_managers.AnyPreservationPolicy([
                ocp.checkpoint_managers.LatestN(max_to_keep),
                ocp.checkpoint_managers.CustomSteps(list(keep_steps))])
            options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=True)
        else:
            options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest committed checkpoint's step, or None."""
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        """Every committed checkpoint's step, oldest first."""
        return sorted(self._mngr.all_steps())

    def path(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves ``state`` and JSON ``meta`` as checkpoint ``step``, waits, then writes its digests.

        Raises:
          CheckpointWriteError: in one line, if any part of the write fails (a full disk):
            what failed, the newest intact checkpoint, and that the same command resumes
            from it. The half-written checkpoint is removed, never kept as a good one.
        """
        try:
            with _orbax_quiet():
                self._mngr.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
                self._mngr.wait_until_finished()
            if jax.process_index() == 0:
                _write_digests(self.path(step))
        except Exception as e:  # noqa: BLE001 -- Orbax and tensorstore raise many types
            self._discard(step)
            newest = self.latest_step()
            where = (f"the newest intact checkpoint is {self.path(newest)}; free space and rerun "
                     f"the same command to resume from it" if newest is not None else
                     "no checkpoint of this run was written yet; free space and rerun the same "
                     "command to start again")
            why = "no space left on device" if _NO_SPACE in str(e) else _short(e)
            raise CheckpointWriteError(f"could not write checkpoint {self.path(step)}: {why}; "
                                       f"{where}") from None
        barrier(f"raegan_checkpoint_digests_{step}")  # nobody reads them half-written

    def _discard(self, step: int) -> None:
        """Removes whatever a failed save of ``step`` left: Orbax's temporary folder, or the
        committed folder whose digests could not be written."""
        if jax.process_index() == 0:
            for leftover in [self.path(step), *self.directory.glob(f"{step}.orbax-checkpoint-tmp*")]:
                shutil.rmtree(leftover, ignore_errors=True)
        self._mngr.reload()

    def read_meta(self, step: int) -> dict:
        """Reads only the JSON metadata of checkpoint ``step``.

        Raises:
          CorruptCheckpoint: naming it, if the metadata cannot be read.
        """
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 -- Orbax raises many types
            raise CorruptCheckpoint(f"checkpoint {self.path(step)} is unreadable: {_short(e)}") from e
        return dict(out["meta"])

    def verify(self, step: int) -> None:
        """Checks every file of checkpoint ``step`` against its digests (if it has them).

        Raises:
          CorruptCheckpoint: naming the checkpoint and the first bad file.
        """
        root = self.path(step)
        digests = root / DIGESTS
        if not digests.exists():
            return  # written before digests existed, or killed between commit and digests
        try:
            want = json.loads(digests.read_text())
        except (OSError, ValueError) as e:
            raise CorruptCheckpoint(f"checkpoint {root}: its {DIGESTS} is unreadable ({e})") from e
        for rel, digest in want.items():
            f = root / rel
            if not f.is_file():
                raise CorruptCheckpoint(f"checkpoint {root}: {rel} is missing")
            if _sha256(f) != digest:
                raise CorruptCheckpoint(f"checkpoint {root}: {rel} is damaged (its SHA-256 differs)")

    def restore(self, step: int, like: Any) -> Any:
        """Restores checkpoint ``step`` into the structure, shapes and shardings of ``like``.

        Raises:
          CheckpointError: naming the checkpoint, if it is corrupt or its
            structure or shapes differ from ``like``.
        """
        self.verify(step)
        if self._other_shapes(step, like):
            # Refused from the arrays' metadata: an Orbax read that fails on a shape midway
            # leaves its other reads' coroutines pending, reported at garbage collection.
            raise CheckpointError(f"checkpoint {self.path(step)} holds other shapes than this model")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            state = self._restore_state(step, abstract)
        except Exception as e:  # noqa: BLE001
            state = self._restore_older(step, like, abstract)
            if state is None:
                raise CheckpointError(f"checkpoint {self.path(step)} cannot be restored into "
                                      f"this model: {_short(e)}") from e
        want = jax.tree.map(lambda x: (x.shape, x.dtype), like)
        got = jax.tree.map(lambda x: (x.shape, x.dtype), state)
        if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
            raise CheckpointError(f"checkpoint {self.path(step)} holds other shapes than this model")
        return state

    def _other_shapes(self, step: int, like: Any) -> bool:
        """Whether an array that checkpoint ``step`` and ``like`` both hold differs in shape
        (read from the checkpoint's array metadata alone; False if that cannot be read)."""
        try:
            meta = ocp.StandardCheckpointHandler().metadata(self.path(step) / "state")
        except Exception:  # noqa: BLE001 -- no metadata to go by: the restore decides
            return False
        saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(meta) if hasattr(m, "shape")}
        # Orbax names a leaf by its keys joined with dots, as keystr's simple form does.
        names = ((jax.tree_util.keystr(path, simple=True, separator="."), np.shape(leaf))
                 for path, leaf in jax.tree_util.tree_flatten_with_path(like)[0])
        return any(n in saved and saved[n] != tuple(shape) for n, shape in names)

    def _restore_state(self, step: int, abstract: Any) -> Any:
        return self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]

    def _restore_older(self, step: int, like: Any, abstract: Any) -> Any | None:
        """Restores a checkpoint written before a train-state field with a None
        default existed (:data:`LATER_FIELDS`): the fields it has, ``like``'s None
        for the rest. None if that does not fit either."""
        for older in _without_later_fields(abstract):
            try:
                return like.replace(**self._restore_state(step, older))
            except Exception:  # noqa: BLE001 -- not this older layout; try the next
                continue
        return None  # not an older checkpoint of this model either

    def restore_newest(self, like: Any, check_meta: Callable[[pathlib.Path, dict], None],
                       log: Callable[[str], None] = print) -> tuple[int, Any, dict] | None:
        """Restores the newest intact checkpoint, setting damaged ones aside.

        Args:
          like: the state whose structure, shapes and shardings to restore into.
          check_meta: raises :class:`CheckpointError` if a checkpoint's meta
            belongs to another model or dataset (that stays an error: it is
            not damage, and no older checkpoint would be better).
          log: prints the one-line report of each checkpoint set aside.

        Returns:
          ``(step, state, meta)`` of the newest intact checkpoint, or None if
          there is none (every damaged one was set aside).
        """
        for step in reversed(self.all_steps()):
            try:
                self.verify(step)
                meta = self.read_meta(step)
                check_meta(self.path(step), meta)
                # Meta and digests check out and the config matches: a failure
                # to restore now can only be damage that predates the digests.
                try:
                    return step, self.restore(step, like), meta
                except CheckpointError as e:
                    raise CorruptCheckpoint(str(e)) from e
            except CorruptCheckpoint as e:
                where = self.set_aside(step)
                log(f"{e}; set aside in {where}; trying the one before it")
        return None

    def set_aside(self, step: int) -> pathlib.Path:
        """Moves checkpoint ``step``, whole, to ``<workdir>/checkpoints_set_aside/``; returns where."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = self.directory.parent / "checkpoints_set_aside" / f"{step}-{stamp}"
        if jax.process_index() == 0:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.path(step)), str(dest))
        barrier(f"raegan_set_aside_{step}_{stamp}")
        self._mngr.reload()
        return dest

    def close(self) -> None:
        self._mngr.close()


def load_checkpoint(path: str | pathlib.Path, template: Callable[[dict], Any],
                    epoch: int | None = None, what: str = "init_from"
                    ) -> tuple[dict, Any, pathlib.Path]:
    """Reads the train state of another run (through :func:`raegan_jax.runs.load_run`).

    Args:
      path: a workdir (its newest checkpoint is used), its ``checkpoints``
        folder, or one checkpoint folder ``.../checkpoints/<step>``.
      template: maps the source run's config dict to a state of its
        structure (restored into; its values are discarded).

    Returns:
      ``(meta, state, checkpoint folder)``: the meta holds the source's ``config``
      and the ``epoch`` the checkpoint completed.

    With ``epoch``, a workdir's checkpoint that ends that epoch is read instead of
    its newest (a checkpoint folder must end it); ``what`` names the setting in errors.
    """
    p = pathlib.Path(path)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if p.name.isdigit() and p.is_dir():
        directory, step = p.parent, int(p.name)
    elif p.is_dir():
        directory, step = p, None
    else:
        raise CheckpointError(f"{what} {path}: no such workdir or checkpoint folder")
    ckpt = Checkpointer(directory, create=False)
    try:
        if step is None and epoch is not None:
            ends = {m["epoch"]: s for s, m in ((s, ckpt.read_meta(s)) for s in ckpt.all_steps())
                    if not m.get("partial")}
            if epoch not in ends:
                raise CheckpointError(
                    f"{what} {path}: no checkpoint there ends epoch {epoch} (kept: epochs "
                    f"{sorted(ends) or 'none'}): a run keeps only its newest checkpoints unless "
                    f"trained with --set train.keep_epochs={epoch}")
            step = ends[epoch]
        step = ckpt.latest_step() if step is None else step
        if step is None or step not in ckpt.all_steps():
            raise CheckpointError(f"{what} {path}: no checkpoint found there")
        meta = ckpt.read_meta(step)
        if "config" not in meta:
            raise CheckpointError(f"{what} {path}: checkpoint {ckpt.path(step)} has no config")
        if epoch is not None and (meta.get("epoch") != epoch or meta.get("partial")):
            raise CheckpointError(f"{what} {path}: checkpoint {ckpt.path(step)} ends epoch "
                                  f"{meta.get('epoch')}{' (mid-epoch)' if meta.get('partial') else ''}, "
                                  f"not {epoch}")
        return meta, ckpt.restore(step, template(meta["config"])), ckpt.path(step)
    finally:
        ckpt.close()


# Train-state fields added after checkpoints were first written; older checkpoints
# lack them, and they restore as None when the run does not use them.
LATER_FIELDS = ("ctrl", "ae_ema", "d_ema")


def _without_later_fields(abstract: Any) -> list[dict]:
    """The layouts an older checkpoint of ``abstract`` may have: its top-level fields as a
    dict without some of the :data:`LATER_FIELDS` that are None in it (each checkpoint
    lacks the fields added after it was written), fewest dropped first."""
    if not dataclasses.is_dataclass(abstract):
        return []
    names = [f.name for f in dataclasses.fields(abstract)]
    droppable = [n for n in LATER_FIELDS if n in names and getattr(abstract, n) is None]
    return [{n: getattr(abstract, n) for n in names if n not in drop}
            for k in range(1, len(droppable) + 1)
            for drop in itertools.combinations(droppable, k)]


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_digests(root: pathlib.Path) -> None:
    digests = {str(f.relative_to(root)): _sha256(f)
               for f in sorted(root.rglob("*")) if f.is_file() and f.name != DIGESTS}
    tmp = root / (DIGESTS + ".tmp")
    tmp.write_text(json.dumps(digests, indent=0))
    tmp.replace(root / DIGESTS)  # atomic: a digest file is whole or absent


@contextlib.contextmanager
def _orbax_quiet():
    """Keeps a failed write's echoes off the terminal while Orbax writes.

    On a full disk Orbax logs each failing array, and tensorstore completes every write
    still pending on the event loop Orbax has closed by printing a traceback straight to
    file descriptor 2 ("RuntimeError: Event loop is closed"), ~100 of them, past any
    Python hook. So fd 2 goes to a temporary file while Orbax writes: after a good write
    whatever was printed is passed on unchanged; after a failed one it is dropped, and
    :meth:`Checkpointer.save` reports the failure in one line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            if failed:
                # The failed writes' asyncio tasks report "exception was never retrieved"
                # when collected: here, or (those still referenced) later through the
                # asyncio logger, which from now on drops exactly those reports.
                gc.collect()
                logging.getLogger("asyncio").addFilter(_drop_unretrieved)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                capture.seek(0)
                echoed = capture.read()
                if echoed:
                    os.write(2, echoed)


def _drop_unretrieved(record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in record.getMessage()


_NO_SPACE = "No space left on device"


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
