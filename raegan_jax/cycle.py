"""The report's ``cycle`` pass schedule, framework-free (SPEC §3).

Within a sweep over the training data, the sample at position i trains on
the output after ((s + i) mod passes) + 1 passes, with a start s drawn per
sweep. This module is the one definition of that schedule: the JAX train
steps call it on traced ``uint32`` arrays, the PyTorch twin
(``benchmarks/torch_impl.py``) on Python ints. It uses only integer
operators (``^ >> * & %``), so both give the same passes for the same seed.
"""

from __future__ import annotations

import numpy as np

_MASK32 = 0xFFFFFFFF


def _u32(like, c: int):
    """``c`` as a uint32 for arrays (which then wrap mod 2**32), as itself for Python ints."""
    return c if isinstance(like, int) else np.uint32(c)


def _mul(x, c: int):
    """x * c mod 2**32, for a Python int or a uint32 array."""
    return (x * c) & _MASK32 if isinstance(x, int) else x * _u32(x, c)


def _mix32(x):
    """A 32-bit integer hash (the "lowbias32" finaliser) of an int or uint32 array."""
    x = _mul(x ^ (x >> 16), 0x7FEB352D)
    x = _mul(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


def cycle_offset(seed: int, sweep, passes: int):
    """The random start s in [0, passes) of sweep ``sweep`` for run seed ``seed``.

    Args:
      seed: the run's seed (``train.seed``), a Python int.
      sweep: the sweep number (0, 1, ...): a Python int or a uint32 array.
      passes: number of passes.

    Returns:
      s, of the type of ``sweep``.
    """
    return _mix32(_u32(sweep, _mix32(seed & _MASK32)) ^ sweep) % passes


def cycle_pass(seed: int, step, position, steps_per_sweep: int, batch_size: int, passes: int):
    """Zero-based pass that the sample at ``position`` of train step ``step`` trains on.

    Train step ``step`` (counting every step of the run, D steps too) is step
    ``k = step mod steps_per_sweep`` of sweep ``step // steps_per_sweep``; its
    row ``position`` is sample ``i = k * batch_size + position`` of that sweep.

    Args:
      seed: the run's seed (``train.seed``).
      step: the global step (int or uint32 array).
      position: row(s) within the batch (int or uint32 array, e.g. ``arange(B)``).
      steps_per_sweep: train steps per pass over the training data.
      batch_size: rows per step.
      passes: number of passes.

    Returns:
      ((s + i) mod passes), broadcast over ``position``.
    """
    sweep, k = step // steps_per_sweep, step % steps_per_sweep
    return (cycle_offset(seed, sweep, passes) + k * batch_size + position) % passes
