"""Can a GAN run's discriminator tell its fakes from real images, whatever its bias?

D's accuracy on fakes (what the threshold rule and the balance gap read) depends on
where D's decision threshold sits. A D that hardly separates reals from fakes swings,
from one evaluation to the next, between calling nearly every image real and nearly
every image fake as its bias moves with the game. This script loads trained GAN runs
(their newest checkpoint), scores the run's own validation images and every pass's
reconstructions of them with D, and reports per pass:

- D's accuracies at its threshold (logit 0): the run's own ``val/d_real_acc`` and
  ``val/d_fake_acc``;
- D's mean probability that an image is real, on reals and on each pass's fakes;
- the AUC: the probability that D scores a random real image above a random fake of
  that pass (ties count half). 0.5: D cannot tell them apart at any threshold;
  1: some threshold separates them perfectly. It does not move with D's bias.

With ``--blur SIGMA ...`` it also scores the real images blurred (a Gaussian of that
standard deviation in pixels, reflect-padded): if D rejects blurred reals about as
well as it rejects the fakes (AUC of reals against blurred reals near the fakes'),
blur is what D reads. The blurred images' PSNR against the originals is printed
beside them, to set against the fakes'.

    python experiments/d_separation.py runs/full_raegan/both_e60/seed0 ... [--blur 0.5 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import rankdata

from raegan_jax import data
from raegan_jax.checkpoint import load_params
from raegan_jax.config import from_dict
from raegan_jax.models import to_images
from raegan_jax.state import create_train_state
from raegan_jax.steps import ae_logits, bind, d_logits


def blur(images: jax.Array, sigma: float) -> jax.Array:
    """Gaussian blur of [B, H, W, C] images in [0, 1], reflect-padded (no dark borders)."""
    r = max(1, int(np.ceil(3 * sigma)))
    padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    return pix.gaussian_blur(padded, sigma, 2 * r + 1, padding="VALID")


def d_scores(workdir: pathlib.Path, data_dir: str | None = None, batch: int = 512,
             blur_sigmas: tuple[float, ...] = ()) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """D's logits on the run's validation images and on every pass's reconstructions.

    Args:
      workdir: a GAN run with a checkpoint.
      data_dir: where the raw data is (default: the run's own lookup).
      batch: images per forward pass.

      blur_sigmas: also score the real images blurred by each of these.

    Returns:
      ``(run config dict, real logits [N], fake logits [passes, N], blurred)``
      with ``blurred[sigma] = (logits [N], PSNR dB of the blurred reals)``.

    Raises:
      ValueError: the run is not of a GAN family.
    """
    cfg_d, state = load_params(workdir, lambda d: create_train_state(from_dict(d), jax.random.key(0)))
    cfg = from_dict(cfg_d)
    if not cfg.is_gan:
        raise ValueError(f"{workdir}: a {cfg.model.family!r} run has no discriminator")
    test = data.load(cfg, data_dir).test.images
    b = bind(cfg)

    @jax.jit
    def scores(ae_params, d_params, x):
        images = x.astype(np.float32) / 255.0
        return d_logits(b, d_params, images, to_images(ae_logits(b, ae_params, images)))

    @functools.partial(jax.jit, static_argnums=2)  # the kernel's size depends on sigma
    def blurred_scores(d_params, x, sigma):
        images = x.astype(np.float32) / 255.0
        soft = blur(images, sigma)
        return b.disc.apply({"params": d_params}, soft), pix.psnr(soft, images)

    out = [scores(state.ae_params, state.d_params, test[i:i + batch])
           for i in range(0, len(test), batch)]
    real = np.concatenate([np.asarray(r, np.float64) for r, _ in out])
    fake = np.concatenate([np.asarray(f, np.float64) for _, f in out], axis=1)
    blurred = {}
    for sigma in blur_sigmas:
        parts = [blurred_scores(state.d_params, test[i:i + batch], sigma)
                 for i in range(0, len(test), batch)]
        blurred[sigma] = (np.concatenate([np.asarray(l, np.float64) for l, _ in parts]),
                          float(np.concatenate([np.asarray(q) for _, q in parts]).mean()))
    return cfg_d, real, fake, blurred


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """P(real score > fake score) + P(equal) / 2 over all (real, fake) pairs
    (the Mann-Whitney U statistic over n_real * n_fake)."""
    ranks = rankdata(np.concatenate([real, fake]))  # ties get their mean rank
    n_r, n_f = len(real), len(fake)
    return float((ranks[:n_r].sum() - n_r * (n_r + 1) / 2) / (n_r * n_f))


def separation(real: np.ndarray, fake: np.ndarray) -> dict:
    """The measures of the module docstring, from logits: real [N], fake [passes, N]."""
    prob = lambda z: 1.0 / (1.0 + np.exp(-z))
    return {"d_real_acc": float((real > 0).mean()),
            "d_fake_acc": (fake <= 0).mean(axis=1).tolist(),  # the run's own rule (losses.py)
            "d_real_prob": float(prob(real).mean()),
            "d_fake_prob": prob(fake).mean(axis=1).tolist(),
            "auc": [auc(real, f) for f in fake]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdirs", nargs="+", type=pathlib.Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--blur", type=float, nargs="*", default=[], metavar="SIGMA",
                    help="also score the real images blurred by a Gaussian of this std (pixels)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    a = ap.parse_args()
    f = lambda v: "/".join(f"{x:.2f}" for x in v)
    blur_cols = "".join(f" blur σ={sg:g}: PSNR dB, mean P(real), AUC |" for sg in a.blur)
    print("| run | D acc real / fakes per pass | D's mean P(real): reals / fakes per pass | "
          "AUC per pass |" + blur_cols)
    print("|---|---|---|---|" + "---|" * len(a.blur))
    rows = {}
    for wd in a.workdirs:
        _, real, fake, blurred = d_scores(wd, a.data_dir, blur_sigmas=tuple(a.blur))
        s = rows[str(wd)] = separation(real, fake)
        cells = ""
        for sigma, (logits, psnr) in blurred.items():
            bs = separation(real, logits[None])
            s[f"blur_{sigma:g}"] = {"psnr": psnr, "d_prob": bs["d_fake_prob"][0], "auc": bs["auc"][0],
                                    "d_acc": bs["d_fake_acc"][0]}
            cells += f" {psnr:.1f}, {bs['d_fake_prob'][0]:.2f}, {bs['auc'][0]:.2f} |"
        print(f"| {wd} | {s['d_real_acc']:.2f} / {f(s['d_fake_acc'])} | "
              f"{s['d_real_prob']:.2f} / {f(s['d_fake_prob'])} | {f(s['auc'])} |" + cells, flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
