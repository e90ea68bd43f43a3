"""Every logged number means what its name says (computed again, independently, here)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax.stages import STAGE_AE, STAGE_D, STAGE_RECON
from raegan_jax.train import train_and_evaluate

from conftest import TINY


def records(workdir):
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def final_params(workdir, cfg):
    """The run's parameters, read back from its newest checkpoint."""
    from raegan_jax.checkpoint import Checkpointer
    ckpt = Checkpointer(workdir / "checkpoints")
    state = ckpt.restore(ckpt.latest_step(), rj.create_train_state(cfg, jax.random.key(0)))
    ckpt.close()
    return state


def replay(cfg, data_dir, epochs):
    """Trains ``cfg`` with the library's own step, as the README shows, batch by batch.

    Returns the final state and, per (epoch, sweep name), the mean of the eval
    step's metrics over that sweep's batches taken on the pre-update state.
    """
    data = rj.load_data(cfg, data_dir)
    n, bs = len(data.train.images), cfg.train.batch_size
    spe = rj.steps_per_epoch(cfg, n)
    step = rj.make_train_step(cfg, steps_per_epoch=spe)
    evaluate = rj.make_eval_step(cfg)
    state = rj.create_train_state(cfg, jax.random.key(cfg.train.seed))
    means, sweep = {}, 0
    for epoch in range(epochs):
        for sweep_ in rj.sweep_plan(cfg, epoch):
            stage = sweep_.stage
            if stage is not None:
                state = state.replace(stage=jnp.int32(stage))
            perm = np.asarray(rj.epoch_permutation(cfg.train.seed, sweep, n))
            seen = []
            for k in range(spe):
                batch = data.train.images[perm[k * bs:(k + 1) * bs]]
                seen.append(jax.device_get(evaluate(state, batch)))
                state, _ = step(state, batch)
            means[(epoch + 1, stage)] = {k: np.mean([m[k] for m in seen], axis=0) for k in seen[0]}
            sweep += 1
    return state, means


def test_phases_sweeps_are_logged_apart_and_equal_a_direct_evaluation(tmp_path, tiny_mnist):
    cfg = rj.get_preset("mnist_aegan", {**TINY, "gan.stage_policy": "phases", "train.epochs": 2,
                                        "gan.adv_weight": 0.1})
    train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    recs = records(tmp_path / "run")
    _, means = replay(cfg, str(tiny_mnist), 2)
    names = {STAGE_RECON: "recon_sweep", STAGE_D: "d_sweep", STAGE_AE: "game_sweep"}
    for rec in recs:
        assert "train/d_fake_acc" not in rec  # no blend of three regimes under one name
        assert rec["ae_steps"] == 2 * rec["train/d_sweep/steps"] and rec["d_steps"] == rec["train/d_sweep/steps"]
        # The reconstruction sweep runs a program that touches no D: no D numbers for it.
        assert not {"train/recon_sweep/d_loss", "train/recon_sweep/d_fake_acc"} & set(rec)
        assert rec["train/recon_sweep/d_steps"] == 0
        for stage, name in names.items():
            want = means[(rec["epoch"], stage)]
            for k in ("recon_loss",) if stage == STAGE_RECON else ("d_fake_acc", "d_real_acc",
                                                                   "d_loss", "recon_loss"):
                np.testing.assert_allclose(rec[f"train/{name}/{k}"], want[k], rtol=1e-5, atol=1e-6,
                                           err_msg=f"epoch {rec['epoch']} {name} {k}")
        # Each sweep's loss is the objective it optimised.
        np.testing.assert_allclose(rec["train/d_sweep/loss"], rec["train/d_sweep/d_loss"], rtol=1e-6)
        np.testing.assert_allclose(rec["train/recon_sweep/loss"], rec["train/recon_sweep/recon_loss"][0],
                                   rtol=1e-6)
        np.testing.assert_allclose(rec["train/game_sweep/loss"],
                                   rec["train/game_sweep/recon_objective"]
                                   + rec["train/game_sweep/adv_weighted"], rtol=1e-5)
        np.testing.assert_allclose(rec["train/game_sweep/adv_weighted"],
                                   0.1 * rec["train/game_sweep/adv_loss"][0], rtol=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["last_epoch_train"]["train/d_sweep/d_fake_acc"] == recs[-1]["train/d_sweep/d_fake_acc"]


def test_an_ae_stage_epoch_logs_its_reconstruction_objective(tmp_path, tiny_mnist):
    cfg = rj.get_preset("mnist_aegan", {**TINY, "train.ae_stage_epochs": 1, "train.epochs": 2})
    train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    rec, game = records(tmp_path / "run")
    assert rec["train/loss"] == pytest.approx(rec["train/recon_loss"][0], rel=1e-6)
    assert rec["steps"] == 4 and "d_steps" not in rec and game["d_steps"] > 0
    # An AE-stage sweep runs the plain AE's program: no D, no adversarial term.
    assert not {"train/d_loss", "train/d_fake_acc", "train/adv_loss", "train/adv_weighted"} & set(rec)


def test_threshold_policy_logs_each_group_and_the_switches(tmp_path, tiny_mnist):
    cfg = rj.get_preset("mnist_aegan", {**TINY, "train.epochs": 2})
    train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    for rec in records(tmp_path / "run"):
        fr = rec.get("train/ae_learns/fraction", 0.0) + rec.get("train/d_learns/fraction", 0.0)
        assert fr == pytest.approx(1.0)
        assert rec["ae_steps"] + rec["d_steps"] == rec["steps"]
        assert 0 <= rec["train/stage_switches"] <= rec["steps"]
        if "train/d_learns/loss" in rec:  # D's steps optimised D's loss
            assert rec["train/d_learns/loss"] == pytest.approx(rec["train/d_learns/d_loss"], rel=1e-6)


def test_library_steps_train_what_raegan_train_trains(tmp_path, tiny_mnist):
    """The README's loop (make_train_step + epoch_permutation) assigns the same
    cycle passes as `raegan train`: both end with the same parameters."""
    cfg = rj.get_preset("mnist_ae", {**TINY, "model.family": "rae", "model.passes": 3,
                                     "train.epochs": 2})
    train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    ran = final_params(tmp_path / "run", cfg)
    mine, _ = replay(cfg, str(tiny_mnist), 2)
    assert int(ran.step) == int(mine.step)
    for a, b in zip(jax.tree.leaves(ran.ae_params), jax.tree.leaves(mine.ae_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_ahead_of_time_compile_is_the_only_compile(key):
    cfg = rj.get_preset("mnist_ae", {**TINY})
    step = rj.make_train_step(cfg)
    state = rj.create_train_state(cfg, key)
    x = jnp.zeros((32, 28, 28, 1))
    seconds = step.compile(state, x)
    assert seconds > 0 and step.compiles() == 1
    for _ in range(3):
        state, m = step(state, x)
    assert step.compiles() == 1 and int(state.step) == 3
    with pytest.raises(Exception):  # another shape is refused, not silently compiled
        step(state, jnp.zeros((64, 28, 28, 1)))


def test_diagnostics_see_a_dead_encoder_and_a_constant_output(key):
    from raegan_jax import diagnostics, losses
    cfg = rj.get_preset("cifar10_ae")
    ae, _ = rj.build_models(cfg)
    params = rj.create_train_state(cfg, key).ae_params
    x = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3))
    obj = lambda p: losses.recon_loss(ae.apply({"params": p}, x, method="logits"), x, "bce").mean()  # noqa: E731
    diag = jax.jit(lambda p: diagnostics.ae_diagnostics(ae, p, x, obj))  # one compile, not one per op
    alive = diag(params)
    assert alive["diag/out_batch_std"] > 0.0 and alive["diag/dead_frac/enc_stem"] < 1.0
    # Kill the first layer: biases far below zero make every ReLU output 0.
    dead = jax.tree.map(lambda a: a, params)
    dead["enc_stem"] = {**dead["enc_stem"], "bias": jnp.full_like(dead["enc_stem"]["bias"], -100.0)}
    m = diag(dead)
    assert float(m["diag/dead_frac/enc_stem"]) == 1.0
    # One image for every input (the plateau), up to rounding in the batch's std.
    assert float(m["diag/out_batch_std"]) == pytest.approx(0.0, abs=1e-6)
    assert float(m["diag/grad_norm/enc_stem"]) == 0.0  # nothing reaches the dead layer
    assert float(m["diag/grad_norm/dec_out"]) > 0.0


def test_diagnostics_flag_logs_and_plots(tmp_path, tiny_mnist):
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.diagnostics": True, "train.epochs": 1})
    train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    (rec,) = records(tmp_path / "run")
    assert 0.0 <= rec["train/diag/dead_frac/enc_conv0"] <= 1.0
    assert rec["train/diag/grad_norm/dec_up2"] > 0.0 and "train/diag/out_batch_std" in rec
    assert (tmp_path / "run" / "diagnostics.png").exists()


def test_resampled_epochs_draw_from_the_whole_split(tmp_path, tiny_mnist):
    cfg = rj.get_preset("mnist_ae", {**TINY, "data.resample_train": True, "data.train_examples": 64,
                                     "train.epochs": 2})
    summary = train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    assert [r["steps"] for r in records(tmp_path / "run")] == [2, 2]  # 64 images per epoch
    # drawn from all 256 but the 32 validation images
    assert summary["train_examples"] == 224 and summary["resample_train"]
    assert summary["val_recon_floor"] == 0.0  # MSE: a perfect reconstruction scores 0
    first = set(np.asarray(rj.epoch_permutation(cfg.train.seed, 0, 224))[:64].tolist())
    second = set(np.asarray(rj.epoch_permutation(cfg.train.seed, 1, 224))[:64].tolist())
    assert first != second  # each epoch its own images


def test_recon_floor_is_the_least_loss_a_reconstruction_can_score(key):
    """BCE's floor is the targets' entropy: the loss at output == target, below any other
    output; MSE's is 0; uint8 images read as pixel/255."""
    from raegan_jax import losses
    pixels = jax.random.randint(key, (4, 8, 8, 3), 1, 255).astype(jnp.uint8)  # inside (0, 1)
    x = np.asarray(pixels, np.float64) / 255.0
    floor = losses.recon_floor(np.asarray(pixels), "bce")
    assert floor == pytest.approx(losses.recon_floor(x, "bce"))
    exact = losses.recon_loss(jnp.log(x / (1 - x)).astype(jnp.float32), jnp.asarray(x, jnp.float32),
                              "bce").mean()
    assert float(exact) == pytest.approx(floor, rel=1e-5)
    for shift in (0.3, -0.3):
        worse = losses.recon_loss(jnp.log(x / (1 - x)).astype(jnp.float32) + shift,
                                  jnp.asarray(x, jnp.float32), "bce").mean()
        assert float(worse) > floor + 1e-3
    assert losses.recon_floor(np.zeros((1, 2, 2, 1), np.uint8), "bce") == 0.0  # black is certain
    assert losses.recon_floor(np.asarray(pixels), "mse") == 0.0
    with pytest.raises(ValueError, match="l1"):
        losses.recon_floor(x, "l1")


@pytest.mark.parametrize("shape", [(3, 5, 32, 32, 3), (7, 28, 28, 1), (16, 16, 2)])
def test_ssim_is_dm_pix_ssim(key, shape):
    """The eval's SSIM (its window as matrix products) equals dm-pix's: per pass (vmapped,
    as the eval step calls it), per image of a batch, on one image."""
    import dm_pix as pix
    from raegan_jax import losses
    k1, k2 = jax.random.split(key)
    b = jax.random.uniform(k1, shape[1:] if len(shape) == 5 else shape)
    a = jnp.clip(b + 0.2 * jax.random.normal(k2, shape), 0.0, 1.0)
    if len(shape) == 5:
        ours = jax.vmap(lambda o: losses.ssim(o, b))(a)
        ref = jax.vmap(lambda o: pix.ssim(o, b))(a)
    else:
        ours, ref = losses.ssim(a, b), pix.ssim(a, b)
    assert ours.shape == ref.shape == shape[:-3]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=2e-6)
    assert float(losses.ssim(b, b).mean()) == pytest.approx(1.0, abs=1e-5)  # identical images
    assert float(ours.mean()) < 0.99  # noise lowers it
