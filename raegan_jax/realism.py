"""Measures of realism that do not ask the game's discriminator (SPEC §9).

The high-frequency energy ratio: how much fine detail a reconstruction keeps. An image's
high frequencies are what a Gaussian blur of :data:`HF_SIGMA` pixels removes; their energy
is the mean square of that residual. The ratio of the reconstructions' energy to the real
images' is 1 for images as detailed as the reals, below 1 for blurrier ones, above 1 for
noisier ones. The recipe (σ = 1 px, a kernel of 2·⌈3σ⌉+1 = 7 taps, the residual over the
interior the kernel covers whole, so no padding enters it) is fixed here, before any study
reads it; ``tests/test_evaluate.py`` calibrates it on real images.
"""

from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp

HF_SIGMA = 1.0  # pixels


_TAPS = 2 * math.ceil(3 * HF_SIGMA) + 1


def high_frequency_energies(images: jax.Array) -> jax.Array:
    """[N] each image's mean squared residual after the blur, over the interior where the
    kernel lies whole ([H - 6, W - 6] for σ = 1); ``images`` [N, H, W, C] in [0, 1]. The
    evaluation step averages it per pass (``hf_energy``) and on the reals (``hf_energy_real``)."""
    images = jnp.asarray(images, jnp.float32)
    blurred = jax.vmap(lambda im: pix.gaussian_blur(im, HF_SIGMA, _TAPS, padding="VALID"))(images)
    r = _TAPS // 2
    return jnp.mean((images[:, r:-r, r:-r] - blurred) ** 2, axis=(1, 2, 3))


def high_frequency_ratio(recons: jax.Array, reals: jax.Array) -> float:
    """High-frequency energy of ``recons`` over that of ``reals`` (both [N, H, W, C] in [0, 1])."""
    return float(jnp.mean(high_frequency_energies(recons)) / jnp.mean(high_frequency_energies(reals)))
