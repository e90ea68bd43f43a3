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

    python experiments/d_separation.py runs/full_raegan/both_e60/seed0 ... [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np
from scipy.stats import rankdata

from raegan_jax import data
from raegan_jax.checkpoint import load_params
from raegan_jax.config import from_dict
from raegan_jax.models import to_images
from raegan_jax.state import create_train_state
from raegan_jax.steps import ae_logits, bind, d_logits


def d_scores(workdir: pathlib.Path, data_dir: str | None = None,
             batch: int = 512) -> tuple[dict, np.ndarray, np.ndarray]:
    """D's logits on the run's validation images and on every pass's reconstructions.

    Args:
      workdir: a GAN run with a checkpoint.
      data_dir: where the raw data is (default: the run's own lookup).
      batch: images per forward pass.

    Returns:
      ``(run config dict, real logits [N], fake logits [passes, N])``.

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

    out = [scores(state.ae_params, state.d_params, test[i:i + batch])
           for i in range(0, len(test), batch)]
    real = np.concatenate([np.asarray(r, np.float64) for r, _ in out])
    fake = np.concatenate([np.asarray(f, np.float64) for _, f in out], axis=1)
    return cfg_d, real, fake


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
    ap.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    a = ap.parse_args()
    f = lambda v: "/".join(f"{x:.2f}" for x in v)
    print("| run | D acc real / fakes per pass | D's mean P(real): reals / fakes per pass | AUC per pass |")
    print("|---|---|---|---|")
    rows = {}
    for wd in a.workdirs:
        _, real, fake = d_scores(wd, a.data_dir)
        s = rows[str(wd)] = separation(real, fake)
        print(f"| {wd} | {s['d_real_acc']:.2f} / {f(s['d_fake_acc'])} | "
              f"{s['d_real_prob']:.2f} / {f(s['d_fake_prob'])} | {f(s['auc'])} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
