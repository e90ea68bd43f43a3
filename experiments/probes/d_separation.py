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

With ``--train`` it also scores the run's training images (and their fakes) and
reports D's accuracies there and the AUC of the training reals against the validation
reals: 0.5 when D scores both alike, above 0.5 when D has learnt the training images
themselves (a D that calls unseen real images fake has memorised its reals).

With ``--cues`` it also asks what D reads: it scores altered real images (edits that
keep them real in content) and hybrids of the reals and the pass-1 fakes, and reports
each one's PSNR against the originals and its AUC against the reals. A cue D reads
gets an AUC near the fakes'; one it ignores, 0.5. See :func:`cue_images`.

    python experiments/probes/d_separation.py runs/full_raegan/both_e60/seed0 ... [--cues] [--train] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import data, judge
from raegan_jax.config import Config
from raegan_jax.models import to_images
from raegan_jax.runs import load_run
from raegan_jax.state import TrainState, eval_d_params, eval_params
from raegan_jax.steps import ae_logits, bind, d_logits


def blur(images: jax.Array, sigma: float) -> jax.Array:
    """Gaussian blur of [B, H, W, C] images in [0, 1], reflect-padded (no dark borders)."""
    r = max(1, int(np.ceil(3 * sigma)))
    padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    return pix.gaussian_blur(padded, sigma, 2 * r + 1, padding="VALID")


def cue_images(x: jax.Array, fake: jax.Array) -> dict[str, jax.Array]:
    """Probes of what D reads: real images [B, H, W, C] altered, or mixed with their fakes.

    ``blur σ=s``: Gaussian blur (the AE's outputs are blurry); ``contrast ×c``: each
    image's deviations from its mean colour scaled by c; ``noise 0.05``: Gaussian
    pixel noise; ``fake coarse + real fine``: the fake's low-pass (blur σ=1) plus the
    real image's detail above it, and ``real coarse + fake fine`` the reverse;
    ``fake mean colour``: the real image shifted to its fake's mean colour. The hybrids
    are not clipped to [0, 1] (clipping would change the split into coarse and fine);
    both hybrids stray alike, so a cue read from one and not the other is not the range.
    """
    low = lambda im: blur(im, 1.0)  # noqa: E731
    mean = lambda im: im.mean(axis=(1, 2), keepdims=True)  # noqa: E731
    noise = 0.05 * jax.random.normal(jax.random.key(0), x.shape)
    return {"blur σ=1": blur(x, 1.0), "blur σ=2": blur(x, 2.0), "blur σ=3": blur(x, 3.0),
            "contrast ×0.8": mean(x) + 0.8 * (x - mean(x)),
            "contrast ×0.6": mean(x) + 0.6 * (x - mean(x)),
            "noise 0.05": jnp.clip(x + noise, 0.0, 1.0),
            "fake coarse + real fine": low(fake) + x - low(x),
            "real coarse + fake fine": low(x) + fake - low(fake),
            "fake mean colour": x - mean(x) + mean(fake)}


def load_gan_run(workdir: pathlib.Path) -> tuple[dict, Config, TrainState]:
    """A GAN run's config (as saved, and parsed) and its newest checkpoint's train state.

    Raises:
      ValueError: the run is not of a GAN family.
    """
    run = load_run(workdir)
    cfg_d, cfg, state = run.config.to_dict(), run.config, run.state
    if not cfg.is_gan:
        raise ValueError(f"{workdir}: a {cfg.model.family!r} run has no discriminator")
    return cfg_d, cfg, state


def d_scores(workdir: pathlib.Path, data_dir: str | None = None, batch: int = 512,
             cues: bool = False, split: str = "val", live: bool = False
             ) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """D's logits on the run's validation images and on every pass's reconstructions.

    Args:
      workdir: a GAN run with a checkpoint.
      data_dir: where the raw data is (default: the run's own lookup).
      batch: images per forward pass.
      cues: also score the probes of :func:`cue_images`.
      split: "val" (the run's validation images, what it evaluated every epoch: its test
        images where it has no validation split), "test" or "train" (its training images).
      live: score with the live D where the run keeps D's weight average (``gan.d_ema``),
        whose scores are the default (the D the run evaluates).

    Returns:
      ``(run config dict, real logits [N], fake logits [passes, N], cues)`` with
      ``cues[name] = (logits [N], PSNR dB of the probe against the real images)``
      (empty unless ``cues``).

    Raises:
      ValueError: the run is not of a GAN family.
    """
    cfg_d, cfg, state = load_gan_run(workdir)
    ds = data.load(cfg, data_dir)
    test = ds.train.images if split == "train" else ds.split(split).images
    b = bind(cfg)

    @jax.jit
    def scores(ae_params, d_params, x):
        images = x.astype(np.float32) / 255.0
        fakes = to_images(ae_logits(b, ae_params, images))
        real_l, fake_l = d_logits(b, d_params, images, fakes)
        probes = cue_images(images, fakes[0]) if cues else {}
        return real_l, fake_l, {k: (b.disc.apply({"params": d_params}, v), pix.psnr(v, images))
                                for k, v in probes.items()}

    # The networks the run evaluates (their weight averages under train.ae_ema / gan.d_ema).
    d_params = state.d_params if live else eval_d_params(state)
    out = [scores(eval_params(state), d_params, test[i:i + batch])
           for i in range(0, len(test), batch)]
    real = np.concatenate([np.asarray(r, np.float64) for r, _, _ in out])
    fake = np.concatenate([np.asarray(f, np.float64) for _, f, _ in out], axis=1)
    probes = {k: (np.concatenate([np.asarray(c[k][0], np.float64) for _, _, c in out]),
                  float(np.concatenate([np.asarray(c[k][1]) for _, _, c in out]).mean()))
              for k in (out[0][2] if out else {})}
    return cfg_d, real, fake, probes


def auc(real: np.ndarray, fake: np.ndarray) -> float:
    """P(real score > fake score) + P(equal) / 2 over all (real, fake) pairs: the judge's
    rank AUC (:func:`raegan_jax.judge.auc`), on D's logits."""
    return float(judge.auc(real, fake))


def separation(real: np.ndarray, fake: np.ndarray) -> dict:
    """The measures of the module docstring, from logits: real [N], fake [passes, N]."""
    prob = lambda z: 1.0 / (1.0 + np.exp(-z))
    return {"d_real_acc": float((real > 0).mean()),
            # How much D's verdict varies from image to image (0: one logit for all).
            "logit_std_real": float(real.std()),
            "d_fake_acc": (fake <= 0).mean(axis=1).tolist(),  # the run's own rule (losses.py)
            "d_real_prob": float(prob(real).mean()),
            "d_fake_prob": prob(fake).mean(axis=1).tolist(),
            "auc": [auc(real, f) for f in fake]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdirs", nargs="+", type=pathlib.Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cues", action="store_true",
                    help="also score altered reals and real/fake hybrids: what does D read?")
    ap.add_argument("--train", action="store_true",
                    help="also score the training images: has D learnt its reals?")
    ap.add_argument("--live", action="store_true",
                    help="score with the live D of a run that keeps D's weight average (gan.d_ema)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    a = ap.parse_args()
    f = lambda v: "/".join(f"{x:.2f}" for x in v)
    print("| run | D acc real / fakes per pass | D's mean P(real): reals / fakes per pass | AUC per pass "
          "| std of D's logit on reals |")
    print("|---|---|---|---|---|")
    rows, cue_lines, train_lines = {}, [], []
    for wd in a.workdirs:
        _, real, fake, probes = d_scores(wd, a.data_dir, cues=a.cues, live=a.live)
        s = rows[str(wd)] = separation(real, fake)
        print(f"| {wd} | {s['d_real_acc']:.2f} / {f(s['d_fake_acc'])} | "
              f"{s['d_real_prob']:.2f} / {f(s['d_fake_prob'])} | {f(s['auc'])} | "
              f"{s['logit_std_real']:.3f} |", flush=True)
        if a.train:
            _, real_tr, fake_tr, _ = d_scores(wd, a.data_dir, split="train", live=a.live)
            s["train"] = separation(real_tr, fake_tr)
            s["train"]["auc_train_vs_val_reals"] = auc(real_tr, real)
            train_lines.append(f"| {wd} | {s['train']['d_real_acc']:.2f} / "
                               f"{f(s['train']['d_fake_acc'])} | {f(s['train']['auc'])} | "
                               f"{s['train']['auc_train_vs_val_reals']:.2f} |")
        if probes:
            s["cues"] = {k: {"psnr": q, "auc": auc(real, logits)} for k, (logits, q) in probes.items()}
            cue_lines.append(f"| {wd} | {s['auc'][0]:.2f} | " + " | ".join(
                f"{c['auc']:.2f} ({c['psnr']:.1f})" for c in s["cues"].values()) + " |")
    if train_lines:
        print("\nOn the training images; the last column: AUC of the training reals against "
              "the validation reals\n")
        print("| run | D acc real / fakes per pass | AUC per pass | train vs val reals |")
        print("|---|---|---|---|")
        print("\n".join(train_lines))
    if cue_lines:
        names = list(next(iter(rows.values()))["cues"])
        print("\nAUC against the reals (PSNR dB against the reals):\n")
        print("| run | pass-1 fakes | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        print("\n".join(cue_lines))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
