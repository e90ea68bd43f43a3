"""Measures of realism that do not ask the game's discriminator (SPEC §9).

The high-frequency energy ratio: how much fine detail a reconstruction keeps. An image's
high frequencies are what a Gaussian blur of :data:`HF_SIGMA` pixels removes; their energy
is the mean square of that residual. The ratio of the reconstructions' energy to the real
images' is 1 for images as detailed as the reals, below 1 for blurrier ones, above 1 for
noisier ones. The recipe (σ = 1 px, a kernel of 2·⌈3σ⌉+1 = 7 taps, the residual over the
interior the kernel covers whole, so no padding enters it) is fixed here, before any study
reads it; ``tests/test_evaluate.py`` calibrates it on real images.

Why a blur's residual and not a hard cut of the Fourier spectrum: the residual passes a
frequency f (cycles per pixel) with power (1 - exp(-2π²σ²f²))², which for σ = 1 px crosses ½
at f = 0.249, a quarter of the sampling rate. So it measures "the power above a quarter of
the sampling rate" with a smooth edge, and without the window a 32-pixel FFT needs against
the leakage of the image's border. :func:`radial_power_spectrum` draws the spectrum itself.
"""

from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

HF_SIGMA = 1.0  # pixels


_TAPS = 2 * math.ceil(3 * HF_SIGMA) + 1


def quantise(images: jax.Array) -> jax.Array:
    """Images in [0, 1] as 8-bit values (what a saved PNG holds)."""
    return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def hf_ratio(evals: dict) -> list[float]:
    """Per pass, the reconstructions' high-frequency energy over the real images', from an
    evaluation's (fetched) means ``hf_energy`` [passes] and ``hf_energy_real``."""
    ratio = np.asarray(evals["hf_energy"]) / np.asarray(evals["hf_energy_real"])
    return np.asarray(ratio, np.float64).tolist()


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


@jax.jit
def radial_power_spectrum(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The radially averaged power spectrum of ``images`` [N, H, W, C] in [0, 1] (H = W).

    Each image channel, less its mean and under a 2-D Hann window (against the border's
    leakage), is Fourier transformed; the power is averaged over images, channels and the
    frequencies of each ring one bin (1/H cycles per pixel) wide.

    Returns:
      (frequencies [H // 2] in cycles per pixel, the rings' centres; mean power [H // 2]).
    """
    x = jnp.asarray(images, jnp.float32)
    n = x.shape[1]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    hann = jnp.hanning(n)
    x = x * (hann[:, None] * hann[None, :])[None, :, :, None]
    power = jnp.abs(jnp.fft.fft2(x, axes=(1, 2))) ** 2
    power = power.mean(axis=(0, 3))  # [H, W]
    f = jnp.fft.fftfreq(n)
    radius = jnp.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    ring = jnp.round(radius * n).astype(jnp.int32)  # ring k: |f| within half a bin of k / n
    bins = n // 2
    total = jnp.zeros(bins + 1).at[jnp.minimum(ring, bins)].add(power)
    count = jnp.zeros(bins + 1).at[jnp.minimum(ring, bins)].add(1.0)
    k = jnp.arange(1, bins + 1)  # ring 0 is the (removed) mean
    return k / n, (total / count)[1:]
