"""How much a run's test loss depends on which test images are drawn.

The report evaluates MNIST on 600 test images without saying which. This script
takes trained runs, computes each test image's reconstruction loss (pass 1) over
the whole test split, and reports the loss on the first N images (what the presets
use), on the N-image blocks of the split, and on random N-image draws.

    python experiments/probes/val_spread.py runs/mnist_ae runs/mnist_ae_seed1 --n 600

Prints a table and, with ``--json PATH``, saves the numbers.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np

from raegan_jax import data, losses
from raegan_jax.config import apply_overrides
from raegan_jax.models import build_models
from raegan_jax.runs import load_run
from raegan_jax.state import eval_params


def per_image_loss(workdir: pathlib.Path, data_dir: str | None = None,
                   batch: int = 1000) -> tuple[dict, np.ndarray]:
    """Pass-1 reconstruction loss of every image of the test split.

    Args:
      workdir: a finished (or checkpointed) run.
      data_dir: where the raw data is (default: the run's own lookup).
      batch: images per forward pass.

    Returns:
      ``(run config dict, float64 [test images] loss per image)``, the loss being
      the run's (MSE on the output or BCE from the logits), averaged over pixels.
    """
    run = load_run(workdir)
    cfg_d, cfg, state = run.config.to_dict(), run.config, run.state
    everything = apply_overrides(cfg, {"data.test_examples": 0, "data.subset": "first"})
    test = data.load(everything, data_dir).test.images
    ae, _ = build_models(cfg)
    # The run's own per-sample loss (losses.recon_loss), from the logits.
    loss_fn = jax.jit(lambda p, x: losses.recon_loss(ae.apply({"params": p}, x, method="logits"),
                                                     x, cfg.train.recon_loss))
    params = eval_params(state)  # what the run evaluated: the weight average under train.ae_ema
    out = [np.asarray(loss_fn(params, np.asarray(test[i:i + batch], np.float32) / 255.0),
                      np.float64) for i in range(0, len(test), batch)]
    return cfg_d, np.concatenate(out)


def spread(loss: np.ndarray, n: int, draws: int, seed: int = 0) -> dict:
    """The loss on the first n images, on each n-image block, and on random draws."""
    blocks = loss[: len(loss) // n * n].reshape(-1, n).mean(axis=1)
    rng = np.random.default_rng(seed)
    rand = np.array([loss[rng.choice(len(loss), n, replace=False)].mean() for _ in range(draws)])
    return {"all": float(loss.mean()), "first_n": float(loss[:n].mean()),
            "blocks": blocks.tolist(), "random_mean": float(rand.mean()),
            "random_std": float(rand.std()), "random_p05": float(np.quantile(rand, 0.05)),
            "random_min": float(rand.min()), "random_max": float(rand.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdirs", nargs="+", type=pathlib.Path)
    ap.add_argument("--n", type=int, default=600, help="test images per draw (the report: 600)")
    ap.add_argument("--draws", type=int, default=2000, help="random draws")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args()
    rows = {}
    print(f"| run | all test images | first {args.n} | {args.n}-image blocks: min / max "
          f"| random {args.n}: mean ± std | 5% quantile |")
    print("|---|---|---|---|---|---|")
    for wd in args.workdirs:
        _, loss = per_image_loss(wd, args.data_dir)
        s = spread(loss, args.n, args.draws)
        rows[str(wd)] = s
        print(f"| {wd} | {s['all']:.5f} | {s['first_n']:.5f} | {min(s['blocks']):.5f} / "
              f"{max(s['blocks']):.5f} | {s['random_mean']:.5f} ± {s['random_std']:.5f} | "
              f"{s['random_p05']:.5f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
