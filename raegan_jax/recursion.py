"""The recursive autoencoder: one ``lax.scan`` over the passes, and which pass a sample
trains on (SPEC §3).

x⁽⁰⁾ = x, x⁽ʲ⁾ = AE(x⁽ʲ⁻¹⁾) for j = 1..passes. ``passes = 1`` is the plain AE.

**The report's ``cycle`` pass schedule.** Within a sweep over the training data, the
sample at position i trains on the output after ((s + i) mod passes) + 1 passes, with a
start s drawn per sweep. :func:`cycle_pass` is the one definition of that schedule: the JAX
train steps call it on traced ``uint32`` arrays. It uses only integer operators
(``^ >> * & %``) and works on Python ints too; the PyTorch twin
(``benchmarks/torch_impl.py``) computes the same schedule on its own and the parity tests
compare them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def recursive_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, passes: int, *,
                    unroll: int = 0,
                    feedback: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """Applies ``fn`` ``passes`` times, feeding each output back in.

    This is the only place the recursion lives. Gradients flow through every
    pass.

    Args:
      fn: maps a batch [B, ...] to an output of the same shape (e.g. the AE).
      x: the input batch [B, ...].
      passes: number of applications (>= 1), a static Python int.
      unroll: ``lax.scan`` unroll factor; 0 (default) unrolls fully. XLA:CPU
        runs a rolled scan over convolutions 21-27x slower than an unrolled one,
        so small ``passes`` should stay fully unrolled; a rolled scan keeps
        compile time and program size flat for large ``passes``.
      feedback: maps an output to the next pass's input (default: identity).
        The train step passes ``sigmoid`` so ``fn`` can return logits.

    Returns:
      [passes, B, ...]: ``out[j]`` is ``fn`` applied ``j + 1`` times (before
      ``feedback``).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    feedback = feedback or (lambda y: y)

    def body(carry, _):
        y = fn(carry)
        return feedback(y), y

    # jax's own convention: unroll=0 inlines every pass with no while loop at all
    # (unroll=True is max(length, 1), which for passes == 1 is a rolled loop).
    _, outs = jax.lax.scan(body, x, None, length=passes, unroll=unroll)
    return outs


def rae_objective(per_pass_losses: jax.Array, objective: str, pass_index: jax.Array | None = None
                  ) -> jax.Array:
    """Reduces per-pass, per-sample losses to the scalar training objective.

    Args:
      per_pass_losses: [passes, B] loss of each sample after each pass.
      objective: "cycle" (each sample's own pass, given by ``pass_index``),
        "sum" (sum over passes of the batch means) or "last" (last pass only).
      pass_index: [B] zero-based pass per sample, required for "cycle".

    Returns:
      Scalar objective.
    """
    if objective == "sum":
        return per_pass_losses.mean(axis=1).sum()
    if objective == "last":
        return per_pass_losses[-1].mean()
    if objective == "cycle":
        if pass_index is None:
            raise ValueError("the 'cycle' objective needs pass_index")
        picked = jnp.take_along_axis(per_pass_losses, pass_index[None, :], axis=0)[0]
        return picked.mean()
    raise ValueError(f"unknown rae objective {objective!r}")


# --------------------------------------------------------------------------- the cycle schedule

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
