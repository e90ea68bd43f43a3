"""PNG figures like the report's: reconstruction grids and loss curves."""

from __future__ import annotations

import itertools
import pathlib
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from raegan_jax.config import Config
from raegan_jax.models import to_images
from raegan_jax.parallel import to_host
from raegan_jax.state import TrainState, eval_params
from raegan_jax.steps import ae_logits, bind
from raegan_jax.workdir import adv_lambda, train_recon_loss


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, path: str | pathlib.Path, title: str = "", suptitle: bool = False) -> pathlib.Path:
    """Titles, lays out, saves and closes a figure."""
    if title and suptitle:
        fig.suptitle(title, fontsize=10)
    elif title:
        fig.axes[0].set_title(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def reconstruction_grid(originals: np.ndarray, passes: np.ndarray, path: str | pathlib.Path,
                        title: str = "") -> pathlib.Path:
    """Saves a grid: first row the originals, then one row per pass.

    Args:
      originals: [N, H, W, C] images in [0, 1].
      passes: [P, N, H, W, C] reconstructions after 1..P passes.
      path: the PNG to write.
      title: figure title.

    Returns:
      The path written.
    """
    plt = _plt()
    rows = np.clip(np.stack([originals, *passes]), 0, 1)  # [R, N, H, W, C]
    r, n, h, w, c = rows.shape
    # One image of all tiles, 2-pixel white gaps: one imshow instead of R x N axes
    # (the figure at the end of every run: ~10x faster to lay out and save).
    gap = 2
    mosaic = np.ones((r * (h + gap) - gap, n * (w + gap) - gap, c), rows.dtype)
    for i, j in itertools.product(range(r), range(n)):
        mosaic[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rows[i, j]
    fig, ax = plt.subplots(figsize=(1.2 * n, 1.3 * r))
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray" if c == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (h + gap) + h / 2 for i in range(r)],
                  ["original", *(f"pass {i}" for i in range(1, r))], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return _finish(fig, path, title, suptitle=True)


def loss_curves(history: Sequence[dict], path: str | pathlib.Path, title: str = "",
                val_split: str = "validation") -> pathlib.Path:
    """Saves train/validation reconstruction loss per pass over epochs (log y).

    Args:
      history: per-epoch records with ``epoch``, ``train/recon_loss`` (or
        ``train/recon_sweep/recon_loss``) and ``val/recon_loss`` (lists, one
        value per pass; AE-stage epochs train pass 1 alone).
      path: the PNG to write.
      title: figure title.
      val_split: which split ``val/…`` is (``"validation"``, or ``"test"`` where it stands in).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    # An AE stage (train.ae_stage_epochs) trains pass 1 alone: its records have one pass.
    n_pass = max((len(train_recon_loss(h)) for h in history), default=0)
    for j in range(n_pass):
        train = [(h["epoch"], train_recon_loss(h)[j]) for h in history
                 if len(train_recon_loss(h)) > j]
        ax.plot(*zip(*train), "-", label=f"train, pass {j + 1}")
        val = [(h["epoch"], h["val/recon_loss"][j]) for h in history if "val/recon_loss" in h]
        if val:
            ax.plot(*zip(*val), "--", label=f"{val_split}, pass {j + 1}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def fool_rates(history: Sequence[dict], path: str | pathlib.Path, title: str = "",
               val_split: str = "validation") -> pathlib.Path:
    """Saves D's accuracy on real images and on each pass's fakes over epochs.

    The report's goal is that D is fooled half the time at every pass: the
    dotted line at 0.5. Left: on the validation split after each epoch, with
    D's mean probability of "real" on each pass's fakes dashed (where logged).
    Right: during training, never blended across regimes: per sweep for
    ``phases`` (the D sweep, where D learned; the game sweep, where the AE
    learned against it), per step group for step-wise policies (the steps
    where D learned, the steps where the AE did). With the adaptive
    adversarial weight, a third panel: λ per pass over training steps.
    """
    plt = _plt()
    lams = [(h, adv_lambda(h)) for h in history]
    lams = [(h, lam) for h, lam in lams if lam is not None]
    ncols = 3 if lams else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 5.5))
    ax, ax2 = axes[0], axes[1]
    ax2.sharey(ax)
    evald = [h for h in history if "val/d_fake_acc" in h]  # not every epoch need be evaluated
    ev_epochs = [h["epoch"] for h in evald]
    ax.plot(ev_epochs, [h["val/d_real_acc"] for h in evald], "k-", label="real")
    if "val/d_real_prob" in evald[0]:
        ax.plot(ev_epochs, [h["val/d_real_prob"] for h in evald], "k--", lw=1, label="mean P(real), real")
    for j in range(len(evald[0]["val/d_fake_acc"])):
        line, = ax.plot(ev_epochs, [h["val/d_fake_acc"][j] for h in evald], "-",
                        label=f"fakes, pass {j + 1}")
        if "val/d_fake_acc_live" in evald[0]:  # gan.d_ema: the live D's, faint, beside
            ax.plot(ev_epochs, [h["val/d_fake_acc_live"][j] for h in evald], ":", alpha=0.5,
                    color=line.get_color(), label=f"live D: fakes, pass {j + 1}")
        if "val/d_fake_prob" in evald[0]:  # what does not jump with D's bias (older runs lack it)
            ax.plot(ev_epochs, [h["val/d_fake_prob"][j] for h in evald], "--", lw=1,
                    color=line.get_color(), label=f"mean P(real), fakes, pass {j + 1}")
    ax.set_ylabel("discriminator accuracy; dashed: D's mean P(real)")
    ax.set_title(f"{val_split} split, end of epoch" + (" (D's weight average)" if "val/d_fake_acc_live"
                                               in evald[0] else ""), fontsize=9)
    groups = [("d_sweep", "D sweep", "-"), ("game_sweep", "game sweep", "--"),
              ("d_learns", "steps D learned", "-"), ("ae_learns", "steps AE learned", "--")]
    for g, label, ls in groups:
        key = f"train/{g}/d_fake_acc"
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if not pts:
            continue
        for j in range(len(pts[0][1])):
            ax2.plot([e for e, _ in pts], [v[j] for _, v in pts], ls, label=f"{label}: fakes, pass {j + 1}")
    ax2.set_title("training (D's accuracy on fakes, per regime)", fontsize=9)
    for a in (ax, ax2):
        a.axhline(0.5, color="gray", ls=":", label="goal: 0.5")
        a.set_ylim(-0.02, 1.02)
        a.set_xlabel("epoch")
        # Beneath the panel: with 3 passes it lists 8 lines and would cover the curves.
        a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    if lams:  # λ against the step count at each epoch's end
        ends = dict(zip((h["epoch"] for h in history),
                        itertools.accumulate(h["steps"] for h in history)))
        ax3 = axes[2]
        for j in range(len(lams[0][1])):
            ax3.plot([ends[h["epoch"]] for h, _ in lams], [lam[j] for _, lam in lams], "-",
                     label=f"pass {j + 1}")
        ax3.set_yscale("log")
        ax3.set_xlabel("step")
        ax3.set_ylabel("adaptive weight λ (epoch mean over AE steps)")
        ax3.set_title("adaptive adversarial weight", fontsize=9)
        ax3.grid(True, which="both", alpha=0.3)
        ax3.legend(fontsize=7)
    return _finish(fig, path, title, suptitle=True)


def history_figures(history: Sequence[dict], preset: str, out: pathlib.Path, prefix: str = "",
                    val_split: str = "validation") -> None:
    """Saves a run's figures drawn from its per-epoch records alone, titled by ``preset``:
    ``<prefix>loss_curves.png`` and, where D was evaluated, ``<prefix>d_accuracy.png``.

    Args:
      history: the run's per-epoch records (``metrics.jsonl``).
      preset: the run's preset name, for the titles.
      out: the folder to write to.
      prefix: put before each file name (``experiments/figures/`` uses ``<preset>_``).
      val_split: which split the records' ``val/…`` is (``summary.json``'s ``val_split``).
    """
    out = pathlib.Path(out)
    loss_curves(history, out / f"{prefix}loss_curves.png", f"{preset} reconstruction loss", val_split)
    if any("val/d_fake_acc" in h for h in history):
        fool_rates(history, out / f"{prefix}d_accuracy.png", f"{preset}: can the AE fool D at every pass?",
                   val_split)


def balance_frontier(points: dict[str, tuple], path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Saves reconstruction against the balance gap, one point per run (the goal: lower left).

    Args:
      points: run name -> ((gap mean, gap std), (loss mean, loss std)).
      path: the PNG to write.
      title: figure title.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    markers, colors = "os^vD<>px*h", plt.get_cmap("tab20").colors
    for i, (name, ((gap, gap_sd), (rec, rec_sd))) in enumerate(points.items()):
        # 11 markers x 20 colours: no two of up to 220 runs look alike.
        ax.errorbar(gap, rec, xerr=gap_sd, yerr=rec_sd, fmt=markers[i % len(markers)],
                    color=colors[i % len(colors)], capsize=3, label=name)
    ax.set_yscale("log")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("balance gap: max over passes |D's accuracy on fakes - 0.5| (last 3 epochs)")
    ax.set_ylabel("validation reconstruction loss, mean over passes (last 3 epochs)")
    ax.set_xlim(-0.02, 0.52)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path, title)


def diagnostics(histories: dict[str, Sequence[dict]], path: str | pathlib.Path,
                title: str = "") -> pathlib.Path:
    """Saves the plateau instruments (``train.diagnostics``) over epochs, one line per run.

    Panels: the training reconstruction loss (pass 1), the output's spread
    across the batch (~0 on the mean-image plateau), the largest dead-ReLU
    fraction of any encoder layer, and the smallest encoder-layer gradient
    norm (0 once the encoder is dead).

    Args:
      histories: ``{label: per-epoch records}`` of runs trained with
        ``train.diagnostics=true``.
      path: the PNG to write.
      title: figure title.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    panels = [("train recon loss, pass 1", lambda h, _: train_recon_loss(h)[0]),
              ("output std across the batch", lambda h, _: h["train/diag/out_batch_std"]),
              ("max dead fraction, encoder layers",
               lambda h, enc: max(h[f"train/diag/dead_frac/{k}"] for k in enc)),
              ("min grad norm, encoder layers",
               lambda h, enc: min(h[f"train/diag/grad_norm/{k}"] for k in enc))]
    for label, hist in histories.items():
        hist = [h for h in hist if "train/diag/out_batch_std" in h]
        if not hist:
            continue
        enc = [k.split("/")[-1] for k in hist[0] if k.startswith("train/diag/dead_frac/enc")]
        epochs = [h["epoch"] for h in hist]
        for ax, (name, fn) in zip(axes, panels):
            ax.plot(epochs, [fn(h, enc) for h in hist], label=label)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("epoch")
    axes[3].set_yscale("symlog", linthresh=1e-4)
    axes[0].legend(fontsize=7)
    return _finish(fig, path, title, suptitle=True)


def per_pass(ev: dict, path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """``raegan eval``'s figure: each metric of ``ev`` (``eval.json``) against the pass,
    the passes the run trained left of the dotted line."""
    plt = _plt()
    keys = [k for k in ("recon_loss", "psnr", "ssim", "hf_ratio", "judge_auc", "d_fake_prob")
            if k in ev]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    passes = np.arange(1, ev["passes"] + 1)
    for ax, k in zip(np.atleast_1d(axes), keys):
        ax.plot(passes, ev[k], "o-", label="the judge" if k == "judge_auc" else None)
        if k == "d_fake_prob":
            ax.axhline(ev["d_real_prob"], color="gray", lw=1, label="on the reals")
            ax.legend(fontsize=7)
        if k == "judge_auc":  # its 95% interval, the game D's AUC beside, chance
            lo, hi = np.asarray(ev["judge_auc_interval"]).T
            ax.fill_between(passes, lo, hi, alpha=0.3)
            if "game_d_auc" in ev:
                ax.plot(passes, ev["game_d_auc"], "s--", label="the game's D")
            ax.axhline(0.5, color="gray", ls=":", lw=1, label="chance")
            ax.legend(fontsize=7)
        ax.axvline(ev["trained_passes"] + 0.5, color="k", ls=":", lw=1)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("pass")
        ax.set_title(k, fontsize=9)
    return _finish(fig, path, title, suptitle=True)


def spectra(spectrum: dict, path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """The radially averaged power spectrum of the reals and of each pass's reconstructions
    (``eval.json``'s ``spectrum``), log-log, a quarter of the sampling rate dotted."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(spectrum["frequency"], spectrum["real"], "k-", lw=2, label="real images")
    for j, power in enumerate(spectrum["passes"]):
        ax.loglog(spectrum["frequency"], power, "-", label=f"pass {j + 1}")
    ax.axvline(0.25, color="gray", ls=":", lw=1)
    ticks = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("spatial frequency (cycles per pixel)")
    ax.set_ylabel("power (radial mean)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, path, title)


def perception_distortion(points: dict[str, list[tuple[float, float]]], path: str | pathlib.Path,
                          title: str = "") -> pathlib.Path:
    """The perception–distortion plane (Blau & Michaeli, 2018): PSNR (distortion, better to
    the right) against the judge's AUC (perception, better down to 0.5), one line of points
    per run name, its passes in order, pass 1 marked.

    Args:
      points: name -> [(PSNR dB, judge AUC) per pass].
      path: the PNG to write.
      title: figure title.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, pts in points.items():
        x, y = zip(*pts)
        line, = ax.plot(x, y, "o-", ms=4, label=name)
        ax.plot(x[0], y[0], "o", ms=9, mfc="none", color=line.get_color())
        for j, (px, py) in enumerate(pts):
            ax.annotate(str(j + 1), (px, py), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="chance: indistinguishable")
    ax.set_xlabel("PSNR dB (distortion: better to the right)")
    ax.set_ylabel("judge's AUC (perception: better down to 0.5)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, path, title)


def run_figures(cfg: Config, state: TrainState, ds, history: list[dict], workdir: pathlib.Path) -> None:
    """The figures a run draws at its end: reconstructions of the first test images at
    every pass (``state``'s evaluated weights) and, from its records, the loss curves and
    D's accuracies (:func:`history_figures`)."""
    n = min(cfg.train.num_figure_images, len(ds.test.images))
    x = jnp.asarray(ds.test.images[:n], jnp.float32) / 255.0
    b = bind(cfg)
    params = to_host(eval_params(state))
    outs = np.asarray(to_images(ae_logits(b, params, x)))
    passes = "pass 1" if cfg.model.passes == 1 else f"passes 1..{cfg.model.passes}"
    title = f"{cfg.preset}: test images (top), reconstructions after {passes}"
    reconstruction_grid(np.asarray(x), outs, workdir / "reconstructions.png", title)
    if history:
        history_figures(history, cfg.preset, workdir, val_split=ds.val_split)
        if cfg.train.diagnostics:
            diagnostics({cfg.preset: history}, workdir / "diagnostics.png",
                                f"{cfg.preset}: plateau instruments")
