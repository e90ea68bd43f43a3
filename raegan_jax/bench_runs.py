"""What whole runs cost (``raegan bench --report`` and ``--loop``).

``--report`` costs each preset's whole run on this machine: the programs its schedule calls
(and the eval step), timed as :mod:`raegan_jax.bench` times them, times how often the
schedule calls them. ``--loop`` sets a short real run's images/s beside what its programs
reach alone: the loop's own overhead.
"""

from __future__ import annotations

import statistics
import tempfile
from collections import Counter
from typing import Callable

from raegan_jax import data as data_lib
from raegan_jax.bench import STAGES, EvalRunner, JaxRunner, SweepRunner, result_row, interleaved
from raegan_jax.config import Config
from raegan_jax.configs import get_preset
from raegan_jax.runs import ae_stage_chain
from raegan_jax.stages import AE_STAGE, STAGE_NAMES, ae_stage_config, sweep_plan
from raegan_jax.steps import steps_per_epoch
from raegan_jax.train import train_and_evaluate


def bench_loop(presets, epochs: int, repeats: int, warmup: int, overrides=None, data_dir=None,
               log: Callable[[str], None] = print) -> list[dict]:
    """The loop's efficiency: each preset's training images/s in a short real run
    (``epochs`` epochs of its own family's training, no AE stage; the median over the
    epochs after the first; training time only, evaluation apart) against what its
    programs allow alone (each sweep's program timed one call at a time on device-resident
    batches, weighted as the epochs run them; timed before and after the run)."""
    rows = []
    for preset in presets:
        cfg = get_preset(preset, {"train.epochs": epochs, "train.ae_stage_epochs": 0,
                                  "train.eval_every_epochs": epochs,
                                  **(overrides or {})})
        kinds = Counter(sw.program for e in range(1, epochs) for sw in sweep_plan(cfg, e))
        runners = {k: SweepRunner(cfg, stage=k) for k in kinds}
        before = interleaved(runners, repeats, warmup)
        with tempfile.TemporaryDirectory() as wd:
            # its images/s: the median over the epochs after the first
            loop = train_and_evaluate(cfg, wd, data_dir=data_dir, progress=False)["images_per_sec"]
        after = interleaved(runners, repeats, 0)
        step_s = sum(n * statistics.median(before[k] + after[k]) for k, n in kinds.items()) / sum(kinds.values())
        row = {"impl": "loop vs step", "preset": preset, "dataset": cfg.data.dataset,
               "family": cfg.model.family, "batch": cfg.train.batch_size,
               "loop_images_per_sec": loop, "step_images_per_sec": cfg.train.batch_size / step_s,
               "ms_per_step": 1e3 * step_s, "images_per_sec": loop}
        row["loop_efficiency"] = row["loop_images_per_sec"] / row["step_images_per_sec"]
        rows.append(row)
        log(f"{preset:15s} loop {loop:7.0f} img/s, its programs alone {row['step_images_per_sec']:7.0f}"
            f" -> {row['loop_efficiency']:.2f}")
    return rows


def report_schedule(cfg: Config, available: tuple[int, int]) -> dict[str, int]:
    """How many times a run of ``cfg`` calls each program over its whole schedule.

    Args:
      cfg: a preset's config (its epochs, pretraining, stage policy).
      available: (train, test) images on disk; the run takes
        ``min(data.*_examples, available)`` of each (0: all), or
        ``data.train_examples`` drawn afresh per epoch when resampling.

    Returns:
      Program -> calls: ``"-"`` (the ae/rae step), ``"ae_stage"`` (the plain AE's
      step of ``train.ae_stage_epochs``), ``"recon"``, ``"d"``, ``"ae"``
      (the programs specialised to a stage: pretraining and ``phases`` sweeps),
      ``"one-program"`` (the step whose on-device flag picks the stage:
      ``threshold``, ``alternate``) and ``"eval"`` (validation batches every evaluated
      epoch, test batches once).
    """
    n_train = data_lib.train_used(cfg, available[0])
    n_test = data_lib.images_used(cfg.data.test_examples, available[1])
    spe = steps_per_epoch(cfg, n_train)
    calls: Counter = Counter()
    first = cfg.train.ae_stage_epochs if cfg.train.ae_stage_from else 0  # the stage is taken
    for epoch in range(first, cfg.train.epochs):
        for sweep in sweep_plan(cfg, epoch):
            if sweep.ae_stage:
                name = AE_STAGE
            elif sweep.fixed:
                name = STAGE_NAMES[sweep.stage]
            else:
                name = "one-program" if cfg.is_gan else "-"
            calls[name] += spe
    every, last = cfg.train.eval_every_epochs, cfg.train.epochs - 1
    evals = sum((e + 1) % every == 0 or e == last for e in range(first, cfg.train.epochs))
    batches = lambda n: -(-n // cfg.train.batch_size)  # zero-padded last batch
    n_val = cfg.data.validation_examples
    # Every evaluated epoch reads the validation split; the test split is read once, at the end.
    calls["eval"] = (evals * batches(n_val) + batches(n_test)) if n_val else evals * batches(n_test)
    return dict(calls)


def bench_report(presets, repeats: int, warmup: int, overrides=None, data_dir=None,
                 log: Callable[[str], None] = print, chained: bool = True) -> list[dict]:
    """What each preset's whole run costs on this machine: every program it runs, timed
    (interleaved, medians), times the calls its schedule makes (:func:`report_schedule`).
    With ``chained``, a preset whose AE stage an earlier preset's run already trained
    (:func:`~raegan_jax.runs.ae_stage_chain`, as ``experiments/run_report.sh`` runs them) is
    costed without it.

    Checkpointing, data loading and figures are not counted; compile time is, once per
    program. Returns one row per (preset, program) and one ``"total"`` row per preset.
    """
    rows = []
    configs = [get_preset(name, overrides) for name in presets]
    sizes = data_lib.available_splits(configs, data_dir, log)
    chain = ae_stage_chain(configs, sizes) if chained else {}
    for name in presets:
        cfg = get_preset(name, {**(overrides or {}),
                                **({"train.ae_stage_from": chain[name]} if name in chain else {})})
        if name in chain:
            log(f"{name}: its AE stage is {chain[name]}'s run (train.ae_stage_from), not costed again")
        calls = report_schedule(cfg, sizes[cfg.data.dataset])
        runners: dict[str, object] = {}
        for prog in calls:
            if prog == "eval":
                runners[prog] = EvalRunner(cfg)
            elif prog == AE_STAGE:
                runners[prog] = JaxRunner(ae_stage_config(cfg), "-")
            else:
                runners[prog] = JaxRunner(cfg, prog if prog in STAGES else "ae",
                                          one_program=prog == "one-program")
        times = interleaved(runners, repeats, warmup)
        total_s, compile_s = 0.0, 0.0
        for prog, n in calls.items():
            row = result_row("jax", cfg, times[prog], runners[prog].compile_s, stage=prog)
            row.update(preset=name, calls=n, minutes=n * row["ms_per_step"] / 6e4)
            total_s += 60 * row["minutes"]
            compile_s += row["compile_s"]
            rows.append(row)
            log(f"{name:15s} {prog:12s} {n:7d} calls x {row['ms_per_step']:7.1f} ms = "
                f"{row['minutes']:6.1f} min")
        total = {"impl": "jax", "preset": name + (f" (AE stage: {chain[name]})" if name in chain else ""),
                 "stage": "total", "dataset": cfg.data.dataset,
                 "family": cfg.model.family, "passes": cfg.model.passes,
                 "batch": cfg.train.batch_size, "calls": sum(calls.values()),
                 "compile_s": compile_s, "minutes": (total_s + compile_s) / 60}
        rows.append(total)
        log(f"{name:15s} {'total':12s} {total['minutes']:6.1f} min (compile {compile_s:.0f} s)")
    whole = sum(r["minutes"] for r in rows if r["stage"] == "total")
    log(f"all presets: {whole:.1f} min")
    return rows
