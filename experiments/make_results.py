"""Builds the results table of experiments/RESULTS.md from finished runs.

Usage: python experiments/make_results.py [RUNS_DIR]   (default ./runs)
Prints a markdown table and copies each run's figures to experiments/figures/.
"""

import json
import pathlib
import shutil
import sys

REPORT = {  # the report's numbers (SPEC §5): (epochs, train/test asked, headline loss)
    "mnist_ae": (100, "3000/600", "0.014 (train; val 0.0149)"),
    "cifar10_ae": (200, "10000/2000", "0.553"),
    "cifar10_rae": (150, "10000/2000", "0.559 (pass 1)"),
    "mnist_aegan": (200, "7000/2000", "0.509 (unreliable); D loss 0.02"),
    "cifar10_aegan": (20, "20000/2000", "0.567 (text) / 0.593 (table)"),
    "cifar10_raegan": (20, "20000/2000", "— (the proposed model)"),
}


def main(runs: pathlib.Path) -> None:
    figs = pathlib.Path(__file__).parent / "figures"
    figs.mkdir(exist_ok=True)
    print("| preset | data used (train/test) | epochs (ours / report) | val recon loss, pass 1..P | "
          "final train recon, pass 1 | report | D acc real / fakes per pass (val) | wall | img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, (rep_epochs, rep_data, rep_loss) in REPORT.items():
        s_path = runs / preset / "summary.json"
        if not s_path.exists():
            print(f"| `{preset}` | – | – / {rep_epochs} | not run | | {rep_loss} | | | |")
            continue
        s = json.loads(s_path.read_text())
        recs = [json.loads(l) for l in (runs / preset / "metrics.jsonl").read_text().splitlines()]
        wall = sum(r["epoch_seconds"] + (r.get("compile_seconds") or 0) for r in recs)
        d = (f"{s['d_real_acc']:.2f} / " + ", ".join(f"{v:.2f}" for v in s["d_fake_acc"])) if "d_real_acc" in s else "–"
        print(f"| `{preset}` | {s['train_examples']}/{s['test_examples']} (asked {rep_data}) | "
              f"{s['epochs']} / {rep_epochs} | " + ", ".join(f"{v:.4f}" for v in s["val_recon_loss"]) +
              f" | {s['train_recon_loss'][0]:.4f} | {rep_loss} | {d} | {wall / 60:.1f} min | "
              f"{s['images_per_sec']:.0f} |")
        for name in ("reconstructions.png", "loss_curves.png", "d_accuracy.png"):
            if (runs / preset / name).exists():
                shutil.copy(runs / preset / name, figs / f"{preset}_{name}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
