"""Evaluates a trained run after the fact (``raegan eval``): every metric at passes 1..N.

The run's checkpoint is read back with :func:`raegan_jax.runs.load_run` and evaluated on one
split (``test``, or ``val``: the run's validation split) with the loop's own evaluation
(:class:`~raegan_jax.programs.Evaluator`: the weights the run evaluates, e.g. its weight
average), at as many passes as asked: beyond the passes it trained, the AE is simply applied
again (a plain AE's run is evaluated as the recursive family, an AE-GAN's as the RAE-GAN,
with the same networks). Per pass, beside the loss, PSNR and SSIM, the realism measures that
do not ask the game's D: the judge's AUC (:mod:`raegan_jax.judge`), the high-frequency
energy ratio and the radially averaged power spectrum (:mod:`raegan_jax.realism`); for the
GAN families also the game D's own AUC on the same images. It writes ``eval.json`` and
figures into ``<workdir>/eval_<split>_passes<N>/``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable

import numpy as np

from raegan_jax import data as data_lib
from raegan_jax import figures, judge
from raegan_jax.config import Config, ConfigError, apply_overrides
from raegan_jax.parallel import make_mesh, put_replicated, to_host
from raegan_jax.programs import Evaluator, game_d_scores, reconstructions
from raegan_jax.realism import hf_ratio, radial_power_spectrum
from raegan_jax.runs import load_run


_RECURSIVE = {"ae": "rae", "aegan": "raegan"}  # the same networks, applied recursively


def at_passes(cfg: Config, passes: int) -> Config:
    """``cfg`` evaluated at ``passes`` passes: the recursive family of the same networks."""
    if passes < 1:
        raise ConfigError(f"--passes must be >= 1, got {passes}")
    family = cfg.model.family
    if passes > 1:
        family = _RECURSIVE.get(family, family)
    return apply_overrides(cfg, {"model.family": family, "model.passes": passes})


def game_d_auc(cfg: Config, state, reals: np.ndarray, fakes: np.ndarray) -> list[float]:
    """The game's own D as a two-sample test: the AUC of its "real" logits, ``reals``
    (uint8 [N, ...]) against each pass's ``fakes`` ([P, N, ...]). 0.5: D tells them apart
    no better than chance."""
    real, *fake = game_d_scores(cfg, state, reals, *fakes)
    return [float(judge.auc(real, f)) for f in fake]


def evaluate_run(path: str | pathlib.Path, passes: int | None = None,
                 data_dir: str | None = None, split: str = "test", realism: bool = True,
                 seed: int = 0, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Evaluates the newest checkpoint of the run at ``path`` at passes 1..``passes``.

    Args:
      path: the run's workdir (or one of its checkpoint folders).
      passes: how many passes (default: the passes it trained).
      data_dir: where the raw data lives (as ``raegan train --data-dir``).
      split: ``"test"``, or ``"val"``: the run's validation split (its test split where
        it has none: ``eval.json``'s ``split`` then says ``test``).
      realism: also run the judge (:mod:`raegan_jax.judge`, one critic training per pass),
        the game D's AUC and the power spectra.
      seed: the judge's seed.
      log: where progress lines go.

    Returns:
      What ``eval.json`` holds: the run, its epoch, the split, and per pass
      ``recon_loss``, ``psnr``, ``ssim``, ``hf_ratio`` (:mod:`raegan_jax.realism`), and
      D's ``d_real_acc``, ``d_fake_acc``, ``d_real_prob``, ``d_fake_prob`` for GAN families;
      with ``realism``, per pass ``judge_auc``, ``judge_auc_interval``,
      ``judge_auc_seeds`` (and ``game_d_auc`` for GAN families), the judge's recipe, and
      ``spectrum`` (frequencies, the reals' and each pass's radially averaged power).

    Raises:
      CheckpointError: no readable checkpoint at ``path``.
      ConfigError: ``passes`` < 1 or an unknown ``split``.
    """
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be 'test' or 'val', got {split!r}")
    run = load_run(path, what="raegan eval")
    cfg = at_passes(run.config, passes or run.config.model.passes)
    ds = data_lib.load(cfg, data_dir)
    images = ds.split(split).images
    split_name = "test" if split == "test" else ds.val_split
    mesh = make_mesh(batch_size=cfg.train.batch_size)
    state = put_replicated(run.state, mesh)
    metrics = to_host(Evaluator(cfg, mesh, images)(state))
    metrics["hf_ratio"] = hf_ratio(metrics)
    out = {"run": str(run.workdir), "checkpoint": str(run.checkpoint), "epoch": run.epoch,
           "preset": cfg.preset, "trained_passes": run.config.model.passes,
           "passes": cfg.model.passes, "split": split_name, "examples": len(images),
           **{k: np.asarray(v, np.float64).tolist()  # per pass: a list; D on reals: a float
              for k, v in metrics.items() if not k.endswith("_live")}}
    if realism:
        out.update(_realism(cfg, run.state, ds.train.images, images, seed, log))
    folder = run.workdir / f"eval_{split_name}_passes{cfg.model.passes}"
    folder.mkdir(exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(out, indent=1))
    figures.run_figures(cfg, state, ds, [], folder)
    title = f"{cfg.preset}: {split_name} split, trained with {out['trained_passes']} pass(es)"
    figures.per_pass(out, folder / "per_pass.png", title)
    if realism:
        figures.spectra(out["spectrum"], folder / "spectrum.png", title)
    return out


def _realism(cfg: Config, state, train_images: np.ndarray, images: np.ndarray, seed: int,
             log: Callable[[str], None]) -> dict:
    """The judge's AUC per pass (trained on ``train_images`` against their reconstructions,
    scored on ``images`` against theirs), the game D's AUC and the power spectra."""
    t0 = time.perf_counter()
    fakes_train, fakes = reconstructions(cfg, state, train_images, images)
    out: dict = {"judge_recipe": dataclasses.asdict(judge.RECIPE),
                 "judge_train_examples": len(train_images),
                 "judge_auc": [], "judge_auc_interval": [], "judge_auc_seeds": []}
    for k in range(cfg.model.passes):
        verdict = judge.two_sample_test(train_images, fakes_train[k], images, fakes[k], seed=seed)
        out["judge_auc"].append(verdict["auc"])
        out["judge_auc_interval"].append(verdict["auc_interval"])
        out["judge_auc_seeds"].append(verdict["auc_seeds"])
        log(f"pass {k + 1}: judge AUC {verdict['auc']:.4f} "
            f"[{verdict['auc_interval'][0]:.4f}, {verdict['auc_interval'][1]:.4f}] "
            f"({time.perf_counter() - t0:.0f} s)")
    if cfg.is_gan:
        out["game_d_auc"] = game_d_auc(cfg, state, images, fakes)
    freq, real_power = radial_power_spectrum(images.astype(np.float32) / 255.0)
    out["spectrum"] = {"frequency": np.asarray(freq).tolist(), "real": np.asarray(real_power).tolist(),
                       "passes": [np.asarray(radial_power_spectrum(f.astype(np.float32) / 255.0)[1]).tolist()
                                  for f in fakes]}
    out["realism_seconds"] = time.perf_counter() - t0
    return out


def eval_table(ev: dict) -> str:
    """``eval.json`` as one markdown table, a row per pass."""
    cols = [("recon_loss", "loss", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
            ("hf_ratio", "HF ratio", "{:.3f}"), ("judge_auc", "judge AUC", "{:.4f}"),
            ("game_d_auc", "game D AUC", "{:.3f}")]
    cols = [c for c in cols if c[0] in ev]
    lines = [f"{ev['preset']} ({ev['split']} split, {ev['examples']} images; trained "
             f"{ev['trained_passes']} pass(es), epoch {ev['epoch']})",
             "| pass | " + " | ".join(c[1] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for j in range(ev["passes"]):
        cells = [fmt.format(ev[k][j]) for k, _, fmt in cols]
        if "judge_auc_interval" in ev:
            lo, hi = ev["judge_auc_interval"][j]
            cells[[c[0] for c in cols].index("judge_auc")] += f" [{lo:.4f}, {hi:.4f}]"
        lines.append(f"| {j + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
