"""Evaluates a trained run after the fact (``raegan eval``): every metric at passes 1..N.

The run's checkpoint is read back with :func:`raegan_jax.runs.load_run` and evaluated on its
test images with the loop's own evaluation (:class:`~raegan_jax.programs.Evaluator`: the
weights the run evaluates, e.g. its weight average), at as many passes as asked: beyond the
passes it trained, the AE is simply applied again (a plain AE's run is evaluated as the
recursive family, an AE-GAN's as the RAE-GAN, with the same networks). It writes
``eval.json`` and figures into ``<workdir>/eval_passes<N>/``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from raegan_jax import data as data_lib
from raegan_jax import figures
from raegan_jax.config import Config, ConfigError, apply_overrides
from raegan_jax.parallel import make_mesh, put_replicated, to_host
from raegan_jax.programs import Evaluator
from raegan_jax.runs import load_run
from raegan_jax.workdir import hf_ratio


_RECURSIVE = {"ae": "rae", "aegan": "raegan"}  # the same networks, applied recursively


def at_passes(cfg: Config, passes: int) -> Config:
    """``cfg`` evaluated at ``passes`` passes: the recursive family of the same networks."""
    if passes < 1:
        raise ConfigError(f"--passes must be >= 1, got {passes}")
    family = cfg.model.family
    if passes > 1:
        family = _RECURSIVE.get(family, family)
    return apply_overrides(cfg, {"model.family": family, "model.passes": passes})


def evaluate_run(path: str | pathlib.Path, passes: int | None = None,
                 data_dir: str | None = None) -> dict:
    """Evaluates the newest checkpoint of the run at ``path`` at passes 1..``passes``.

    Args:
      path: the run's workdir (or one of its checkpoint folders).
      passes: how many passes (default: the passes it trained).
      data_dir: where the raw data lives (as ``raegan train --data-dir``).

    Returns:
      What ``eval.json`` holds: the run, its epoch, the split, and per pass
      ``recon_loss``, ``psnr``, ``ssim``, ``hf_ratio`` (:mod:`raegan_jax.realism`), and
      D's ``d_real_acc``, ``d_fake_acc``, ``d_real_prob``, ``d_fake_prob`` for GAN families.

    Raises:
      CheckpointError: no readable checkpoint at ``path``.
      ConfigError: ``passes`` < 1.
    """
    run = load_run(path, what="raegan eval")
    cfg = at_passes(run.config, passes or run.config.model.passes)
    ds = data_lib.load(cfg, data_dir)
    mesh = make_mesh(batch_size=cfg.train.batch_size)
    state = put_replicated(run.state, mesh)
    metrics = to_host(Evaluator(cfg, mesh, ds.test.images)(state))
    metrics["hf_ratio"] = hf_ratio(metrics)
    out = {"run": str(run.workdir), "checkpoint": str(run.checkpoint), "epoch": run.epoch,
           "preset": cfg.preset, "trained_passes": run.config.model.passes,
           "passes": cfg.model.passes, "split": "test", "examples": len(ds.test.images),
           **{k: np.asarray(v, np.float64).tolist()  # per pass: a list; D on reals: a float
              for k, v in metrics.items() if not k.endswith("_live")}}
    folder = run.workdir / f"eval_passes{cfg.model.passes}"
    folder.mkdir(exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(out, indent=1))
    figures.run_figures(cfg, state, ds, [], folder)
    figures.per_pass(out, folder / "per_pass.png",
                     f"{cfg.preset}: test split, trained with {out['trained_passes']} pass(es)")
    return out

