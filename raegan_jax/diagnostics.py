"""Instruments for a model that does not learn (``train.diagnostics=true``).

A plain-ReLU autoencoder trained with a large Adam step can settle on the
*mean-image plateau*: it outputs (nearly) the same image for every input and
the reconstruction loss stays at that of the mean image. These measurements,
taken inside the jitted step on the pre-update parameters, tell the plateau
from slow learning:

* ``diag/grad_norm/<layer>`` — the global norm of the reconstruction
  objective's gradient for each AE layer (kernel and bias together);
* ``diag/dead_frac/<layer>`` — the fraction of a layer's output channels whose
  pre-activation is <= 0 for every sample and position of the batch, i.e. dead
  after the following ReLU (for the last decoder layer, which has no ReLU,
  it reads as "never above 0.5 after the sigmoid");
* ``diag/out_mean`` — the mean of the first pass's output images;
* ``diag/out_batch_std`` — the standard deviation *across the batch* of each
  output pixel, averaged over pixels. It is ~0 on the plateau (one image for
  every input) and near the data's own spread when the AE reconstructs.

They go through the same per-epoch sums as every other metric, into
``metrics.jsonl`` and TensorBoard. Each costs one extra forward and backward
pass of the AE, so it is off by default.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from raegan_jax.models import to_images


def layer_grad_norms(grads: Any) -> dict[str, jax.Array]:
    """``{layer name: global norm of that layer's gradient}`` for a Flax params tree."""
    return {name: jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(layer)))
            for name, layer in grads.items()}


def dead_fractions(intermediates: Any) -> dict[str, jax.Array]:
    """Fraction of output channels that are <= 0 everywhere, for each captured layer.

    Args:
      intermediates: the ``"intermediates"`` collection of an ``apply`` with
        ``capture_intermediates=True``: ``{layer: {"__call__": (out,)}}`` with
        out [B, ..., C].

    Returns:
      ``{layer: scalar in [0, 1]}``.
    """
    out = {}
    for name, calls in intermediates.items():
        if not isinstance(calls, dict) or "__call__" not in calls:
            continue
        y = calls["__call__"][0]
        alive = (y > 0).reshape(-1, y.shape[-1]).any(axis=0)  # [C]
        out[name] = 1.0 - alive.mean()
    return out


def ae_diagnostics(ae: nn.Module, params: Any, images: jax.Array,
                   objective: Callable[[Any], jax.Array]) -> dict[str, jax.Array]:
    """The instruments for one batch (see the module docstring).

    Args:
      ae: the autoencoder module.
      params: its parameters (before this step's update).
      images: [B, H, W, C] the batch, in [0, 1].
      objective: params -> the scalar reconstruction objective the step
        differentiates (all passes, as trained).

    Returns:
      A flat dict of scalars named ``diag/...``.
    """
    grads = jax.grad(objective)(params)
    logits, state = ae.apply({"params": params}, images, method="logits",
                             capture_intermediates=True, mutable=["intermediates"])
    out = to_images(logits)
    m = {f"diag/grad_norm/{k}": v for k, v in layer_grad_norms(grads).items()}
    m.update({f"diag/dead_frac/{k}": v for k, v in dead_fractions(state["intermediates"]).items()})
    m["diag/out_mean"] = out.mean()
    m["diag/out_batch_std"] = out.std(axis=0).mean()
    return m
