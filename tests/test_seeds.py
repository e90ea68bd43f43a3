"""Many seeds in one program (train.seeds, raegan_jax/seeds.py): each seed of a many-seed run
is the single run of that seed, for every family, also when a signal stops it mid-epoch."""

import json
import os
import signal

import jax
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax import seeds
from raegan_jax.runs import load_run
from raegan_jax.train import train_and_evaluate
from conftest import TINY
from test_train import cfg_for, read_metrics, strip_timing

# 2 epochs of 3 steps; the recursive families with 2 passes; aegan's stage flag driven by the
# threshold rule on device, raegan's D and AE both learning every step.
FAMILIES = {"ae": ("mnist_ae", {}), "rae": ("mnist_ae", {"model.family": "rae", "model.passes": 2}),
            "aegan": ("mnist_aegan", {}),
            "raegan": ("mnist_aegan", {"model.family": "raegan", "model.passes": 2,
                                       "gan.stage_policy": "alternate"})}
SHORT = {"train.epochs": 2, "data.train_examples": 96}
TOL = {"rtol": 2e-5, "atol": 2e-6}


def assert_same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(strip_timing(a), strip_timing(b)):
        assert x.keys() == y.keys()
        for k in x:
            # The high-frequency share of a near-constant output is a ratio of tiny powers.
            tol = {"rtol": 1e-2} if "hf_ratio" in k else TOL
            np.testing.assert_allclose(np.asarray(x[k], np.float64), np.asarray(y[k], np.float64),
                                       **tol, err_msg=k)


def assert_same_params(run, ref):
    """Within what float rounding can do, which is a lot on these tiny runs' plateau.

    The seeds' program is compiled as a whole, so its float rounding differs from the
    single run's; Adam divides each gradient by its running RMS, so where a weight's true
    gradient is near zero (these tiny models sit on the mean-image plateau for their 6
    steps) rounding residue of either sign becomes a step of up to lr either way (measured,
    rae: 21% of weights more than 1e-5 apart, the largest 0.01 at lr 5e-3). So the weights
    are held to the bound two runs' steps allow (a wrong seed starts elsewhere: the members'
    initial states are compared exactly in test_members_start_as_their_single_runs), and
    the records, compared to 2e-5, are what a wrong batch or update fails: every epoch's
    training and validation losses are in them."""
    leaves = lambda r: np.concatenate([np.ravel(np.asarray(l, np.float64))  # noqa: E731
                                       for l in jax.tree.leaves((r.state.ae_params, r.state.d_params))])
    t = ref.config.train
    assert np.abs(leaves(run) - leaves(ref)).max() <= 2 * int(ref.state.step) * max(t.ae_lr, t.d_lr)


def test_members_start_as_their_single_runs():
    cfg = cfg_for("mnist_aegan", **{"train.seeds": "3,1", "train.ae_ema": 0.9})
    state = seeds.initial_state(cfg, rj.create_train_state)
    for k, s in enumerate((3, 1)):
        single = rj.create_train_state(seeds.member_config(cfg, s), jax.random.key(s))
        for x, y in zip(jax.tree.leaves(seeds.member(state, k)), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(jax.tree.leaves(seeds.member(state, 0).ae_params)[0],
                              jax.tree.leaves(seeds.member(state, 1).ae_params)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_each_seed_is_its_single_run(tmp_path, tiny_mnist, family, monkeypatch):
    preset, over = FAMILIES[family]
    run = lambda wd, **kw: train_and_evaluate(cfg_for(preset, **SHORT, **over, **kw), tmp_path / wd,  # noqa: E731
                                              data_dir=str(tiny_mnist), progress=False)
    single = run("single", **{"train.seed": 1})
    if family == "raegan":  # a SIGTERM mid-epoch: the rerun resumes the seeds' stacked state
        import raegan_jax.train as tr
        real_add, calls = tr._add_sums, []

        def add_sums_then_signal(a, b):
            calls.append(1)
            if len(calls) == 1:  # after the 2nd of epoch 1's 3 steps
                os.kill(os.getpid(), signal.SIGTERM)
            return real_add(a, b)

        monkeypatch.setattr(tr, "_add_sums", add_sums_then_signal)
        with pytest.raises(rj.Preempted, match=r"at step 2 \(epoch 1\)"):
            run("many", **{"train.seeds": "0,1"})
        monkeypatch.setattr(tr, "_add_sums", real_add)
    if family == "rae":  # the batched program, the accelerator's form, on CPU
        many = run("many", **{"train.seeds": "0,1", "train.seeds_impl": "vmap"})
        assert many["seeds_impl"] == "vmap"
    else:
        many = run("many", **{"train.seeds": "0,1"})

    member = tmp_path / "many" / "seed1"
    assert_same_records(read_metrics(member), read_metrics(tmp_path / "single"))
    got, want = load_run(member), load_run(tmp_path / "single")
    assert got.config == want.config  # the folder is a run of seed 1's own config
    assert_same_params(got, want)
    mine = json.loads((member / "summary.json").read_text())
    np.testing.assert_allclose(mine["test_recon_loss"], single["test_recon_loss"], **TOL)
    assert (member / "reconstructions.png").exists() and (member / "loss_curves.png").exists()

    # The table over the seeds: means and sample standard deviations of each seed's numbers.
    other = json.loads((tmp_path / "many" / "seed0" / "summary.json").read_text())
    both = np.asarray([other["val_recon_loss"], mine["val_recon_loss"]])
    assert many["seeds"] == [0, 1] and many["per_seed"]["1"]["val_recon_loss"] == mine["val_recon_loss"]
    np.testing.assert_allclose(many["val_recon_loss"], both.mean(0))
    np.testing.assert_allclose(many["val_recon_loss_std"], both.std(0, ddof=1))
    assert not np.allclose(both[0], both[1])  # the seeds differ: each had its own start and data
    assert many["images_per_sec"] == pytest.approx(2 * mine["images_per_sec"])


def test_bench_times_many_seeds_against_one(tmp_path):
    """`raegan bench --seeds N`: a row per program, images/s summed over the seeds."""
    from raegan_jax import bench
    over = {k: v for k, v in TINY.items() if k.startswith("model.")}
    rows = bench.bench_seeds(["mnist"], ["ae"], 16, 1, 3, repeats=2, warmup=1, overrides=over,
                             log=lambda m: None)
    assert [r["impl"] for r in rows] == ["1 seed", "3 seeds, unroll", "3 seeds, vmap"]
    assert [r["seeds"] for r in rows] == [1, 3, 3] and rows[0]["speedup_vs_one_seed"] == 1.0
    for r in rows:
        assert r["images_per_sec"] == pytest.approx(r["seeds"] * 16 / (r["ms_per_step"] / 1e3))


def test_a_many_seed_run_takes_its_ae_stage_from_one_of_the_same_seeds(tmp_path, tiny_mnist):
    """train.ae_stage_from between many-seed runs: each seed's stage is the source's run of
    that seed, and the run ends where the one that trained its own stage does."""
    sets = {**SHORT, "train.seeds": "0,1"}
    game = {**sets, "model.family": "raegan", "model.passes": 2, "train.ae_stage_epochs": 1}
    run = lambda wd, **kw: train_and_evaluate(cfg_for("mnist_ae", **kw), tmp_path / wd,  # noqa: E731
                                              data_dir=str(tiny_mnist), progress=False)
    run("source", **sets, **{"train.keep_epochs": 1})
    straight = run("straight", **game)
    shared = run("shared", **game, **{"train.ae_stage_from": str(tmp_path / "source")})
    np.testing.assert_allclose(shared["val_recon_loss"], straight["val_recon_loss"], **TOL)
    for seed in (0, 1):
        mine = read_metrics(tmp_path / "shared" / f"seed{seed}")
        assert mine[0]["copied_from"] == str(tmp_path / "source" / f"seed{seed}")
        assert_same_records(mine[1:], read_metrics(tmp_path / "straight" / f"seed{seed}")[1:])
    with pytest.raises(rj.ConfigError, match="these differ: train.seeds"):
        run("other", **{**game, "train.seeds": "0,2"}, **{"train.ae_stage_from": str(tmp_path / "source")})
    # `raegan eval` of a many-seed run evaluates each seed's run
    from raegan_jax.cli import main
    assert main(["eval", str(tmp_path / "shared"), "--passes", "3", "--no-judge",
                 "--data-dir", str(tiny_mnist)]) == 0
    for seed in (0, 1):
        ev = json.loads((tmp_path / "shared" / f"seed{seed}" / "eval_test_passes3" / "eval.json")
                        .read_text())
        assert ev["run"] == str(tmp_path / "shared" / f"seed{seed}") and len(ev["psnr"]) == 3


def test_batches_gathered_on_device_are_the_host_gathers():
    """The loop keeps the training images on the devices and gathers each sweep's batches
    there: the same batches, for one order or one per seed."""
    from raegan_jax.parallel import make_mesh, put_replicated
    from raegan_jax.programs import device_sweep_batches, sweep_batches
    mesh = make_mesh()
    images = np.random.default_rng(0).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    for perm in (np.random.default_rng(1).permutation(40).astype(np.int32),
                 np.stack([np.random.default_rng(s).permutation(40) for s in (2, 3)]).astype(np.int32)):
        on_device = device_sweep_batches(put_replicated(images, mesh), put_replicated(perm, mesh),
                                         3, 8, mesh)
        host = sweep_batches(images, perm, 3, 8, mesh)
        assert on_device.shape == host.shape == (*perm.shape[:-1], 3, 8, 28, 28, 1)
        assert on_device.sharding == host.sharding
        np.testing.assert_array_equal(np.asarray(on_device), np.asarray(host))


def test_a_workdirs_config_is_read_in_one_place(tmp_path):
    """workdir.read_config: None without config.json, the Config with one; what runs a workdir
    holds (seeds.run_dirs) and whether it may resume (runs.check_config) read it so."""
    from raegan_jax.runs import check_config
    from raegan_jax.workdir import WorkdirError, read_config
    cfg = cfg_for("mnist_ae", **{"train.seeds": "0,2"})
    assert read_config(tmp_path) is None and seeds.run_dirs(tmp_path) == [tmp_path]
    assert not check_config(cfg, tmp_path)
    (tmp_path / "config.json").write_text(cfg.to_json())
    assert read_config(tmp_path) == cfg and check_config(cfg, tmp_path)
    assert seeds.run_dirs(tmp_path) == [tmp_path / "seed0", tmp_path / "seed2"]
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WorkdirError, match="config.json is unreadable"):
        check_config(cfg, tmp_path)
