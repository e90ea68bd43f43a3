"""The report's networks as pure Flax Linen modules (SPEC §2).

An autoencoder applied plainly returns **images** in [0, 1] (its decoder ends
in a sigmoid), so ``ae.apply(v, ae.apply(v, x))`` is the AE applied twice.
Its ``logits`` method returns the pre-sigmoid values, from which the losses
compute BCE stably: ``ae.apply(v, x, method="logits")``. :func:`to_images`
is the one place the sigmoid is applied.

Shapes are NHWC float32.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from raegan_jax.config import Config

to_images = jax.nn.sigmoid


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pooling, floor mode (odd edges dropped): [B, H, W, C] -> [B, H//2, W//2, C].

    The same values as ``nn.max_pool(x, (2, 2), (2, 2), "VALID")``, written as a
    reshape and a max: its gradient is an elementwise mask instead of
    ``select_and_scatter``, ~14x faster on XLA:CPU (22.5 -> 1.6 ms at
    128x28x28x16). Only exact ties inside a window get their gradient split
    rather than sent to one element; after a ReLU such ties are zeros, whose
    gradient the ReLU stops anyway.
    """
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :2 * h2, :2 * w2].reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))


def _conv_transpose_pt(features: int, kernel: int, padding: int, output_padding: int = 0,
                       impl: str = "transpose", name: str | None = None) -> nn.Module:
    """A stride-2 transposed conv with PyTorch's ``ConvTranspose2d`` output size.

    ``lax.conv_transpose`` pads the stride-dilated input, so PyTorch's
    (padding p, output_padding op) becomes (k-1-p, k-1-p+op) on each axis.
    ``impl`` picks ``nn.ConvTranspose`` ("transpose") or the equivalent
    :class:`SubpixelConvTranspose` ("subpixel"); both hold the same
    parameters.
    """
    lo, hi = kernel - 1 - padding, kernel - 1 - padding + output_padding
    if impl == "subpixel":
        return SubpixelConvTranspose(features, kernel, (lo, hi), name=name)
    return nn.ConvTranspose(features, (kernel, kernel), strides=(2, 2),
                            padding=((lo, hi), (lo, hi)), name=name)


class MnistAE(nn.Module):
    """The report's MNIST autoencoder: 28x28x1 -> latent ``latent_dim`` -> 28x28x1 images.

    ``apply(v, x)`` returns images in [0, 1]; ``apply(v, x, method="logits")``
    the logits before the final sigmoid.

    Attributes:
      conv_widths: channels of the 3 conv/max-pool stages (16, 32, 64).
      dense_widths: hidden dense widths between the conv stack and the latent (128, 64).
      latent_dim: size of the code (16).
      decoder_impl: "transpose" (nn.ConvTranspose) or "subpixel" (the same
        function and parameters computed as conv + depth-to-space).
    """

    conv_widths: Sequence[int] = (16, 32, 64)
    dense_widths: Sequence[int] = (128, 64)
    latent_dim: int = 16
    decoder_impl: str = "transpose"

    # The decoder's last layer (the adaptive adversarial weight is measured at its kernel).
    last_layer = "dec_up2"

    def encode(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, 1] images -> [B, latent_dim] codes."""
        for k, w in enumerate(self.conv_widths):
            x = nn.relu(nn.Conv(w, (3, 3), padding=1, name=f"enc_conv{k}")(x))
            x = max_pool_2x2(x)  # 28->14->7->3
        x = x.reshape(x.shape[0], -1)
        for k, w in enumerate(self.dense_widths):
            x = nn.relu(nn.Dense(w, name=f"enc_dense{k}")(x))
        return nn.Dense(self.latent_dim, name="enc_latent")(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, latent_dim] codes -> [B, 28, 28, 1] logits."""
        c = self.conv_widths[-1]
        for k, w in enumerate((*reversed(self.dense_widths), 3 * 3 * c)):
            z = nn.relu(nn.Dense(w, name=f"dec_dense{k}")(z))
        x = z.reshape(z.shape[0], 3, 3, c)
        up = functools.partial(_conv_transpose_pt, kernel=3, impl=self.decoder_impl)
        x = nn.relu(up(self.conv_widths[1], padding=0, name="dec_up0")(x))  # 3 -> 7
        x = nn.relu(up(self.conv_widths[0], padding=1, output_padding=1, name="dec_up1")(x))  # 7 -> 14
        return up(1, padding=1, output_padding=1, name="dec_up2")(x)  # 14 -> 28

    @nn.compact
    def logits(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, 1] images in [0, 1] -> [B, 28, 28, 1] reconstruction logits."""
        return self.decode(self.encode(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, 1] images in [0, 1] -> [B, 28, 28, 1] reconstructed images in [0, 1]."""
        return to_images(self.logits(x))


class SubpixelConvTranspose(nn.Module):
    """A stride-2 transposed conv computed as a stride-1 conv + depth-to-space.

    Holds exactly the parameters of ``nn.ConvTranspose(features, (k, k), 2,
    padding=(padding, padding))`` (kernel [k, k, in, out], bias [out]) and
    returns the same values. Each of the 4 output phases (row parity, column
    parity) reads only some kernel taps at fixed input offsets, so the layer
    is one stride-1 convolution to 4*out channels (unused taps zero) followed
    by a pixel shuffle. On XLA:CPU this avoids the input-dilated convolution
    the transposed form lowers to, whose gradient is slow.

    Attributes:
      features: output channels.
      kernel_size: k (the window is k x k).
      padding: (low, high) padding of the stride-dilated input, as in
        ``nn.ConvTranspose`` (PyTorch's (p, output_padding) is (k-1-p, k-1-p+op)).
    """

    features: int
    kernel_size: int = 4
    padding: tuple[int, int] = (2, 2)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, (lo, hi) = self.kernel_size, self.padding
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        sub, first = subpixel_kernel(kernel, lo)
        b, h, w, _ = x.shape
        out_h, out_w = 2 * h - 1 + lo + hi - k + 1, 2 * w - 1 + lo + hi - k + 1
        # Phase row m reads input rows m + first .. m + first + window - 1.
        window = sub.shape[0]
        m_h, m_w = -(-out_h // 2), -(-out_w // 2)
        pad = [(-first, m_h + first + window - 1 - h), (-first, m_w + first + window - 1 - w)]
        y = jax.lax.conv_general_dilated(x, sub, (1, 1), pad,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y.reshape(b, m_h, m_w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, 2 * m_h, 2 * m_w, self.features)[:, :out_h, :out_w] + bias


def subpixel_kernel(kernel: jax.Array, lo: int = 2) -> tuple[jax.Array, int]:
    """Rearranges a [k, k, I, O] stride-2 transposed-conv kernel into a stride-1 conv kernel.

    In the ``lax.conv_transpose`` form (input dilated by 2, padded by ``lo``
    below, kernel not flipped), output row ``2m + r`` sums kernel row ``t``
    times input row ``m + (r + t - lo) / 2`` over the taps t where
    ``r + t - lo`` is even. Over both phases the input offsets span a window
    starting at ``first``; the sub-pixel kernel holds, for each offset and
    phase, the kernel row used there (zeros where a phase has no tap). The
    same holds for columns. Output channel index is (r, c, o).

    Args:
      kernel: [k, k, I, O] transposed-conv kernel.
      lo: low padding of the dilated input (``nn.ConvTranspose`` padding[0]).

    Returns:
      ``(sub, first)``: sub [window, window, I, 4*O] and the first input offset.
    """
    k, i, o = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    # taps[r][offset] = kernel row for output phase r at that input offset
    taps = [{(r + t - lo) // 2: t for t in range(k) if (r + t - lo) % 2 == 0} for r in (0, 1)]
    offsets = sorted(set(taps[0]) | set(taps[1]))
    first, window = offsets[0], offsets[-1] - offsets[0] + 1
    zero = jnp.zeros((i, o), kernel.dtype)
    rows = []
    for d in range(first, first + window):
        cols = []
        for e in range(first, first + window):
            phases = [zero if d not in taps[r] or e not in taps[c] else kernel[taps[r][d], taps[c][e]]
                      for r in (0, 1) for c in (0, 1)]
            cols.append(jnp.stack(phases, axis=1).reshape(i, 4 * o))
        rows.append(jnp.stack(cols))
    return jnp.stack(rows), first


class Cifar10AE(nn.Module):
    """The report's CIFAR-10 autoencoder: 7 conv layers each side, latent 4x4x64.

    Encoder: conv3x3 3->8, then per stage [conv4x4/s2, conv3x3] to 16, 32, 64
    channels (32 -> 16 -> 8 -> 4). Decoder mirrors it with 4x4 stride-2
    transposed convs (4 -> 8 -> 16 -> 32) and ends conv3x3 8->3. ReLU between
    all layers. ``apply(v, x)`` returns images in [0, 1] (sigmoid);
    ``apply(v, x, method="logits")`` the logits.

    Attributes:
      conv_widths: (stem, stage1, stage2, stage3) channels, default (8, 16, 32, 64).
      decoder_impl: "transpose" (nn.ConvTranspose) or "subpixel" (the same
        function and parameters computed as conv + depth-to-space).
      out_channels: image channels (3).
    """

    conv_widths: Sequence[int] = (8, 16, 32, 64)
    decoder_impl: str = "transpose"
    out_channels: int = 3

    # The decoder's last layer (the adaptive adversarial weight is measured at its kernel).
    last_layer = "dec_out"

    def encode(self, x: jax.Array) -> jax.Array:
        """[B, 32, 32, 3] -> [B, 4, 4, conv_widths[-1]]."""
        x = nn.relu(nn.Conv(self.conv_widths[0], (3, 3), padding=1, name="enc_stem")(x))
        for k, w in enumerate(self.conv_widths[1:]):
            x = nn.relu(nn.Conv(w, (4, 4), strides=(2, 2), padding=1, name=f"enc_down{k}")(x))
            x = nn.relu(nn.Conv(w, (3, 3), padding=1, name=f"enc_conv{k}")(x))
        return x

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, 4, 4, C] -> [B, 32, 32, out_channels] logits."""
        x = z
        widths = list(self.conv_widths)
        for k, (w_in, w_out) in enumerate(zip(widths[:0:-1], widths[-2::-1])):
            x = nn.relu(nn.Conv(w_in, (3, 3), padding=1, name=f"dec_conv{k}")(x))
            # Both forms hold the same "dec_up{k}" kernel [4, 4, w_in, w_out] and bias.
            x = nn.relu(_conv_transpose_pt(w_out, 4, 1, impl=self.decoder_impl, name=f"dec_up{k}")(x))
        return nn.Conv(self.out_channels, (3, 3), padding=1, name="dec_out")(x)

    @nn.compact
    def logits(self, x: jax.Array) -> jax.Array:
        """[B, 32, 32, 3] images in [0, 1] -> [B, 32, 32, 3] reconstruction logits."""
        return self.decode(self.encode(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, 32, 32, 3] images in [0, 1] -> [B, 32, 32, 3] reconstructed images in [0, 1]."""
        return to_images(self.logits(x))


class DenseDiscriminator(nn.Module):
    """Fully connected discriminator: flattened image -> hidden widths -> 1 logit.

    Attributes:
      widths: hidden layer widths (MNIST 512, 256, 128; CIFAR-10 1024, 512, 256).
      negative_slope: LeakyReLU slope (0.2).
    """

    widths: Sequence[int] = (512, 256, 128)
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., H, W, C] images -> [...] logits (positive = real); any leading axes."""
        x = x.reshape(*x.shape[:-3], -1)
        for k, w in enumerate(self.widths):
            x = nn.leaky_relu(nn.Dense(w, name=f"dense{k}")(x), self.negative_slope)
        return nn.Dense(1, name="logit")(x)[..., 0]


def torch_style_init(params: dict, key: jax.Array) -> dict:
    """Re-draws every layer as PyTorch's defaults would (the report's framework).

    PyTorch initialises ``Linear``/``Conv2d``/``ConvTranspose2d`` weights and
    biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where fan_in is
    in*kh*kw for convolutions and dense layers, and out*kh*kw for transposed
    convolutions (their weight is laid out [in, out, kh, kw]). Flax's
    lecun_normal/zeros default has 3x the variance and zero biases; with the
    report's Adam 5e-3 it leaves the MNIST AE on the mean-image plateau.

    Args:
      params: a Flax params tree whose layers are dicts with "kernel" and
        "bias"; transposed convolutions are named ``dec_up*``.
      key: PRNG key.

    Returns:
      A params tree of the same structure.
    """
    out = {}
    for i, name in enumerate(sorted(params)):
        layer = params[name]
        if not (isinstance(layer, dict) and "kernel" in layer):
            out[name] = torch_style_init(layer, jax.random.fold_in(key, i))
            continue
        k = layer["kernel"]
        receptive = math.prod(k.shape[:-2]) if k.ndim == 4 else 1
        fan_in = receptive * (k.shape[-1] if name.startswith("dec_up") else k.shape[-2])
        bound = fan_in ** -0.5
        kk, kb = jax.random.split(jax.random.fold_in(key, i))
        out[name] = {"kernel": jax.random.uniform(kk, k.shape, k.dtype, -bound, bound),
                     "bias": jax.random.uniform(kb, layer["bias"].shape, k.dtype, -bound, bound)}
    return out


def build_models(cfg: Config) -> tuple[nn.Module, nn.Module | None]:
    """Builds the autoencoder and (for GAN families) the discriminator.

    Args:
      cfg: a validated config.

    Returns:
      ``(ae, disc)``; ``disc`` is None for the ``ae`` and ``rae`` families.
      The AE maps images [B, H, W, C] to images of the same shape (its
      ``logits`` method to the logits).
    """
    m = cfg.model
    impl = m.decoder_impl
    if impl == "auto":  # the form measured faster on CPU (see config.ModelConfig)
        impl = "transpose" if cfg.data.dataset == "mnist" else "subpixel"
    if cfg.data.dataset == "mnist":
        ae: nn.Module = MnistAE(conv_widths=tuple(m.conv_widths), dense_widths=tuple(m.dense_widths),
                                latent_dim=m.latent_dim, decoder_impl=impl)
    else:
        ae = Cifar10AE(conv_widths=tuple(m.conv_widths), decoder_impl=impl)
    disc = DenseDiscriminator(widths=tuple(m.disc_widths)) if cfg.is_gan else None
    return ae, disc
