"""Orbax checkpoints of the train state. The only module that imports Orbax.

A checkpoint is saved under ``<workdir>/checkpoints/<epoch>/`` with two items:
``state`` (the :class:`~raegan_jax.state.TrainState` pytree) and ``meta``
(JSON: the config and the epoch). Saving is collective across processes.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used. The message names it."""


class Checkpointer:
    """Saves and restores train states, keeping the newest ``max_to_keep``.

    Args:
      directory: where the numbered checkpoints live.
      max_to_keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3, create: bool = True):
        self.directory = pathlib.Path(directory).resolve()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                                 read_only=not create),
        )

    def latest_epoch(self) -> int | None:
        """The newest complete checkpoint's epoch, or None."""
        return self._mngr.latest_step()

    def all_epochs(self) -> list[int]:
        return list(self._mngr.all_steps())

    def path(self, epoch: int) -> pathlib.Path:
        return self.directory / str(epoch)

    def save(self, epoch: int, state: Any, meta: dict) -> None:
        """Saves ``state`` and JSON ``meta`` as checkpoint ``epoch`` and waits for it."""
        self._mngr.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._mngr.wait_until_finished()

    def read_meta(self, epoch: int) -> dict:
        """Reads only the JSON metadata of checkpoint ``epoch``."""
        try:
            out = self._mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 -- Orbax raises many types
            raise CheckpointError(f"checkpoint {self.path(epoch)} is unreadable: {_short(e)}") from e
        return dict(out["meta"])

    def restore(self, epoch: int, like: Any) -> Any:
        """Restores checkpoint ``epoch`` into the structure, shapes and shardings of ``like``.

        Raises:
          CheckpointError: naming the checkpoint, if it is corrupt or its
            structure or shapes differ from ``like``.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            out = self._mngr.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))
            state = out["state"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {self.path(epoch)} cannot be restored into this model: {_short(e)}") from e
        want = jax.tree.map(lambda x: (x.shape, x.dtype), like)
        got = jax.tree.map(lambda x: (x.shape, x.dtype), state)
        if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
            raise CheckpointError(f"checkpoint {self.path(epoch)} holds other shapes than this model")
        return state

    def close(self) -> None:
        self._mngr.close()


def load_params(path: str | pathlib.Path, template: Callable[[dict], Any]) -> tuple[dict, Any]:
    """Reads the train state of another run, to start a new run from it.

    Args:
      path: a workdir (its newest checkpoint is used), its ``checkpoints``
        folder, or one checkpoint folder ``.../checkpoints/<epoch>``.
      template: maps the source run's config dict to a state of its
        structure (restored into; its values are discarded).

    Returns:
      ``(source config dict, source state)``.

    Raises:
      CheckpointError: naming the path, if no readable checkpoint is there.
    """
    p = pathlib.Path(path)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if p.name.isdigit() and p.is_dir():
        directory, epoch = p.parent, int(p.name)
    elif p.is_dir():
        directory, epoch = p, None
    else:
        raise CheckpointError(f"init_from {path}: no such workdir or checkpoint folder")
    ckpt = Checkpointer(directory, create=False)
    try:
        epoch = ckpt.latest_epoch() if epoch is None else epoch
        if epoch is None or epoch not in ckpt.all_epochs():
            raise CheckpointError(f"init_from {path}: no checkpoint found there")
        meta = ckpt.read_meta(epoch)
        if "config" not in meta:
            raise CheckpointError(f"init_from {path}: checkpoint {ckpt.path(epoch)} has no config")
        return meta["config"], ckpt.restore(epoch, template(meta["config"]))
    finally:
        ckpt.close()


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
