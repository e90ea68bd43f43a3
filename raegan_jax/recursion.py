"""The recursive autoencoder: one ``lax.scan`` over the passes (SPEC §3).

x⁽⁰⁾ = x, x⁽ʲ⁾ = AE(x⁽ʲ⁻¹⁾) for j = 1..passes. ``passes = 1`` is the plain AE.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


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
