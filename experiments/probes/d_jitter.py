"""How far does one Adam update move a GAN run's discriminator, against how much its verdict
varies from image to image?

A D that cannot tell the fakes from the reals (AUC ~0.5, ``d_separation.py``) still has a
bias: where its logits sit relative to 0, the threshold at which its accuracy is read. If one
of D's updates moves all its logits together by more than they spread over the images, then
its accuracy at logit 0 is all-or-nothing and jumps with every update: every image real, then
every image fake. This script measures both sides of that inequality on a trained run.

It loads a run's newest checkpoint (both networks and D's optimizer state), freezes the AE,
and lets D take ``--updates`` more updates exactly as in its own stage (``steps.d_update``:
real training batches against their reconstructions, D's own Adam state and rate; R1 if
the run has it). After every update it scores a fixed probe set (the first ``--probe``
validation images and every pass's reconstructions of them) and reports, per D Adam
setting asked for (``--d-lr``, ``--d-eps``, ``--d-b1``: every combination; default: the
run's own), for the live D (not a weight average kept under ``gan.d_ema``):

- ``step``: the median over updates of |change of D's mean logit on the probe set|;
- ``spread``: the median over updates of the std of D's logit over the probe reals;
- their ratio: above 1, one update moves D's verdict on every image more than the images
  differ; the accuracy at logit 0 then reads the bias, not the images;
- the fraction of updates after which D's accuracy on every pass's fakes lies in 0.5 ± 0.1
  (the issue's target), and the AUC of the probe reals against the pass-1 fakes at the
  checkpoint and after the updates (D learning against a frozen AE separates it further).

Every setting starts from the same checkpoint and sees the same batches.

    python experiments/probes/d_jitter.py RUN [RUN ...] [--updates 100] [--d-lr 1e-3,1e-4]
        [--d-eps 1e-8,1e-4] [--d-b1 0.9,0.5] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import data
from raegan_jax.models import to_images
from raegan_jax.steps import ae_logits, bind, d_logits, d_update, pass_index, steps_per_epoch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from d_separation import auc, load_gan_run  # noqa: E402  (a script beside this one)


def jitter(workdir: pathlib.Path, d_lrs: list[float | None], updates: int = 100,
           probe: int = 512, seed: int = 0, data_dir: str | None = None,
           d_eps: list[float | None] = (None,), d_b1: list[float | None] = (None,)) -> dict:
    """D's per-update move and its logit spread, from a run's newest checkpoint.

    Args:
      workdir: a GAN run with a checkpoint.
      d_lrs: D's Adam rates to continue with (None: the run's own ``train.d_lr``).
      d_eps, d_b1: D's Adam eps and b1 to continue with (None: the run's own); every
        combination of a rate, an eps and a b1 is measured. The checkpoint's Adam moments
        carry over (their shapes do not depend on these).
      updates: how many D updates to take from the checkpoint.
      probe: how many validation images (and their fakes) to score after each update.
      seed: draws the training batches (the same for every rate).
      data_dir: where the raw data is (default: the run's own lookup).

    Returns:
      ``{key: {"step", "spread", "ratio", "in_band", "auc_start", "auc_end",
      "mean_logit"}}``, ``key`` = ``str(lr)``, then ``" eps=E"`` and ``" b1=B"`` where
      those were asked for
      (``mean_logit``: [updates + 1] D's mean logit on the probe set, from the checkpoint on).

    Raises:
      ValueError: the run is not of a GAN family.
    """
    _, cfg, state0 = load_gan_run(workdir)
    ds = data.load(cfg, data_dir)
    spe = steps_per_epoch(cfg, len(ds.train.images))
    bs = cfg.train.batch_size
    rng = np.random.default_rng(seed)
    batches = [ds.train.images[rng.choice(len(ds.train.images), bs, replace=False)]
               for _ in range(updates)]
    x_probe = jnp.asarray(ds.val.images[:probe], jnp.float32) / 255.0
    out = {}
    for lr, eps, b1 in itertools.product(d_lrs, d_eps, d_b1):
        asked = {k: v for k, v in (("d_lr", lr), ("d_eps", eps), ("d_b1", b1)) if v is not None}
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **asked))
        key = str(run_cfg.train.d_lr) + "".join(
            f" {k.removeprefix('d_')}={v}" for k, v in asked.items() if k != "d_lr")
        b = bind(run_cfg, spe)

        # The AE is frozen: its reconstructions of the probe images are computed once.
        fakes = jax.jit(lambda p: to_images(ae_logits(b, p, x_probe)))(state0.ae_params)

        @jax.jit
        def score(st):
            return d_logits(b, st.d_params, x_probe, fakes)

        @jax.jit
        def update(st, batch):
            images = batch.astype(jnp.float32) / 255.0
            new, _ = d_update(b, st, images, pass_index(b, st, images.shape[0]))
            return new.replace(step=st.step + 1)

        st = state0
        means, spreads, in_band = [], [], []
        for i in range(updates + 1):
            real_l, fake_l = (np.asarray(a, np.float64) for a in score(st))
            if i == 0:
                auc_start = auc(real_l, fake_l[0])
            means.append(float(np.concatenate([real_l, fake_l.ravel()]).mean()))
            spreads.append(float(real_l.std()))
            in_band.append(bool(np.all(np.abs((fake_l <= 0).mean(axis=1) - 0.5) <= 0.1)))
            if i < updates:
                st = update(st, jnp.asarray(batches[i]))
        step = float(np.median(np.abs(np.diff(means))))
        spread = float(np.median(spreads))
        out[key] = {
            "step": step, "spread": spread, "ratio": step / spread,
            "in_band": float(np.mean(in_band[1:])), "auc_start": auc_start,
            "auc_end": auc(real_l, fake_l[0]),
            "mean_logit": means}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdirs", nargs="+", type=pathlib.Path)
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--probe", type=int, default=512)
    ap.add_argument("--d-lr", default="", help="comma-separated D rates (default: the run's own)")
    ap.add_argument("--d-eps", default="", help="comma-separated D Adam eps (default: the run's own)")
    ap.add_argument("--d-b1", default="", help="comma-separated D Adam b1 (default: the run's own)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    a = ap.parse_args()
    lrs, eps, b1 = ([float(v) for v in arg.split(",") if v] or [None]
                    for arg in (a.d_lr, a.d_eps, a.d_b1))
    print("| run | D's Adam | one update's move of D's mean logit (median) | spread of D's logit over "
          "the reals (median) | move / spread | updates with every pass's fakes in 0.5 ± 0.1 "
          "| AUC: checkpoint, after the updates |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for wd in a.workdirs:
        res = rows[str(wd)] = jitter(wd, lrs, a.updates, a.probe, data_dir=a.data_dir,
                                     d_eps=eps, d_b1=b1)
        for lr, r in res.items():
            print(f"| {wd} | {lr} | {r['step']:.4f} | {r['spread']:.4f} | {r['ratio']:.2f} | "
                  f"{r['in_band']:.2f} | {r['auc_start']:.2f}, {r['auc_end']:.2f} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
