"""Runs a set of `raegan train` runs over seeds, in parallel, and tabulates them.

    python experiments/sweep.py run SPEC.json --runs DIR [--jobs N] [--only NAME ...] [--seeds N ...] [--set K=V] [--together]
    python experiments/sweep.py table SPEC.json --runs DIR [--json OUT.json]
    python experiments/sweep.py seeds SPEC.json --runs DIR [--last 20]
    python experiments/sweep.py frontier SPEC.json --runs DIR --out FIG.png

SPEC is a JSON list of runs: ``{"name": "rae_lr1e-3", "preset": "cifar10_rae",
"set": {"train.ae_lr": 1e-3, "train.epochs": 20}, "seeds": [0, 1, 2]}``. Each
seed trains in ``DIR/<name>/seed<S>`` (``--set train.seed=S``), its output in
``DIR/<name>/seed<S>.log``. With ``--together`` the seeds of each run that starts from
no other run train in one process, one program (``train.seeds``, ``raegan_jax/seeds.py``):
``DIR/<name>`` holds that run, each seed's folder ``DIR/<name>/seed<S>`` as before, the
output ``DIR/<name>.log``. Rerunning resumes unfinished runs and skips
finished ones (``raegan train`` resumes from its checkpoints). A run may name
``"init_from": "<other name>"``: it starts from that run's final checkpoint of
the same seed, and waits for it. A run may name ``"branch_from": {"name": "<other
name>", "epoch": E}``: it continues that run's whole train state from the end of
its epoch E (``train.init_from_state``), e.g. several games after one AE stage. A run
may name ``"ae_stage_from": "<other name>"``: that run (of the same seed) trained its AE
stage (``train.ae_stage_from``; the source keeps that epoch with ``train.keep_epochs``).

``table`` prints, per run name, the mean ± std over seeds of the final
validation loss of every pass, PSNR/SSIM per pass, D's accuracies (GAN
families), the step at which training left the mean-image plateau, and how
many seeds ended with a pass still on it; for GAN runs also the balance gap
(max over passes of |D's accuracy on the fakes - 0.5|, final and mean over the
last 3 epochs) and the adaptive weight λ per pass. ``frontier`` plots each run's
reconstruction against its balance gap (the report's goal is the lower left).
``seeds`` prints one row per seed, finished or still running: its latest and
last-3-epoch validation numbers and, for GAN runs, D's accuracies on training
batches, D's steps and the stage switches per epoch over the last epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

from raegan_jax import figures
from raegan_jax.losses import balance_gap
from raegan_jax.launch import Job, run_jobs
from raegan_jax.workdir import read_records, train_recon_loss

# A run is on the mean-image plateau while its reconstruction loss stays near
# that of one constant image for every input (measured: CIFAR-10 BCE 0.691,
# MNIST MSE ~0.067); it has left once the loss is below these.
PLATEAU_EXIT = {"bce": 0.67, "mse": 0.05}


def _cmd(entry: dict, seed: int | None, workdir: pathlib.Path, runs: pathlib.Path,
         extra: list[str]) -> list[str]:
    """The ``raegan train`` command of ``entry``'s run of ``seed`` (None: the seeds ``extra``'s
    ``train.seeds`` names, for an entry that starts from no other run)."""
    cmd = [sys.executable, "-m", "raegan_jax.cli", "train", "--preset", entry["preset"],
           "--workdir", str(workdir), "--no-progress",
           *(["--set", f"train.seed={seed}"] if seed is not None else [])]
    for k, v in entry.get("set", {}).items():
        cmd += ["--set", f"{k}={v}"]
    for kv in extra:
        cmd += ["--set", kv]
    if entry.get("init_from"):
        cmd += ["--set", f"train.init_from={runs / entry['init_from'] / f'seed{seed}'}"]
    if entry.get("ae_stage_from"):
        cmd += ["--set", f"train.ae_stage_from={runs / entry['ae_stage_from'] / f'seed{seed}'}"]
    if entry.get("branch_from"):
        src = runs / entry["branch_from"]["name"] / f"seed{seed}"
        cmd += ["--set", f"train.init_from={branch_checkpoint(src, entry['branch_from']['epoch'])}",
                "--set", "train.init_from_state=true"]
    return cmd


def _source(entry: dict) -> str | None:
    """The name of the run ``entry`` starts from (init_from, ae_stage_from or branch_from), if any."""
    return (entry.get("init_from") or entry.get("ae_stage_from")
            or (entry.get("branch_from") or {}).get("name"))


def branch_checkpoint(src: pathlib.Path, epoch: int) -> pathlib.Path:
    """The checkpoint folder of run ``src`` at the end of its epoch ``epoch`` (its
    step count read from ``metrics.jsonl``).

    Raises:
      FileNotFoundError: naming the run and epoch, if that checkpoint is not there.
    """
    step = sum(r["steps"] for r in read_records(src) if r["epoch"] <= epoch)
    path = src / "checkpoints" / str(step)
    if not any(r["epoch"] == epoch for r in read_records(src)) or not path.is_dir():
        raise FileNotFoundError(f"branch_from: {src} has no checkpoint of epoch {epoch} "
                                f"(looked for {path})")
    return path


def select(spec: list[dict], only: list[str] | None,
           seeds: list[int] | None = None) -> list[tuple[dict, int]]:
    """The (entry, seed) pairs to run: every one of ``spec``, or those of the entries
    named in ``only`` and, for each of their seeds, the runs they start from (a source
    of the same seed, however deep the chain); of all their seeds, those in ``seeds`` if
    given (a seed added to an entry later runs without its earlier seeds, whose workdirs
    may live elsewhere).

    Raises:
      ValueError: a name in ``only`` that no entry has (a typo would otherwise run nothing).
    """
    names = [e["name"] for e in spec]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"--only: no run named {', '.join(unknown)} in the spec; "
                         f"its runs are: {', '.join(names)}")
    by_name = {e["name"]: e for e in spec}
    wanted = {(e["name"], s) for e in spec if not only or e["name"] in only
              for s in e.get("seeds", [0]) if seeds is None or s in seeds}
    for name, s in list(wanted):  # follow each chain of sources back to its start
        src = _source(by_name[name])
        while src is not None and src in by_name:
            wanted.add((src, s))
            src = _source(by_name[src])
    return [(e, s) for e in spec for s in sorted({s for n, s in wanted if n == e["name"]})]


def run(spec: list[dict], runs: pathlib.Path, jobs: int, only: list[str] | None,
        extra: list[str] = (), seeds: list[int] | None = None, together: bool = False) -> int:
    """Trains every (run, seed) of ``spec`` not yet finished, ``jobs`` at a time (of
    ``seeds`` only, if given), each once the run it starts from has ended
    (:func:`raegan_jax.launch.run_jobs`). ``together``: the unfinished seeds of each run
    that starts from no other run train as one many-seed run (``train.seeds``, one
    process) in ``DIR/<name>``, each seed's folder where a run of its own would be."""
    todo = [(e, s) for e, s in select(spec, only, seeds)
            if not (runs / e["name"] / f"seed{s}" / "summary.json").exists()]
    # The job that trains each pending "<name> seed <s>": its own, or its entry's many-seed run.
    owner = {f"{e['name']} seed {s}": f"{e['name']} seed {s}" for e, s in todo}
    grouped = []
    if together:
        grouped = [(e, [s for f, s in todo if f is e]) for e in spec
                   if not _source(e) and any(f is e for f, _ in todo)]
        todo = [(e, s) for e, s in todo if _source(e)]
        owner.update({f"{e['name']} seed {s}": _many_name(e, ss) for e, ss in grouped for s in ss})
    # Runs that others start from go first, so their dependants do not hold workers idle.
    deps = {_source(e) for e in spec}
    todo.sort(key=lambda es: es[0]["name"] not in deps)

    def job(entry: dict, seed: int) -> Job:
        wd = runs / entry["name"] / f"seed{seed}"
        dep = f"{_source(entry)} seed {seed}" if _source(entry) else None

        def command() -> list[str]:
            wd.parent.mkdir(parents=True, exist_ok=True)
            return _cmd(entry, seed, wd, runs, list(extra))

        return Job(f"{entry['name']} seed {seed}", command, wd.parent / f"seed{seed}.log",
                   ready=lambda ended: dep not in owner or owner[dep] in ended)

    def finished(j: Job, rc, seconds: float) -> None:
        status = "ok" if rc == 0 else f"FAILED: {rc}" if isinstance(rc, str) else f"FAILED rc={rc}"
        print(f"{j.name}: {status} in {seconds:.0f} s", flush=True)

    def many(entry: dict, seed_list: list[int]) -> Job:
        wd = runs / entry["name"]
        sets = ["train.seeds=" + ",".join(map(str, seed_list)), *extra]
        return Job(_many_name(entry, seed_list), lambda: _cmd(entry, None, wd, runs, sets),
                   runs / f"{entry['name']}.log")

    for e, _ in todo + grouped:  # the logs' folders, before any job writes its log
        (runs / e["name"]).mkdir(parents=True, exist_ok=True)
    outcome = run_jobs([many(e, ss) for e, ss in grouped] + [job(e, s) for e, s in todo], jobs,
                       on_end=finished)
    return 1 if outcome.failed or outcome.not_run else 0


def _many_name(entry: dict, seed_list: list[int]) -> str:
    return f"{entry['name']} seeds {','.join(map(str, seed_list))}"


def plateau_exit_step(recs: list[dict], loss: str) -> int | None:
    """The step count at the end of the first epoch whose training reconstruction
    loss, at every pass, is below the plateau (None: never left it)."""
    steps = 0
    for r in recs:
        steps += r["steps"]
        tr = train_recon_loss(r)
        if tr is not None and max(tr) < PLATEAU_EXIT[loss]:
            return steps
    return None


def _final(wd: pathlib.Path) -> dict | None:
    """A finished run's final numbers: its summary.json, or, for a run stopped after
    its last epoch's record (before the summary was written), that record's values.
    None for a run that did not finish its epochs."""
    if (wd / "summary.json").exists():
        return json.loads((wd / "summary.json").read_text())
    recs = read_records(wd)
    if not recs or not (wd / "config.json").exists():
        return None
    cfg = json.loads((wd / "config.json").read_text())
    last = recs[-1]
    if last["epoch"] != cfg["train"]["epochs"] or "val/recon_loss" not in last:
        return None
    out = {k[4:]: v for k, v in last.items() if k.startswith("val/")}
    out = {("val_" + k if k in ("recon_loss", "recon_loss_live", "psnr", "ssim") else k): v
           for k, v in out.items()}
    speeds = [r["images_per_sec"] for r in recs]
    out.update(images_per_sec=float(np.median(speeds)), device=None, summary_missing=True,
               wall_seconds=sum(r["epoch_seconds"] + r.get("compile_seconds", 0) for r in recs))
    return out


def summarize(spec: list[dict], runs: pathlib.Path) -> list[dict]:
    """Per run name: the seeds' final numbers and their mean and std."""
    out = []
    for e in spec:
        seeds = []
        for s in e.get("seeds", [0]):
            wd = runs / e["name"] / f"seed{s}"
            summ = _final(wd)
            if summ is None:
                continue
            cfg = json.loads((wd / "config.json").read_text())
            loss = cfg["train"]["recon_loss"]
            recs = read_records(wd)
            seeds.append({"seed": s, "summary": summ, "loss": loss,
                          "plateau_exit_step": plateau_exit_step(recs, loss),
                          "on_plateau_at_end": max(summ["val_recon_loss"]) >= PLATEAU_EXIT[loss],
                          "wall_seconds": summ["wall_seconds"]})
        if not seeds:
            out.append({"name": e["name"], "preset": e["preset"], "set": e.get("set", {}), "n": 0})
            continue

        def stat(key, where=lambda summ: summ):
            v = np.asarray([where(s["summary"])[key] for s in seeds
                            if where(s["summary"]).get(key) is not None], np.float64)
            # mean ± sample standard deviation (ddof = 1), RESULTS' one convention
            return (v.mean(axis=0).tolist(), v.std(axis=0, ddof=min(1, len(v) - 1)).tolist()) if v.size else None

        last3 = lambda summ: summ.get("last_3_epochs") or {}

        exits = [s["plateau_exit_step"] for s in seeds]
        row = {"name": e["name"], "preset": e["preset"], "set": e.get("set", {}),
               "init_from": e.get("init_from"), "n": len(seeds),
               "seeds": [s["seed"] for s in seeds],
               "val_recon_loss": stat("val_recon_loss"), "val_psnr": stat("val_psnr"),
               "val_ssim": stat("val_ssim"), "d_real_acc": stat("d_real_acc"),
               "d_fake_acc": stat("d_fake_acc"),
               # D's mean P(real), which does not jump with its bias (runs since 2026-12-06).
               "d_real_prob": stat("d_real_prob"), "d_fake_prob": stat("d_fake_prob"),
               "balance_gap": stat("balance_gap"), "balance_gap_last3": stat("balance_gap", last3),
               "val_recon_loss_last3": stat("val_recon_loss", last3),
               # Under train.ae_ema the loss above is the weight average's; this the live AE's.
               "val_recon_loss_live": stat("val_recon_loss_live"),
               # Under gan.d_ema D's numbers above are the weight average's; these the live D's.
               "d_real_acc_live": stat("d_real_acc_live"), "d_fake_acc_live": stat("d_fake_acc_live"),
               "balance_gap_live": stat("balance_gap_live"),
               "balance_gap_live_last3": stat("balance_gap_live", last3),
               "adv_lambda": stat("adv_lambda"),
               "plateau_exit_steps": exits,
               "seeds_on_plateau": sum(s["on_plateau_at_end"] for s in seeds),
               "per_seed_val_recon_loss": [s["summary"]["val_recon_loss"] for s in seeds],
               "wall_seconds": stat("wall_seconds"), "images_per_sec": stat("images_per_sec"),
               "device": seeds[0]["summary"].get("device"),
               # which split the val_… numbers are on: "validation" (choices are made on it)
               # or "test" (runs without a validation split)
               "val_split": seeds[0]["summary"].get("val_split", "test")}
        out.append(row)
    return out


def _pm(stat, fmt="{:.4f}") -> str:
    if stat is None:
        return "–"
    mean, std = stat
    if isinstance(mean, list):
        return ", ".join(f"{fmt.format(m)} ± {fmt.format(s)}" for m, s in zip(mean, std))
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`summarize`'s rows (with balance columns for GAN runs)."""
    gan = any(r.get("balance_gap") for r in rows)
    splits = sorted({r.get("val_split", "test") for r in rows if r["n"]}) or ["validation"]
    lines = [f"| run | settings | seeds | {' / '.join(splits)} loss per pass (mean ± sample std) | PSNR dB per pass | "
             "SSIM per pass | D acc real / fakes per pass | left plateau at step (per seed) | "
             "seeds ending on plateau |" + (" balance gap: final; last 3 epochs | λ per pass |" if gan else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if gan else "")]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['name']} | {r['preset']} | 0 | not run | | | | | |" + (" | |" if gan else ""))
            continue
        sets = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["set"].items())
        if r.get("init_from"):
            sets += f", init_from={r['init_from']}"
        d = "–" if r["d_real_acc"] is None else (
            f"{_pm(r['d_real_acc'], '{:.2f}')} / {_pm(r['d_fake_acc'], '{:.2f}')}")
        if r.get("d_fake_prob"):
            d += f"; mean P(real) {_pm(r['d_real_prob'], '{:.2f}')} / {_pm(r['d_fake_prob'], '{:.2f}')}"
        if r.get("d_fake_acc_live"):
            d += f" (live D: {_pm(r['d_real_acc_live'], '{:.2f}')} / {_pm(r['d_fake_acc_live'], '{:.2f}')})"
        exits = ", ".join("never" if x is None else str(x) for x in r["plateau_exit_steps"])
        live = f" (live AE: {_pm(r['val_recon_loss_live'])})" if r.get("val_recon_loss_live") else ""
        lines.append(f"| {r['name']} | `{r['preset']}` {sets} | {r['n']} | {_pm(r['val_recon_loss'])}{live} | "
                     f"{_pm(r['val_psnr'], '{:.2f}')} | {_pm(r['val_ssim'], '{:.3f}')} | {d} | {exits} | "
                     f"{r['seeds_on_plateau']}/{r['n']} |" + (
                         f" {_pm(r['balance_gap'], '{:.2f}')}; {_pm(r['balance_gap_last3'], '{:.2f}')}"
                         + (f" (live D: {_pm(r['balance_gap_live'], '{:.2f}')}; "
                            f"{_pm(r['balance_gap_live_last3'], '{:.2f}')})" if r.get("balance_gap_live") else "")
                         + " | "
                         f"{_pm(r['adv_lambda'], '{:.3g}')} |" if gan else ""))
    return "\n".join(lines)


def per_seed(spec: list[dict], runs: pathlib.Path, last: int = 20) -> list[dict]:
    """One row per (run, seed) that has logged an epoch, finished or not: where it is,
    its latest validation numbers and their mean over the last 3 evaluated epochs, and
    how the game went on training batches over the last ``last`` epochs (D's accuracies,
    D's steps and the stage switches per epoch; a ``phases`` epoch reads its D sweep's
    accuracies and game sweep's steps are not counted as D's)."""
    out = []
    for e in spec:
        for s in e.get("seeds", [0]):
            wd = runs / e["name"] / f"seed{s}"
            recs = read_records(wd)
            evals = [r for r in recs if "val/recon_loss" in r]
            if not evals:
                continue
            cfg = json.loads((wd / "config.json").read_text())
            row = {"name": e["name"], "seed": s, "epoch": recs[-1]["epoch"],
                   "epochs": cfg["train"]["epochs"], "finished": (wd / "summary.json").exists(),
                   "val_recon_loss": evals[-1]["val/recon_loss"],
                   "val_recon_loss_last3": np.mean([r["val/recon_loss"] for r in evals[-3:]], 0).tolist()}
            if "val/d_fake_acc" in evals[-1]:
                tail3, tail = evals[-3:], recs[-last:]
                mean = lambda key, rs: np.mean([r[key] for r in rs if key in r], 0).tolist() \
                    if any(key in r for r in rs) else None
                prefix = "train/d_sweep/" if "train/d_sweep/d_real_acc" in tail[-1] else "train/"
                gaps = [balance_gap(r["val/d_fake_acc"]) for r in evals[-last:]]
                row.update(
                    d_real_acc=evals[-1]["val/d_real_acc"], d_fake_acc=evals[-1]["val/d_fake_acc"],
                    # From the accuracies: runs older than the balance_gap metric have them.
                    balance_gap=balance_gap(evals[-1]["val/d_fake_acc"]),
                    d_real_acc_last3=mean("val/d_real_acc", tail3),
                    d_fake_acc_last3=mean("val/d_fake_acc", tail3),
                    balance_gap_last3=float(np.mean([balance_gap(r["val/d_fake_acc"]) for r in tail3])),
                    # Why a longer window too: a D at its decision boundary swings between
                    # epochs (the game flips stage 10-20 times an epoch; each evaluation is
                    # a snapshot of one phase of it).
                    d_fake_acc_last=mean("val/d_fake_acc", evals[-last:]),
                    balance_gap_last=float(np.mean(gaps)),
                    # How often a snapshot of D was inside the band (every pass's
                    # fakes at 0.5 +- 0.1) or at an extreme (a pass at <= 0.1 or >= 0.9,
                    # D's bias calling nearly every image one thing), of the last evaluations.
                    in_band_last=sum(g <= 0.1 + 1e-9 for g in gaps),
                    extreme_last=sum(g >= 0.4 - 1e-9 for g in gaps),
                    evals_last=len(gaps),
                    train_d_real_acc=mean(prefix + "d_real_acc", tail),
                    train_d_fake_acc=mean(prefix + "d_fake_acc", tail),
                    d_steps=mean("train/d_steps", tail),
                    stage_switches=mean("train/stage_switches", tail))
                if "val/d_fake_acc_live" in evals[-1]:  # gan.d_ema: the live D's gap beside
                    row.update(balance_gap_live=balance_gap(evals[-1]["val/d_fake_acc_live"]),
                               balance_gap_live_last=float(np.mean(
                                   [balance_gap(r["val/d_fake_acc_live"]) for r in evals[-last:]
                                    if "val/d_fake_acc_live" in r])))
            out.append(row)
    return out


def seeds_table(rows: list[dict], last: int = 20) -> str:
    """A markdown table of :func:`per_seed`'s rows."""
    f = lambda v, fmt: "–" if v is None else (
        "/".join(fmt.format(x) for x in v) if isinstance(v, list) else fmt.format(v))
    lines = ["| run | seed | epoch | val loss per pass; last 3 epochs | D acc real / fakes (val); "
             f"last 3 epochs | D acc fakes (val), last {last} epochs | balance gap; last 3; last {last} epochs "
             f"(epochs in 0.5 ± 0.1 / at an extreme) | "
             f"D acc real / fakes, training batches, "
             f"last {last} epochs | D steps, stage switches per epoch, last {last} epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ep = f"{r['epoch']}/{r['epochs']}" + ("" if r["finished"] else " (running or stopped)")
        loss = f"{f(r['val_recon_loss'], '{:.4f}')}; {f(r['val_recon_loss_last3'], '{:.4f}')}"
        if "d_real_acc" not in r:
            lines.append(f"| {r['name']} | {r['seed']} | {ep} | {loss} | – | – | – | – | – |")
            continue
        lines.append(
            f"| {r['name']} | {r['seed']} | {ep} | {loss} | "
            f"{f(r['d_real_acc'], '{:.2f}')} / {f(r['d_fake_acc'], '{:.2f}')}; "
            f"{f(r['d_real_acc_last3'], '{:.2f}')} / {f(r['d_fake_acc_last3'], '{:.2f}')} | "
            f"{f(r['d_fake_acc_last'], '{:.2f}')} | "
            f"{f(r['balance_gap'], '{:.2f}')}; {f(r['balance_gap_last3'], '{:.2f}')}; "
            f"{f(r['balance_gap_last'], '{:.2f}')} "
            f"({r['in_band_last']} / {r['extreme_last']} of {r['evals_last']})"
            + (f" (live D: {r['balance_gap_live']:.2f}; {r['balance_gap_live_last']:.2f})"
               if "balance_gap_live" in r else "") + " | "
            f"{f(r['train_d_real_acc'], '{:.2f}')} / {f(r['train_d_fake_acc'], '{:.2f}')} | "
            f"{f(r['d_steps'], '{:.1f}')}, {f(r['stage_switches'], '{:.1f}')} |")
    return "\n".join(lines)


def frontier(rows: list[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
    """Reconstruction (val loss, mean over passes) against the balance gap, both means
    over each run's last 3 epochs and its seeds (bars: std over seeds), one point per run."""
    pts = {r["name"]: (r["balance_gap_last3"],
                       tuple(float(np.mean(v)) for v in r["val_recon_loss_last3"]))
           for r in rows if r["n"] and r.get("balance_gap_last3") and r.get("val_recon_loss_last3")}
    return figures.balance_frontier(pts, path, title or "reconstruction vs balance (goal: lower left)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["run", "table", "seeds", "frontier"])
    p.add_argument("spec", type=pathlib.Path)
    p.add_argument("--runs", type=pathlib.Path, required=True)
    p.add_argument("--jobs", type=int, default=1)
    # "extend": `--only a b` and `--only a --only b` both select a and b.
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                   help="only these entries of the spec (run, and the rows of table, seeds, frontier)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="N",
                   help="run: only these seeds of the selected entries")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run (e.g. train.steps_per_dispatch=32 on a GPU)")
    p.add_argument("--together", action="store_true",
                   help="run: each entry's seeds in one process, one program (train.seeds)")
    p.add_argument("--json", type=pathlib.Path, help="also write the summary rows here")
    p.add_argument("--out", type=pathlib.Path, help="frontier: the PNG to write")
    p.add_argument("--last", type=int, default=20,
                   help="seeds: the epochs over which the game's training measures are averaged")
    a = p.parse_args(argv)
    spec = json.loads(a.spec.read_text())
    try:
        select(spec, a.only)
    except ValueError as e:
        p.error(str(e))
    if a.action == "run":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several runs per GPU
        return run(spec, a.runs, a.jobs, a.only, a.sets, a.seeds, a.together)  # the named entries' sources run too
    if a.only:
        spec = [e for e in spec if e["name"] in a.only]
    if a.action == "seeds":
        print(seeds_table(per_seed(spec, a.runs, a.last), a.last))
        return 0
    rows = summarize(spec, a.runs)
    if a.action == "frontier":
        if not a.out:
            p.error("frontier needs --out FIG.png")
        print(frontier(rows, a.out, a.spec.stem))
        return 0
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
