"""The eval step with dm-pix's own SSIM window against ``losses.ssim`` (the same window as
matrix products), interleaved in one process, per preset.

Usage: python benchmarks/eval_ssim.py [--presets cifar10_ae,cifar10_rae] [--repeats 15] [--out FILE.md]
Prints one markdown row per preset: the eval step's median ms with each, and the ratio.
"""

import argparse
import pathlib
import statistics
import time

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

import raegan_jax as rj
from raegan_jax import losses
from raegan_jax.data import IMAGE_SHAPES
from raegan_jax.programs import make_eval_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="mnist_ae,cifar10_ae,cifar10_rae,cifar10_raegan")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default="")
    args = p.parse_args()
    fast = losses.ssim
    lines = ["| preset | passes | batch | eval step, dm-pix's window (ms) | matrix products (ms) | speed-up |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for preset in args.presets.split(","):
        cfg = rj.get_preset(preset)
        state = rj.create_train_state(cfg, jax.random.key(0))
        shape = (cfg.train.batch_size, *IMAGE_SHAPES[cfg.data.dataset])
        x = jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, np.uint8))
        steps = {}
        try:  # each program is traced (and reads losses.ssim) at its first call
            for name, ssim in (("dm_pix", lambda a, b: pix.ssim(a, b)), ("matmul", fast)):
                losses.ssim = ssim
                steps[name] = make_eval_step(cfg)
                jax.block_until_ready(steps[name](state, x))
        finally:
            losses.ssim = fast
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for k, step in steps.items():
                t = time.perf_counter()
                jax.block_until_ready(step(state, x))
                times[k].append(time.perf_counter() - t)
        a, b = (1e3 * statistics.median(times[k]) for k in ("dm_pix", "matmul"))
        lines.append(f"| {preset} | {cfg.model.passes} | {cfg.train.batch_size} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
        print(lines[-1], flush=True)
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
