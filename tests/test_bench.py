"""`raegan bench --report`: each preset's whole run, costed from its schedule."""

import json

import pytest

import raegan_jax as rj
from raegan_jax import bench

from conftest import TINY


def test_report_schedule_counts_what_each_preset_runs():
    mnist, cifar = (60000, 10000), (8068, 1017)
    # 20 reconstruction-only epochs, then 180 of the game; 7,000 images a epoch (54 steps).
    assert bench.report_schedule(rj.get_preset("mnist_aegan"), mnist) == {
        "recon": 20 * 54, "one-program": 180 * 54, "eval": 200 * 16}  # 2,000 test images
    assert bench.report_schedule(rj.get_preset("mnist_ae"), mnist) == {"-": 100 * 23, "eval": 100 * 5}
    # the report's phases: every epoch three specialised sweeps; the offline 8,068 images
    # at the preset's batch 32 (32 test batches: 1,017 images, the last one padded)
    phases = rj.get_preset("cifar10_aegan", {"gan.stage_policy": "phases", "train.epochs": 20,
                                             "train.ae_stage_epochs": 0,
                                             "train.eval_every_epochs": 4})
    assert bench.report_schedule(phases, cifar) == {"recon": 20 * 252, "d": 20 * 252,
                                                    "ae": 20 * 252, "eval": 5 * 32}
    at128 = rj.get_preset("cifar10_aegan", {"gan.stage_policy": "phases", "train.epochs": 20,
                                            "train.ae_stage_epochs": 0,
                                            "train.eval_every_epochs": 4, "train.batch_size": 128})
    assert bench.report_schedule(at128, cifar) == {"recon": 20 * 63, "d": 20 * 63, "ae": 20 * 63,
                                                   "eval": 5 * 8}
    # fewer images on disk than the preset asks for: the run takes what exists
    # (and cifar10_rae's AE stage runs the plain AE's program: 120 of its 150 epochs)
    calls = bench.report_schedule(rj.get_preset("cifar10_rae"), (1000, 100))  # batch 32
    assert (calls["ae_stage"], calls["-"]) == (120 * 31, 30 * 31)


def test_the_report_chains_the_ae_stages_it_can_and_costs_them_once():
    all_six = list(rj.PRESETS)
    offline = {"mnist": (60000, 10000), "cifar10": (8068, 1017)}
    # Offline, the GAN presets ask for 20,000 images and cifar10_ae for 10,000: both take the
    # 8,068 there are, so the three presets with an AE stage start from cifar10_ae's run.
    every = {"cifar10_rae": "cifar10_ae", "cifar10_aegan": "cifar10_ae", "cifar10_raegan": "cifar10_ae"}
    assert bench.ae_stage_chain(all_six, offline) == every
    # The full CIFAR-10 gives them different images: the GAN presets train their own stage.
    full = {**offline, "cifar10": (50000, 10000)}
    assert bench.ae_stage_chain(all_six, full) == {"cifar10_rae": "cifar10_ae"}
    # Only an earlier plain-AE run can be a source, training the AE alike.
    assert bench.ae_stage_chain(["cifar10_rae", "cifar10_ae"], offline) == {}
    assert bench.ae_stage_chain(all_six, offline, {"train.seed": "1"}) == every  # all seed 1
    # A chained run's schedule skips the stage's training and its evaluations.
    chained = rj.get_preset("cifar10_rae", {"train.ae_stage_from": "runs/cifar10_ae"})
    assert bench.report_schedule(chained, offline["cifar10"]) == {"-": 30 * 252, "eval": 30 * 32}


def test_report_times_the_programs_and_sums_them(tiny_mnist, tmp_path):
    # an AE-stage epoch, a reconstruction epoch, two epochs of the game
    over = {**TINY, "train.epochs": 4, "data.train_examples": 96, "gan.ae_pretrain_epochs": 2,
            "train.ae_stage_epochs": 1}
    log = []
    rows = bench.bench_report(["mnist_aegan"], repeats=2, warmup=0, overrides=over,
                              data_dir=str(tiny_mnist), log=log.append)
    by = {r["stage"]: r for r in rows}
    progs = ("ae_stage", "recon", "one-program", "eval")
    assert set(by) == {*progs, "total"}
    assert [by[k]["calls"] for k in progs] == [3, 3, 6, 8]
    for r in (by[k] for k in progs):
        assert r["ms_per_step"] > 0 and r["minutes"] == pytest.approx(r["calls"] * r["ms_per_step"] / 6e4)
    parts = sum(by[k]["minutes"] for k in progs)
    assert by["total"]["minutes"] == pytest.approx(parts + by["total"]["compile_s"] / 60)
    assert log[-1].startswith("all presets:")
    json.dumps(rows)  # what --out writes


def test_report_names_an_unknown_preset_at_once(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--report", "mnist_ae,cifar100_ae"])
    assert e.value.code == 2 and "unknown preset(s) cifar100_ae" in capsys.readouterr().err


def test_run_report_sh_chains_the_ae_stages_to_cifar10_ae(tmp_path):
    """experiments/run_report.sh passes what ae_stage_chain decides: cifar10_ae keeps the
    stage's epoch, the presets with an AE stage start from it; SHARE_AE_STAGE=0 runs each alone."""
    import os
    import subprocess
    from conftest import REPO
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "raegan"  # records its arguments instead of training
    fake.write_text('#!/usr/bin/env bash\necho "ARGS $*"\n')
    fake.chmod(0o755)

    def run(**env):
        out = subprocess.run(["bash", str(REPO / "experiments" / "run_report.sh"), str(tmp_path / "runs")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path,
                             env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                  "PYTHONPATH": str(REPO), **env})
        assert out.returncode == 0, out.stderr
        return {l.split()[3]: l for l in out.stdout.splitlines() if l.startswith("ARGS")}

    calls = run()
    assert len(calls) == 6
    assert "train.keep_epochs=120" in calls["cifar10_ae"]
    for p in ("cifar10_rae", "cifar10_aegan", "cifar10_raegan"):
        assert f"train.ae_stage_from={tmp_path / 'runs' / 'cifar10_ae'}" in calls[p]
    assert not any("ae_stage_from" in calls[p] or "keep_epochs" in calls[p]
                   for p in ("mnist_ae", "mnist_aegan"))
    alone = run(SHARE_AE_STAGE="0")
    assert not any("ae_stage_from" in c or "keep_epochs" in c for c in alone.values())
