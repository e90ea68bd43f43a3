"""The realism judge's calibration on real images (``raegan_jax/judge.py``).

Trains the judge's fixed recipe on real training images against (a) other real images and
(b) the same images blurred at σ = 0.5, 0.7, 1 px, and scores it on the test images: the
tables of ``experiments/notes/2026-12-07-validation-and-judge.md``.

    python experiments/probes/judge_calibration.py [--dataset cifar10|mnist] [--train N]
        [--data-dir DIR] [--sigmas 0.5,0.7,1]
"""

from __future__ import annotations

import argparse
import time

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import judge
from raegan_jax.realism import quantise
from raegan_jax.data import DataError, find_raw, load
from raegan_jax.configs import get_preset


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 images blurred at ``sigma`` px (7 taps), quantised back to 8 bits."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return np.asarray(quantise(jax.vmap(lambda im: pix.gaussian_blur(im, sigma, 7))(x)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10", choices=("cifar10", "mnist"))
    ap.add_argument("--train", type=int, default=0,
                    help="training images (0: all; the MNIST presets' runs judge on 3,000)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sigmas", default="0.5,0.7,1")
    a = ap.parse_args()
    if find_raw(a.dataset, a.data_dir)[0] is None:
        raise DataError(f"no {a.dataset} files found (pass --data-dir)")
    # The training images (no validation split held out: this calibrates on real images only).
    ds = load(get_preset(f"{a.dataset}_ae", {"data.validation_examples": 0, "data.train_examples": a.train,
                                             "data.test_examples": 0, "data.resample_train": False}),
              a.data_dir)
    train, test = ds.train.images, ds.test.images
    h, ht = len(train) // 2, len(test) // 2
    # Real against real: random halves. Halves in file order need not be alike: MNIST's first
    # 5,000 test images are NIST's cleaner writers, its last 5,000 high-school students'
    # (0.41 in file order, the critics agreeing on the direction).
    rng = np.random.default_rng(0)
    train_h, test_h = train[rng.permutation(len(train))], test[rng.permutation(len(test))]
    print("| sample against the real images | judge AUC (critics) | 95% interval | seconds |")
    print("|---|---|---|---|")
    rows = [("other real images (random halves)",
             lambda: (train_h[:h], train_h[h:2 * h], test_h[:ht], test_h[ht:]))]
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
