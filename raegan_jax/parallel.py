"""Data parallelism through a ``jax.sharding.Mesh`` (no pmap).

The state is replicated, the batch is split along its leading axis over the
``"data"`` mesh axis. The same code serves one CPU, a GPU, a TPU slice, and
several processes after ``jax.distributed.initialize()``: the mesh spans every
process's devices and each process provides only its own rows.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devs = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devs, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that places a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError if ``batch_size`` does not split evenly over the mesh."""
    if batch_size % mesh.size:
        raise ValueError(
            f"train.batch_size {batch_size} does not divide over {mesh.size} devices; "
            f"use a multiple of {mesh.size}")


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host or device arrays, replicated, on every device.

    In a multi-process run every process must pass the same values.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def put_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this process's rows of a global batch, sharded over the mesh."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
