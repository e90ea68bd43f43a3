"""`raegan bench --report`: each preset's whole run, costed from its schedule."""

import json
import pathlib

import pytest

import raegan_jax as rj
from raegan_jax import bench, bench_runs

from conftest import TINY


def test_report_schedule_counts_what_each_preset_runs():
    mnist, cifar = (60000, 10000), (8068, 1017)
    # 20 epochs of the AE alone, then 180 of the game; 7,000 images a epoch (54 steps);
    # every epoch evaluates the 5,000 validation images (40 batches), the end the 2,000 test ones.
    assert bench_runs.report_schedule(rj.get_preset("mnist_aegan"), mnist) == {
        "ae_stage": 20 * 54, "one-program": 180 * 54, "eval": 200 * 40 + 16}
    assert bench_runs.report_schedule(rj.get_preset("mnist_ae"), mnist) == {"-": 100 * 23, "eval": 100 * 40 + 5}
    # the report's phases: every epoch three specialised sweeps; the offline 8,068 images less
    # the 1,000 validation ones at the preset's batch 32 (220 steps); 32 validation batches an
    # evaluated epoch, 32 test batches once (1,017 images, the last batch padded)
    phases = rj.get_preset("cifar10_aegan", {"gan.stage_policy": "phases", "train.epochs": 20,
                                             "train.ae_stage_epochs": 0,
                                             "train.eval_every_epochs": 4})
    assert bench_runs.report_schedule(phases, cifar) == {"recon": 20 * 220, "d": 20 * 220,
                                                    "ae": 20 * 220, "eval": 5 * 32 + 32}
    at128 = rj.get_preset("cifar10_aegan", {"gan.stage_policy": "phases", "train.epochs": 20,
                                            "train.ae_stage_epochs": 0,
                                            "train.eval_every_epochs": 4, "train.batch_size": 128})
    assert bench_runs.report_schedule(at128, cifar) == {"recon": 20 * 55, "d": 20 * 55, "ae": 20 * 55,
                                                   "eval": 5 * 8 + 8}
    # fewer images on disk than the preset asks for: the run takes what exists
    # (and cifar10_rae's AE stage runs the plain AE's program: 120 of its 150 epochs)
    calls = bench_runs.report_schedule(rj.get_preset("cifar10_rae"), (2000, 100))  # batch 32, 1,000 held out
    assert (calls["ae_stage"], calls["-"]) == (120 * 31, 30 * 31)


def chain(presets, available, overrides=None):
    """runs.ae_stage_chain over the named presets (with ``--set`` values for all)."""
    from raegan_jax.runs import ae_stage_chain
    return ae_stage_chain([rj.get_preset(p, overrides) for p in presets], available)


def test_the_report_chains_the_ae_stages_it_can_and_costs_them_once():
    all_six = list(rj.PRESETS)
    offline = {"mnist": (60000, 10000), "cifar10": (8068, 1017)}
    # Offline, the GAN presets ask for 20,000 images and cifar10_rae for 10,000: both take the
    # 7,068 there are besides the validation split, so the GAN presets start from cifar10_rae's AE stage. cifar10_ae trains
    # at batch 16, not the stage's 32: no source.
    every = {"cifar10_aegan": "cifar10_rae", "cifar10_raegan": "cifar10_rae"}
    assert chain(all_six, offline) == every
    # A plain AE that trains as the stage does is the source, for all three.
    at32 = {"cifar10_rae": "cifar10_ae", "cifar10_aegan": "cifar10_ae", "cifar10_raegan": "cifar10_ae"}
    assert chain(all_six, offline, {"train.batch_size": "32"}) == at32
    # The full CIFAR-10 gives the GAN presets (20,000 images) others than cifar10_rae's 10,000:
    # cifar10_aegan trains its stage, and cifar10_raegan's is that one.
    full = {**offline, "cifar10": (50000, 10000)}
    assert chain(all_six, full) == {"cifar10_raegan": "cifar10_aegan"}
    # Only an earlier run can be a source, training the AE alike, and no chained one (its
    # stage is not its own).
    assert chain(["cifar10_ae", "cifar10_rae"], offline, {"train.batch_size": "32"}) \
        == {"cifar10_rae": "cifar10_ae"}
    assert chain(["cifar10_rae", "cifar10_ae"], offline, {"train.batch_size": "32"}) == {}
    assert chain(["cifar10_ae", "cifar10_rae", "cifar10_aegan"], offline,
                 {"train.batch_size": "32"}) == {"cifar10_rae": "cifar10_ae",
                                                 "cifar10_aegan": "cifar10_ae"}
    # The GAN presets keep no weight average; the RAE's stage needs one.
    assert chain(["cifar10_raegan", "cifar10_rae"], offline) == {}
    assert chain(all_six, offline, {"train.seed": "1"}) == every  # all seed 1
    # A chained run's schedule skips the stage's training and its evaluations.
    chained = rj.get_preset("cifar10_rae", {"train.ae_stage_from": "runs/cifar10_ae"})
    assert bench_runs.report_schedule(chained, offline["cifar10"]) == {"-": 30 * 220, "eval": 30 * 32 + 32}


def test_report_times_the_programs_and_sums_them(tiny_mnist, tmp_path):
    # two AE-stage epochs, two epochs of the game
    over = {**TINY, "train.epochs": 4, "data.train_examples": 96, "train.ae_stage_epochs": 2}
    log = []
    rows = bench_runs.bench_report(["mnist_aegan"], repeats=2, warmup=0, overrides=over,
                              data_dir=str(tiny_mnist), log=log.append)
    by = {r["stage"]: r for r in rows}
    progs = ("ae_stage", "one-program", "eval")
    assert set(by) == {*progs, "total"}
    assert [by[k]["calls"] for k in progs] == [6, 6, 4 * 1 + 2]  # 32 validation images, 40 test
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


# A stand-in for `raegan train` that records what it was asked to do instead of training:
# a run that keeps an epoch (the source of AE stages) writes the records of 121 epochs,
# slowly past the 120th; a run started from a source checks that the source recorded an
# epoch past 120 (exit 3 if not); every run logs its start and end to <runs>/timeline.
FAKE_RAEGAN = """#!{python}
import json, os, pathlib, signal, sys, time
args = sys.argv[1:]
if args[0] == "eval":  # raegan eval WORKDIR --passes N: the run must have ended first
    print("ARGS", " ".join(args), flush=True)
    done = [l.split()[1] for l in (pathlib.Path(args[1]).parent / "timeline").read_text().splitlines()
            if l.startswith("end ")]
    sys.exit(0 if pathlib.Path(args[1]).name in done else 4)
sets = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
wd = pathlib.Path(args[args.index("--workdir") + 1])
wd.mkdir(parents=True, exist_ok=True)
print("ARGS", " ".join(args), flush=True)
timeline = wd.parent / "timeline"
with open(timeline, "a") as f:
    f.write(f"start {{wd.name}} {{time.time()}} {{os.getpid()}}\\n")
def stop(signum, frame):
    (wd / f"stopped_by_{{signum}}").write_text("")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
if "train.ae_stage_from" in sets:
    src = pathlib.Path(sets["train.ae_stage_from"]) / "metrics.jsonl"
    if not any(json.loads(l)["epoch"] > 120 for l in src.read_text().splitlines()):
        sys.exit(3)
with open(wd / "metrics.jsonl", "w") as f:
    for e in range(1, 122 if "train.keep_epochs" in sets else 2):
        f.write(json.dumps({{"epoch": e}}) + "\\n")
        f.flush()
        time.sleep(float(os.environ.get("FAKE_SLOW", "0")) if e >= 119 else 0)
time.sleep(float(os.environ.get("FAKE_HOLD_" + wd.name, os.environ.get("FAKE_HOLD", "0"))))
with open(timeline, "a") as f:
    f.write(f"end {{wd.name}} {{time.time()}}\\n")
sys.exit(int(os.environ.get("FAKE_RC_" + wd.name, "0")))
"""


def _run_report(tmp_path, wait=True, **env):
    """Runs experiments/run_report.sh with the fake `raegan`; returns (process, its stdout,
    {preset: the command it ran})."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "raegan"
    fake.write_text(FAKE_RAEGAN.format(python=sys.executable))
    fake.chmod(0o755)
    # `raegan …` runs as RAEGAN (default: this interpreter's `python -m raegan_jax`, never a
    # `raegan` found on PATH, which may be another environment's). The script runs this interpreter (PYTHON), never a `python` found on PATH: a symlink to
    # a venv's interpreter from outside the venv starts the base Python, which on a clean
    # machine has no jax; a pyenv shim on PATH may find a real `raegan`.
    proc = subprocess.Popen(["bash", str(REPO / "experiments" / "run_report.sh"),
                             str(tmp_path / "runs")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "RAEGAN": str(fake),
                                 "PYTHONPATH": str(REPO), "PYTHON": sys.executable,
                                 "RUN_REPORT_POLL_S": "0.1", **env})
    if not wait:
        return proc, None, None
    out, err = proc.communicate(timeout=300)
    calls = {l.split()[1]: l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("=== ")}
    return proc, out + err, calls


def test_run_report_splits_the_cpus_between_its_workers(monkeypatch):
    from test_train import _experiment_script
    rr = _experiment_script("run_report")
    monkeypatch.setattr(rr.shutil, "which", lambda name: "/usr/bin/taskset")
    assert rr.cpu_groups([0, 1], 2) == [[0], [1]]
    assert rr.cpu_groups(list(range(16)), 2) == [list(range(8)), list(range(8, 16))]
    assert rr.cpu_groups([0, 1, 2], 2) == [[0, 1], [2]]
    assert rr.cpu_groups([0, 1, 2, 3], 1) is None and rr.cpu_groups([3], 2) is None
    monkeypatch.setattr(rr.shutil, "which", lambda name: None)  # no taskset: unpinned
    assert rr.cpu_groups([0, 1], 2) is None
    assert rr.default_jobs([0]) == 1
    # a source keeps the end of every stage chained to it; each chained run names its source
    chain, stage = {"x": "cifar10_ae", "y": "cifar10_ae"}, {"x": 100, "y": 120}
    runs = pathlib.Path("r")
    assert "train.keep_epochs=100,120" in rr.command("cifar10_ae", runs, chain, stage, {})
    assert f"train.ae_stage_from={runs / 'cifar10_ae'}" in rr.command("x", runs, chain, stage, {})
    # SEEDS: each preset's seeds in one many-seed run, each seed's folder judged
    seeds = {"SEEDS": "0,1,2", "EVAL_PASSES": "5"}
    cmd = rr.command("x", runs, chain, stage, seeds)
    assert "train.seeds=0,1,2" in cmd and not any(c.startswith("train.seed=") for c in cmd)
    assert rr.eval_command(runs / "x", seeds) == ["raegan", "eval", str(runs / "x"), "--passes", "5"]


def test_a_chained_run_waits_for_a_many_seed_sources_seeds_to_pass_its_stage(tmp_path):
    from test_train import _experiment_script
    rr = _experiment_script("run_report")
    src = tmp_path / "src"
    (src / "seed0").mkdir(parents=True)
    (src / "seed0" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    assert not rr.stage_ready(src, 2, False) and rr.stage_ready(src, 1, False)
    assert rr.stage_ready(src, 2, True)
    # make_results reads a many-seed run as its seeds' runs
    mr = _experiment_script("make_results")
    for seed in (0, 1):
        (src / f"seed{seed}").mkdir(exist_ok=True)
        (src / f"seed{seed}" / "config.json").write_text("{}")
    (tmp_path / "src_seed5").mkdir()
    assert mr.preset_runs(tmp_path, "src") == [src / "seed0", src / "seed1", tmp_path / "src_seed5"]


def test_run_report_sh_chains_the_ae_stages_to_cifar10_rae(tmp_path):
    """experiments/run_report.sh passes what ae_stage_chain decides: cifar10_rae keeps the
    stage's epoch, the GAN presets start from it once it has trained past it;
    SHARE_AE_STAGE=0 runs each alone."""
    import sys
    proc, out, calls = _run_report(tmp_path, JOBS="1", FAKE_SLOW="0.3")
    assert proc.returncode == 0, out
    # the script ran in this test's environment (a venv's, where the suite runs in one)
    assert f"python {sys.prefix};" in out.splitlines()[0]
    assert len(calls) == 6
    assert "train.keep_epochs=120" in calls["cifar10_rae"]
    for p in ("cifar10_aegan", "cifar10_raegan"):
        assert f"train.ae_stage_from={tmp_path / 'runs' / 'cifar10_rae'}" in calls[p]
    assert not any("ae_stage_from" in calls[p] or "keep_epochs" in calls[p]
                   for p in ("mnist_ae", "cifar10_ae", "mnist_aegan"))
    # one at a time: cifar10_rae first (the others wait for it), then the costliest first
    order = [l.split()[1] for l in out.splitlines() if l.startswith("=== ")]
    assert order == ["cifar10_rae", "cifar10_ae", "cifar10_raegan", "mnist_aegan", "cifar10_aegan",
                     "mnist_ae"]


def test_run_report_judges_each_run_once_it_has_ended(tmp_path):
    """EVAL_PASSES=N: every preset's run, once ended, gets `raegan eval RUN --passes N`."""
    proc, out, calls = _run_report(tmp_path, JOBS="2", EVAL_PASSES="10")
    assert proc.returncode == 0, out
    evals = {name[:-len(":eval")]: cmd for name, cmd in calls.items() if name.endswith(":eval")}
    assert sorted(evals) == sorted(p for p in calls if not p.endswith(":eval")) and len(evals) == 6
    runs = tmp_path / "runs"
    assert evals["cifar10_rae"] == f"raegan eval {runs / 'cifar10_rae'} --passes 10"
    assert "cifar10_rae:eval: ok" in out
    assert "taskset" not in out
    alone = _run_report(tmp_path / "alone", SHARE_AE_STAGE="0", JOBS="2")[2]  # unpinned
    assert not any("taskset" in c for c in alone.values())
    assert not any("ae_stage_from" in c or "keep_epochs" in c for c in alone.values())


def test_run_report_trains_two_presets_at_a_time_and_starts_the_chained_ones_early(tmp_path):
    """JOBS=2: two runs at once (PIN_CPUS=1: each on its own CPUs, where there are two); a
    chained run starts once cifar10_rae has recorded epoch 121, before cifar10_rae ends."""
    import os
    proc, out, calls = _run_report(tmp_path, JOBS="2", PIN_CPUS="1", FAKE_SLOW="0.5",
                                   FAKE_HOLD_cifar10_rae="8")
    assert proc.returncode == 0, out  # exit 3 from a chained run that started too early
    events = [l.split() for l in (tmp_path / "runs" / "timeline").read_text().splitlines()]
    t = {(e[0], e[1]): float(e[2]) for e in events}
    assert t["start", "mnist_ae"] < t["end", "cifar10_rae"]  # side by side
    assert min(t["start", p] for p in ("cifar10_aegan", "cifar10_raegan")) \
        < t["end", "cifar10_rae"]  # after its epoch 121, during its last 8 s
    if len(os.sched_getaffinity(0)) >= 2:
        cpus = {c.split()[2] for c in calls.values()}
        assert all(c.startswith("taskset -c") for c in calls.values()) and len(cpus) == 2


def test_run_report_passes_a_stop_on_and_reports_failures(tmp_path):
    """SIGTERM to the script reaches the running run once (it checkpoints and stops), and
    the script ends saying what did not run; a failed run makes it exit non-zero."""
    import signal
    import time
    proc, _, _ = _run_report(tmp_path, wait=False, JOBS="1", FAKE_HOLD="60")
    timeline = tmp_path / "runs" / "timeline"
    for _ in range(300):
        if timeline.exists() and "cifar10_rae" in timeline.read_text():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert (tmp_path / "runs" / "cifar10_rae" / "stopped_by_15").exists()
    assert "not run: mnist_ae" in out and "=== mnist_ae" not in out
    proc, out, _ = _run_report(tmp_path / "again", JOBS="1", FAKE_RC_mnist_ae="2")
    assert proc.returncode == 1 and "FAILED: mnist_ae" in out and "mnist_aegan: ok" in out


def test_run_report_refuses_options_and_unknown_presets_before_writing(tmp_path, monkeypatch, capsys):
    from test_train import _experiment_script
    rr = _experiment_script("run_report")
    monkeypatch.chdir(tmp_path)
    assert rr.main(["--help"]) == 0 and "RUNS_DIR" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown option '--jobs'"):
        rr.main(["runs", "--jobs"])
    with pytest.raises(SystemExit, match="unknown preset.*mnist_vae"):
        rr.main(["runs", "mnist_ae", "mnist_vae"])
    assert list(tmp_path.iterdir()) == []  # no runs folder, no "--help" folder


def test_bench_loop_sets_a_short_runs_images_per_sec_beside_its_programs(tiny_mnist):
    """`raegan bench --loop`: the loop's training images/s in a real short run against what
    its own programs reach alone; a loop that wasted time would show below 1."""
    over = {**TINY, "data.train_examples": 64}
    rows = bench_runs.bench_loop(["mnist_aegan"], 2, repeats=3, warmup=1, overrides=over,
                            data_dir=str(tiny_mnist), log=lambda m: None)
    (row,) = rows
    assert row["preset"] == "mnist_aegan" and row["batch"] == 32
    assert row["loop_efficiency"] == pytest.approx(row["loop_images_per_sec"] / row["step_images_per_sec"])
    assert 0.05 < row["loop_efficiency"] < 5
    assert "loop_efficiency" in bench.markdown(rows, bench.environment())


def test_the_orchestrator_runs_raegan_as_its_own_interpreters_cli(tmp_path):
    """`raegan …` runs as `sys.executable -m raegan_jax …` (a venv need not be activated);
    a command that cannot start fails its job with one message and the others go on."""
    import sys
    from raegan_jax.launch import Job, resolve, run_jobs
    assert resolve(["raegan", "eval", "w"]) == [sys.executable, "-m", "raegan_jax", "eval", "w"]
    assert resolve(["bash", "raegan"]) == ["bash", "raegan"]
    ends = {}
    jobs = [Job("missing", lambda: [str(tmp_path / "no_such_program")], tmp_path / "a.log"),
            Job("help", lambda: ["raegan", "--help"], tmp_path / "b.log")]
    out = run_jobs(jobs, 1, poll_s=0.01, on_end=lambda job, rc, s: ends.update({job.name: rc}))
    assert out.failed == ["missing"] and "no_such_program" in ends["missing"]
    assert ends["help"] == 0 and "usage: raegan" in (tmp_path / "b.log").read_text()
