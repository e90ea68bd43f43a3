"""Builds the report-rerun table of experiments/RESULTS.md from finished runs.

Usage: python experiments/make_results.py [RUNS_DIR]   (default ./runs)
       python experiments/make_results.py judge [RUNS_DIR]   (the judged runs' table and figure)

``RUNS_DIR/<preset>`` is the run of ``bash experiments/run_report.sh RUNS_DIR`` (seed 0);
``RUNS_DIR/<preset>_seed<S>`` are further seeds (``SEED=S``, same script, other workdir);
with ``SEEDS=0,1,2`` the script trains them in one run, ``RUNS_DIR/<preset>/seed<S>``.
Prints one markdown row per preset (mean ± std over the seeds found) and puts the seed-0
run's figures in experiments/figures/: its reconstructions copied (they need the trained
model), its loss curves and D's accuracies redrawn from its ``metrics.jsonl`` by the
current figure code (so a change of layout reaches runs made before it).

``judge`` tables what ``raegan eval`` wrote for each run (its ``eval_test_passes<N>/`` with
the most passes): per preset and pass, the test loss, PSNR, SSIM, high-frequency ratio, the
judge's AUC and the game D's AUC over the seeds, and draws the perception–distortion plane
(``experiments/figures/perception_distortion.png``: PSNR against the judge's AUC, one point
per CIFAR-10 preset and pass).
"""

import json
import pathlib
import shutil
import sys

import numpy as np

from raegan_jax import figures
from raegan_jax.workdir import read_records

REPORT = {  # the report's numbers (SPEC §5): (epochs, train/test asked, headline loss)
    "mnist_ae": (100, "3000/600", "0.014 train, 0.0149 val"),
    "cifar10_ae": (200, "10000/2000", "0.553"),
    "cifar10_rae": (150, "10000/2000", "0.559 (pass 1)"),
    "mnist_aegan": (200, "7000/2000", "0.509 (unreliable); D loss 0.02"),
    "cifar10_aegan": (20, "20000/2000", "0.567 (text) / 0.593 (table)"),
    "cifar10_raegan": (20, "20000/2000", "— (the proposed model)"),
}


def _pm(values, fmt="{:.4f}") -> str:
    v = np.asarray(values, np.float64)
    if v.ndim == 1:
        v = v[:, None]
    mean, std = v.mean(0), v.std(0, ddof=1) if len(v) > 1 else v.std(0)  # sample std
    if len(values) == 1:
        return ", ".join(fmt.format(m) for m in mean)
    return ", ".join(f"{fmt.format(m)} ± {fmt.format(s)}" for m, s in zip(mean, std))


def main(runs: pathlib.Path, figs: pathlib.Path | None = None) -> None:
    """Prints the table of the runs under ``runs``; figures go to ``figs`` (experiments/figures/)."""
    figs = figs or pathlib.Path(__file__).parent / "figures"
    figs.mkdir(exist_ok=True)
    # The final table is the test split's (read once, at each run's end); runs from before the
    # validation split (no test_… in summary.json) evaluated only the test split, as val_….
    print("| preset | seeds | data (train/val/test) | epochs | test loss per pass | PSNR dB per pass | "
          "SSIM per pass | D acc real / fakes per pass (val) | report | wall (seed 0) | img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset, (rep_epochs, rep_data, rep_loss) in REPORT.items():
        dirs = preset_runs(runs, preset)
        summ = [json.loads((d / "summary.json").read_text()) for d in dirs if (d / "summary.json").exists()]
        if not summ:
            print(f"| `{preset}` | 0 | – | – / {rep_epochs} | not run | | | | {rep_loss} | | |")
            continue
        s0 = summ[0]
        d = "–"
        if "d_real_acc" in s0:
            d = f"{_pm([s['d_real_acc'] for s in summ], '{:.2f}')} / {_pm([s['d_fake_acc'] for s in summ], '{:.2f}')}"
        train = (f"{s0['train_examples']} pool, resampled" if s0.get("resample_train")
                 else s0["train_examples"])
        t = [{k: s.get(f"test_{k}", s[f"val_{k}"]) for k in ("recon_loss", "psnr", "ssim")} for s in summ]
        print(f"| `{preset}` | {len(summ)} | {train}/{s0.get('validation_examples', 0)}/{s0['test_examples']} "
              f"(report {rep_data}) | {s0['epochs']} / {rep_epochs} | "
              f"{_pm([x['recon_loss'] for x in t])} | {_pm([x['psnr'] for x in t], '{:.2f}')} | "
              f"{_pm([x['ssim'] for x in t], '{:.3f}')} | {d} | {rep_loss} | "
              f"{s0['wall_seconds'] / 60:.1f} min | {np.median([s['images_per_sec'] for s in summ]):.0f} |")
        draw_figures(dirs[0], preset, figs)


def draw_figures(run: pathlib.Path, preset: str, figs: pathlib.Path) -> None:
    """Puts one run's figures in ``figs`` as ``<preset>_<name>.png`` (titles as ``raegan train``'s)."""
    if (run / "reconstructions.png").exists():
        shutil.copy(run / "reconstructions.png", figs / f"{preset}_reconstructions.png")
    history = read_records(run)
    if history:
        summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        figures.history_figures(history, preset, figs, prefix=f"{preset}_",
                                val_split=summ.get("val_split", "test"))


def preset_runs(runs: pathlib.Path, preset: str) -> list[pathlib.Path]:
    """The runs of ``preset`` under ``runs``: ``<preset>`` (seed 0) and ``<preset>_seed<S>``;
    a many-seed run there (``SEEDS=…``) stands for its seeds' folders ``<preset>/seed<S>``."""
    found = []
    for d in [runs / preset] + sorted(runs.glob(f"{preset}_seed*")):
        members = sorted(m for m in d.glob("seed*") if (m / "config.json").exists())
        found += members or ([d] if d.is_dir() else [])
    return found


def evaluations(run: pathlib.Path) -> dict | None:
    """The run's ``raegan eval`` on the test split with the most passes (None if none)."""
    found = [json.loads(p.read_text()) for p in run.glob("eval_test_passes*/eval.json")]
    found = [e for e in found if "judge_auc" in e]
    return max(found, key=lambda e: e["passes"]) if found else None


def judge(runs: pathlib.Path, figs: pathlib.Path | None = None) -> None:
    """Prints the judged runs' table (mean ± sample std over seeds, per pass) and draws the
    perception–distortion plane."""
    figs = figs or pathlib.Path(__file__).parent / "figures"
    figs.mkdir(exist_ok=True)
    print("| preset | seeds | pass | test loss | PSNR dB | SSIM | HF ratio | judge AUC | game D AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    points = {}
    for preset in REPORT:
        evs = [e for e in map(evaluations, preset_runs(runs, preset)) if e]
        if not evs:
            continue
        passes = min(e["passes"] for e in evs)
        for j in range(passes):
            col = lambda k, fmt: _pm([e[k][j] for e in evs], fmt) if all(k in e for e in evs) else "–"  # noqa: E731
            trained = " (trained)" if j < evs[0]["trained_passes"] else ""
            print(f"| `{preset}` | {len(evs)} | {j + 1}{trained} | {col('recon_loss', '{:.4f}')} | "
                  f"{col('psnr', '{:.2f}')} | {col('ssim', '{:.3f}')} | {col('hf_ratio', '{:.3f}')} | "
                  f"{col('judge_auc', '{:.4f}')} | {col('game_d_auc', '{:.3f}')} |")
        if preset.startswith("cifar10"):  # one plane, one dataset's PSNR scale
            points[preset] = [(float(np.mean([e["psnr"][j] for e in evs])),
                               float(np.mean([e["judge_auc"][j] for e in evs]))) for j in range(passes)]
    if points:
        figures.perception_distortion(points, figs / "perception_distortion.png",
                                      "test split: PSNR against the judge's AUC, every pass")


if __name__ == "__main__":
    if sys.argv[1:2] == ["judge"]:
        judge(pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "runs"))
    else:
        main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
