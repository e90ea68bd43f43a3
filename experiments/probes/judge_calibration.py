"""The realism judge's calibration on real images (``raegan_jax/judge.py``).

Trains the judge's fixed recipe on real CIFAR-10 training images against (a) other real
images and (b) the same images blurred at σ = 0.5, 0.7, 1 px, and scores it on the test
images: the table of ``experiments/notes/2026-12-07-validation-and-judge.md``.

    python experiments/probes/judge_calibration.py [--data-dir DIR] [--sigmas 0.5,0.7,1]
"""

from __future__ import annotations

import argparse
import time

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import judge
from raegan_jax.data import DataError, find_raw, load
from raegan_jax.configs import get_preset


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 images blurred at ``sigma`` px (7 taps), quantised back to 8 bits."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return np.asarray(judge.quantise(jax.vmap(lambda im: pix.gaussian_blur(im, sigma, 7))(x)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sigmas", default="0.5,0.7,1")
    a = ap.parse_args()
    if find_raw("cifar10", a.data_dir)[0] is None:
        raise DataError("no CIFAR-10 files found (pass --data-dir)")
    # Every training image (no validation split held out: this calibrates on real images only).
    ds = load(get_preset("cifar10_ae", {"data.validation_examples": 0, "data.train_examples": 0,
                                        "data.test_examples": 0}), a.data_dir)
    train, test = ds.train.images, ds.test.images
    h, ht = len(train) // 2, len(test) // 2
    print("| sample against the real images | judge AUC (critics) | 95% interval | seconds |")
    print("|---|---|---|---|")
    rows = [("other real images", lambda: (train[:h], train[h:2 * h], test[:ht], test[ht:]))]
    rows += [(f"the reals blurred at σ = {s} px", lambda s=s: (train, blur(train, s), test, blur(test, s)))
             for s in (float(v) for v in a.sigmas.split(","))]
    for name, samples in rows:
        t0 = time.perf_counter()
        v = judge.two_sample_test(*samples())
        seeds = " / ".join(f"{x:.3f}" for x in v["auc_seeds"])
        print(f"| {name} | {v['auc']:.4f} ({seeds}) | [{v['auc_interval'][0]:.3f}, "
              f"{v['auc_interval'][1]:.3f}] | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
