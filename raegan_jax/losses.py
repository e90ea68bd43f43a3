"""Reconstruction and adversarial losses (all take logits, never probabilities), and
the image metrics of evaluation (dm-pix's PSNR and SSIM)."""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special


def _per_sample_mean(x: jax.Array) -> jax.Array:
    """Mean over every axis but the leading batch axes: [..., H, W, C] -> [...]."""
    return x.reshape(*x.shape[:-3], -1).mean(axis=-1)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1].

    Computed as ``softplus(l) - t * l``, which is stable for large |l|.
    """
    return jax.nn.softplus(logits) - targets * logits


def recon_loss(logits: jax.Array, images: jax.Array, kind: str) -> jax.Array:
    """Per-sample reconstruction loss of images ``sigmoid(logits)``.

    Args:
      logits: [..., B, H, W, C] reconstruction logits (leading pass axes allowed).
      images: [B, H, W, C] targets in [0, 1] (broadcast over leading axes).
      kind: "mse" (on the sigmoid outputs) or "bce" (from the logits).

    Returns:
      [..., B] loss per sample, averaged over pixels and channels (PyTorch's
      ``reduction='mean'`` once averaged over the batch).
    """
    if kind == "mse":
        return _per_sample_mean((jax.nn.sigmoid(logits) - images) ** 2)
    if kind == "bce":
        return _per_sample_mean(bce_with_logits(logits, images))
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def recon_floor(images: np.ndarray, kind: str) -> float:
    """The reconstruction loss a perfect reconstruction scores on ``images``.

    BCE against targets in (0, 1) is not 0 at ``output == target``: its minimum is
    the targets' mean binary entropy, a property of the images alone. Val BCEs
    measured on different test images (ours: CIFAR-10's first 1,017; the
    report's: 2,000) are comparable only above their floors.

    Args:
      images: [N, H, W, C] uint8 images (or floats in [0, 1]).
      kind: "mse" (floor 0) or "bce".

    Returns:
      The mean per-pixel floor, in the units of :func:`recon_loss`.
    """
    if kind == "mse":
        return 0.0
    if kind != "bce":
        raise ValueError(f"unknown reconstruction loss {kind!r}")
    raw = np.asarray(images)
    x = raw.astype(np.float64) / (255.0 if raw.dtype == np.uint8 else 1.0)
    return float(np.mean(scipy.special.entr(x) + scipy.special.entr(1.0 - x)))


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean over the last (batch) axis, or a weighted mean with [B] ``weights``."""
    return x.mean(axis=-1) if weights is None else x @ (weights / weights.sum())


def d_loss(real_logits: jax.Array, fake_logits: jax.Array, weights: jax.Array | None = None
           ) -> jax.Array:
    """Discriminator BCE: real -> 1, fake -> 0, averaged over all real and fake samples.

    Args:
      real_logits: [B] D logits on real images.
      fake_logits: [P, B] D logits on the fakes of each pass.
      weights: optional [B] sample weights (0 for padding rows).

    Returns:
      Scalar: mean real BCE + mean fake BCE, halved (the usual 0.5 (real + fake)).
    """
    real = _mean(bce_with_logits(real_logits, 1.0), weights)
    fake = _mean(bce_with_logits(fake_logits, 0.0), weights).mean()
    return 0.5 * (real + fake)


def adversarial_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
    """The AE's adversarial term per pass.

    Args:
      fake_logits: [P, B] D logits on the fakes of each pass.
      kind: "nonsaturating" = BCE(D(fake), 1) = -log D(fake); "minimax" =
        log(1 - D(fake)) = -BCE(D(fake), 0), the original minimax objective.

    Returns:
      [P] loss per pass (averaged over the batch); the AE minimises its sum.
    """
    if kind == "nonsaturating":
        return bce_with_logits(fake_logits, 1.0).mean(axis=-1)
    if kind == "minimax":
        return -bce_with_logits(fake_logits, 0.0).mean(axis=-1)
    raise ValueError(f"unknown adversarial loss {kind!r}")


def r1_penalty(d_fn, images: jax.Array) -> jax.Array:
    """The R1 gradient penalty's mean: ``mean_b |grad_x D(x_b)|^2`` at real images.

    Args:
      d_fn: D as a function of images [B, H, W, C] -> logits [B], each logit
        depending on its own image only (so the gradient of their sum holds each
        image's own input gradient).
      images: [B, H, W, C] real images.

    Returns:
      Scalar: the squared norm of D's input gradient, averaged over the batch
      (Mescheder et al. 2018 weight it by gamma / 2 in D's loss).
    """
    grads = jax.grad(lambda x: d_fn(x).sum())(images)
    return (grads.reshape(grads.shape[0], -1) ** 2).sum(axis=-1).mean()


def mean_colour_error(outputs: jax.Array, images: jax.Array) -> jax.Array:
    """Squared distance between each output's and its image's mean colour.

    Args:
      outputs: [..., B, H, W, C] images in [0, 1] (leading pass axes allowed).
      images: [B, H, W, C] targets in [0, 1] (broadcast over leading axes).

    Returns:
      [..., B]: sum over channels of (mean over pixels of output - of image)^2.
    """
    return ((outputs.mean(axis=(-3, -2)) - images.mean(axis=(-3, -2))) ** 2).sum(axis=-1)


def accuracy_real(real_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Fraction of real images D classifies as real (logit > 0). [B] -> scalar."""
    return _mean((real_logits > 0).astype(real_logits.dtype), weights)


def accuracy_fake(fake_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Per-pass fraction of fakes D classifies as fake (logit <= 0). [P, B] -> [P]."""
    return _mean((fake_logits <= 0).astype(fake_logits.dtype), weights)


def prob_real(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """D's mean probability of "real", sigmoid(logit), over the batch: [B] -> scalar,
    [P, B] -> [P]. Unlike the accuracies it does not jump with D's bias around logit 0:
    on a pass's fakes it is how often, on average, D is fooled (the report's 50 percent)."""
    return _mean(jax.nn.sigmoid(logits), weights)


def balance_gap(fake_acc) -> float:
    """How far D is from being fooled half the time at its worst pass:
    ``max_j |fake_acc_j - 0.5|`` (0 = the report's goal at every pass, 0.5 = D
    always right or always wrong on some pass). Host-side, on fetched accuracies.
    """
    return float(np.max(np.abs(np.asarray(fake_acc, np.float64) - 0.5)))


def _blur_matrix(n: int, size: int, sigma: float) -> np.ndarray:
    """[n - size + 1, n]: row i holds dm-pix's 1-D Gaussian at columns i .. i + size - 1.

    The same taps as ``dm_pix.ssim``'s default filter (``size`` odd), so a product
    with this matrix is its "valid" convolution along one axis.
    """
    hw = size // 2
    taps = np.exp(-0.5 * ((np.arange(size) - hw) / sigma) ** 2)
    taps /= taps.sum()
    rows = n - size + 1
    m = np.zeros((rows, n), np.float32)
    for i in range(rows):
        m[i, i:i + size] = taps
    return m


def ssim(a: jax.Array, b: jax.Array, *, filter_size: int = 11, filter_sigma: float = 1.5
         ) -> jax.Array:
    """dm-pix's SSIM, its Gaussian window applied as two matrix products.

    ``dm_pix.ssim``'s own window is a vmapped 1-D ``jnp.convolve`` per row and
    column, which XLA:CPU runs ~3x slower than the AE's forward pass: at batch
    32, a 3-pass evaluation spent 20 of its 52 ms there. The same separable
    filter as dense [rows, n] matrices (:func:`_blur_matrix`) gives the same
    SSIM to float rounding in a fraction of the time, on any backend.

    Args:
      a, b: [B, H, W, C] or [H, W, C] images in [0, 1], of one shape.
      filter_size, filter_sigma: the Gaussian window (dm-pix's defaults).

    Returns:
      [B] or scalar: each image pair's mean SSIM, as ``dm_pix.ssim(a, b)``.
    """
    h, w = a.shape[-3], a.shape[-2]
    my = jnp.asarray(_blur_matrix(h, filter_size, filter_sigma))
    mx = jnp.asarray(_blur_matrix(w, filter_size, filter_sigma))
    hi = jax.lax.Precision.HIGHEST  # dm-pix's convolution precision

    def blur(z):
        z = jnp.einsum("ih,...hwc->...iwc", my, z, precision=hi)
        return jnp.einsum("jw,...iwc->...ijc", mx, z, precision=hi)

    return pix.ssim(a, b, filter_fn=blur)
