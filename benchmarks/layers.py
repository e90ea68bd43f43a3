"""Per-layer forward and forward+backward times, JAX (XLA:CPU) vs PyTorch, CIFAR-10 AE at batch 128.

Usage: python benchmarks/layers.py [--batch 128] [--repeats 15]
Prints one row per layer: ms forward and ms grad (w.r.t. input and weights) for each framework.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import flax.linen as nn
from raegan_jax.models import SubpixelConvTranspose


def t_jax(f, *a, n):
    jax.block_until_ready(f(*a))
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(f(*a))
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def t_torch(f, n):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    B, n = a.batch, a.repeats
    # (name, jax module, torch module, input HWC)
    layers = [
        ("conv3x3 3->8 @32", nn.Conv(8, (3, 3), padding=1), torch.nn.Conv2d(3, 8, 3, padding=1), (32, 32, 3)),
        ("conv4x4/s2 8->16 @32", nn.Conv(16, (4, 4), (2, 2), padding=1), torch.nn.Conv2d(8, 16, 4, 2, 1), (32, 32, 8)),
        ("conv3x3 16->16 @16", nn.Conv(16, (3, 3), padding=1), torch.nn.Conv2d(16, 16, 3, padding=1), (16, 16, 16)),
        ("conv4x4/s2 16->32 @16", nn.Conv(32, (4, 4), (2, 2), padding=1), torch.nn.Conv2d(16, 32, 4, 2, 1), (16, 16, 16)),
        ("conv3x3 32->32 @8", nn.Conv(32, (3, 3), padding=1), torch.nn.Conv2d(32, 32, 3, padding=1), (8, 8, 32)),
        ("conv4x4/s2 32->64 @8", nn.Conv(64, (4, 4), (2, 2), padding=1), torch.nn.Conv2d(32, 64, 4, 2, 1), (8, 8, 32)),
        ("conv3x3 64->64 @4", nn.Conv(64, (3, 3), padding=1), torch.nn.Conv2d(64, 64, 3, padding=1), (4, 4, 64)),
        ("convT4x4/s2 64->32 @4", nn.ConvTranspose(32, (4, 4), (2, 2), padding=((2, 2), (2, 2))),
         torch.nn.ConvTranspose2d(64, 32, 4, 2, 1), (4, 4, 64)),
        ("subpixel 64->32 @4", SubpixelConvTranspose(32), None, (4, 4, 64)),
        ("convT4x4/s2 32->16 @8", nn.ConvTranspose(16, (4, 4), (2, 2), padding=((2, 2), (2, 2))),
         torch.nn.ConvTranspose2d(32, 16, 4, 2, 1), (8, 8, 32)),
        ("subpixel 32->16 @8", SubpixelConvTranspose(16), None, (8, 8, 32)),
        ("convT4x4/s2 16->8 @16", nn.ConvTranspose(8, (4, 4), (2, 2), padding=((2, 2), (2, 2))),
         torch.nn.ConvTranspose2d(16, 8, 4, 2, 1), (16, 16, 16)),
        ("subpixel 16->8 @16", SubpixelConvTranspose(8), None, (16, 16, 16)),
        ("conv3x3 8->3 @32", nn.Conv(3, (3, 3), padding=1), torch.nn.Conv2d(8, 3, 3, padding=1), (32, 32, 8)),
    ]
    print(f"{'layer':26s} {'jax fwd':>8s} {'torch fwd':>9s} {'jax grad':>9s} {'torch grad':>10s} {'grad ratio':>10s}")
    tot = np.zeros(4)
    for name, jm, tm, hwc in layers:
        x = jax.random.normal(jax.random.key(0), (B, *hwc))
        params = jm.init(jax.random.key(1), x)
        fwd = jax.jit(lambda p, x: jm.apply(p, x))
        grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jm.apply(p, x) ** 2), argnums=(0, 1)))
        jf, jg = t_jax(fwd, params, x, n=n), t_jax(grad, params, x, n=n)
        if tm is None:
            print(f"{name:26s} {jf:8.2f} {'':9s} {jg:9.2f}")
            continue
        xt = torch.randn(B, hwc[2], hwc[0], hwc[1], requires_grad=True)

        def tf():
            with torch.no_grad():
                tm(xt)

        def tg():
            tm.zero_grad(set_to_none=True)
            xt.grad = None
            (tm(xt) ** 2).sum().backward()
        pf, pg = t_torch(tf, n), t_torch(tg, n)
        tot += [jf, pf, jg, pg]
        print(f"{name:26s} {jf:8.2f} {pf:9.2f} {jg:9.2f} {pg:10.2f} {jg / pg:10.2f}")
    print(f"{'total (transpose form)':26s} {tot[0]:8.2f} {tot[1]:9.2f} {tot[2]:9.2f} {tot[3]:10.2f} {tot[2] / tot[3]:10.2f}")


if __name__ == "__main__":
    main()
