"""The remedies as config fields: learning-rate schedules, clipping, init_from, the AE's
weight average."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax.checkpoint import CheckpointError
from raegan_jax.parallel import make_mesh
from raegan_jax.state import learning_rate, make_optimizers
from raegan_jax.runs import init_from as _init_from
from raegan_jax.train import train_and_evaluate

from conftest import TINY


def test_warmup_then_constant_and_cosine_schedules():
    cfg = rj.get_preset("cifar10_ae", {"train.warmup_steps": 10})
    lr = learning_rate(cfg, 1e-3)
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-4) and float(lr(50)) == pytest.approx(1e-3)
    cfg = rj.get_preset("cifar10_ae", {"train.lr_schedule": "cosine", "train.warmup_steps": 10,
                                       "train.decay_steps": 110})
    lr = learning_rate(cfg, 1e-3)
    assert float(lr(10)) == pytest.approx(1e-3) and float(lr(60)) == pytest.approx(5e-4, rel=1e-3)
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-9)
    # decay_steps=0 means the whole run: epochs x steps per epoch.
    cfg = rj.get_preset("cifar10_ae", {"train.lr_schedule": "cosine", "train.epochs": 4})
    assert float(learning_rate(cfg, 1e-3, steps_per_epoch=25)(100)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(rj.ConfigError, match="steps_per_epoch"):
        rj.make_train_step(cfg)  # a cosine over "the whole run" needs its length


def test_a_cooldown_decays_the_constant_rate_over_the_last_updates():
    cfg = rj.get_preset("cifar10_ae", {"train.epochs": 10, "train.cooldown_fraction": 0.4,
                                       "train.warmup_steps": 5})
    lr = learning_rate(cfg, 1e-3, steps_per_epoch=10)  # the cool-down: steps 60..100
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(1e-3)
    assert float(lr(60)) == pytest.approx(1e-3) and float(lr(80)) == pytest.approx(5e-4)
    assert float(lr(99)) == pytest.approx(2.5e-5) and float(lr(100)) == 0.0
    from raegan_jax.steps import needs_epoch_length
    assert needs_epoch_length(cfg)  # it ends with the run
    with pytest.raises(rj.ConfigError, match="inside the 70-step warm-up"):
        learning_rate(rj.get_preset("cifar10_ae", {"train.epochs": 10, "train.cooldown_fraction": 0.4,
                                                   "train.warmup_steps": 70}), 1e-3, 10)
    for over, match in [({"train.cooldown_fraction": 1.0}, r"\[0, 1\)"),
                        ({"train.cooldown_fraction": 0.1, "train.lr_schedule": "cosine"}, "decays already"),
                        ({"model.family": "aegan", "train.cooldown_fraction": 0.1}, "every step"),
                        ({"model.family": "rae", "model.passes": 2, "train.ae_stage_epochs": 5,
                          "train.cooldown_fraction": 0.1}, "every step")]:
        with pytest.raises(rj.ConfigError, match=match):
            rj.get_preset("cifar10_ae", over)


def test_a_run_whose_schedule_ends_with_it_cannot_change_its_length():
    from raegan_jax.runs import config_mismatch
    base = rj.get_preset("cifar10_ae", {"train.cooldown_fraction": 0.2})
    longer = rj.get_preset("cifar10_ae", {"train.cooldown_fraction": 0.2, "train.epochs": 250})
    assert "200 epochs, not 250" in config_mismatch(base, longer)
    plain = rj.get_preset("cifar10_ae")
    assert config_mismatch(plain, rj.get_preset("cifar10_ae", {"train.epochs": 250})) is None
    cosine = rj.get_preset("cifar10_ae", {"train.lr_schedule": "cosine"})
    assert "schedule ends with the run" in config_mismatch(
        cosine, rj.get_preset("cifar10_ae", {"train.lr_schedule": "cosine", "train.epochs": 9}))


def test_gradient_clipping_clips_before_adam(key):
    cfg = rj.get_preset("mnist_ae", {"train.grad_clip_norm": 0.5})
    ae_tx, _ = make_optimizers(cfg)
    params = {"w": jnp.zeros((3,))}
    g = {"w": jnp.asarray([3.0, 4.0, 0.0])}  # norm 5 -> clipped to norm 0.5
    state = ae_tx.init(params)
    _, state = ae_tx.update(g, state, params)
    adam_state = state[1][0]
    np.testing.assert_allclose(np.asarray(adam_state.mu["w"]), 0.1 * np.array([0.3, 0.4, 0.0]), rtol=1e-6)


def test_d_adam_moments_are_ds_own():
    """``train.d_b1`` and ``train.d_eps`` set D's Adam and leave the AE's at optax's defaults;
    out-of-range values are one clear error."""
    cfg = rj.get_preset("mnist_aegan", {"train.d_b1": 0.5, "train.d_eps": 1.0, "train.warmup_steps": 0})
    ae_tx, d_tx = make_optimizers(cfg)
    params = {"w": jnp.zeros((2,))}
    g = {"w": jnp.asarray([1e-3, -2.0])}
    d_up, d_state = d_tx.update(g, d_tx.init(params), params)
    ae_up, _ = ae_tx.update(g, ae_tx.init(params), params)
    # First Adam step, bias-corrected: m = g, v = g^2, update = -lr g / (|g| + eps).
    np.testing.assert_allclose(np.asarray(d_state[0].mu["w"]), 0.5 * np.asarray(g["w"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d_up["w"]), -1e-3 * np.array([1e-3 / 1.001, -2.0 / 3.0]),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ae_up["w"]), -cfg.train.ae_lr * np.array([1.0, -1.0]),
                               rtol=1e-4)  # eps 1e-8: a step of the rate, whatever |g|
    for over, field in (({"train.d_b1": 1.0}, "train.d_b1"), ({"train.d_eps": 0.0}, "train.d_eps")):
        with pytest.raises(rj.ConfigError, match=field):
            rj.get_preset("mnist_aegan", over)


def test_ae_weight_average_follows_every_step_and_is_what_eval_uses(key):
    # A GAN in the one program: the first steps are D's (the AE stands still), then the AE's.
    cfg = rj.get_preset("mnist_aegan", {"train.ae_ema": 0.3, "train.batch_size": 8,
                                        "train.ae_stage_epochs": 0, "train.warmup_steps": 0,
                                        "gan.threshold_ema": 0, "gan.threshold": 0.01})
    assert rj.create_train_state(rj.get_preset("mnist_aegan"), key).ae_ema is None  # off by default
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    step, ev = rj.make_train_step(cfg, steps_per_epoch=10), rj.make_eval_step(cfg)
    state = rj.create_train_state(cfg, key)
    host = lambda t: jax.tree.map(np.asarray, jax.device_get(t))  # noqa: E731 (the state is donated)
    want, stages = host(state.ae_params), []
    for t in range(6):
        stages.append(int(state.stage))
        state, _ = step(state, x)
        d = min(0.3, (1 + t) / (10 + t))  # ramped up: 0.1, 0.18, 0.25, then 0.3
        want = jax.tree.map(lambda e, p: d * e + (1 - d) * p, want, host(state.ae_params))
    assert set(stages) == {rj.STAGE_D, rj.STAGE_AE}, stages  # both kinds of step were averaged
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 host(state.ae_ema), want)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(host(state.ae_ema)),
                                                         jax.tree.leaves(host(state.ae_params))))
    both = host(ev(state, x))
    averaged = both["recon_loss"]
    assert averaged == pytest.approx(host(ev(state.replace(ae_params=state.ae_ema, ae_ema=None), x)
                                          ["recon_loss"]))
    live = host(ev(state.replace(ae_ema=None), x))
    assert averaged != pytest.approx(live["recon_loss"])
    # The live AE's loss comes along, for comparing the two in one run; not without an average.
    assert both["recon_loss_live"] == pytest.approx(live["recon_loss"])
    assert "recon_loss_live" not in live


def test_d_weight_average_follows_d_and_is_the_d_eval_reads(key):
    # The one program: D learns in the first steps, then the AE (D stands still).
    cfg = rj.get_preset("mnist_aegan", {"gan.d_ema": 0.5, "train.batch_size": 8,
                                        "train.ae_stage_epochs": 0, "train.warmup_steps": 0,
                                        "gan.threshold_ema": 0, "gan.threshold": 0.01})
    assert rj.create_train_state(rj.get_preset("mnist_aegan"), key).d_ema is None  # off by default
    assert rj.create_train_state(rj.get_preset("mnist_ae", {"gan.d_ema": 0.5}), key).d_ema is None
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    step, ev = rj.make_train_step(cfg, steps_per_epoch=10), rj.make_eval_step(cfg)
    state = rj.create_train_state(cfg, key)
    host = lambda t: jax.tree.map(np.asarray, jax.device_get(t))  # noqa: E731 (the state is donated)
    want, stages, n_d = host(state.d_params), [], 0
    for _ in range(6):
        stages.append(int(state.stage))
        state, _ = step(state, x)
        d = min(0.5, (1 + n_d) / (10 + n_d))  # ramped up over D's own updates
        n_d += stages[-1] == rj.STAGE_D
        want = jax.tree.map(lambda e, p: d * e + (1 - d) * p, want, host(state.d_params))
    assert set(stages) == {rj.STAGE_D, rj.STAGE_AE}, stages  # D's steps and the AE's both count
    assert n_d < 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 host(state.d_ema), want)
    both = host(ev(state, x))
    averaged = host(ev(state.replace(d_params=state.d_ema, d_ema=None), x))
    live = host(ev(state.replace(d_ema=None), x))
    for k in ("d_loss", "d_real_acc", "d_fake_acc"):
        np.testing.assert_allclose(both[k], averaged[k], rtol=1e-6)
        np.testing.assert_allclose(both[k + "_live"], live[k], rtol=1e-6)  # the live D's beside
        assert k + "_live" not in live
    assert both["d_loss"] != pytest.approx(live["d_loss"])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, tiny_mnist):
    wd = tmp_path_factory.mktemp("src") / "ae"
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 1})
    train_and_evaluate(cfg, wd, data_dir=str(tiny_mnist), progress=False)
    return wd, cfg


def _final_ae(wd, cfg):
    from raegan_jax.checkpoint import Checkpointer
    ck = Checkpointer(wd / "checkpoints")
    st = ck.restore(ck.latest_step(), rj.create_train_state(cfg, jax.random.key(0)))
    ck.close()
    return st.ae_params


@pytest.mark.parametrize("where,ema", [("workdir", 0.0), ("checkpoint", 0.0), ("workdir", 0.9)])
def test_init_from_starts_the_ae_from_another_run(source_run, where, ema):
    wd, src_cfg = source_run
    path = wd if where == "workdir" else wd / "checkpoints" / "4"  # named by step
    cfg = rj.get_preset("mnist_aegan", {**TINY, "model.family": "raegan", "model.passes": 2,
                                        "train.init_from": str(path), "train.ae_ema": ema})
    fresh = rj.create_train_state(cfg, jax.random.key(1))
    state = _init_from(cfg, fresh, make_mesh())
    want = _final_ae(wd, src_cfg)
    for a, b in zip(jax.tree.leaves(state.ae_params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # With a weight average on, it starts at the loaded AE, not at the fresh one.
    assert (state.ae_ema is None) == (ema == 0.0)
    for a, b in zip(jax.tree.leaves(state.ae_ema or {}), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(state.d_params), jax.tree.leaves(fresh.d_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # D stays fresh
    assert int(state.step) == 0  # a new run, not a resume


@pytest.mark.parametrize("preset,over,match", [
    ("cifar10_ae", {}, "mnist model cannot start a cifar10 run"),
    ("mnist_ae", {**TINY, "model.latent_dim": 8}, "other layers or shapes"),
    ("mnist_ae", {**TINY, "model.family": "aegan", "train.init_from_d": True}, "holds no discriminator"),
])
def test_init_from_mismatch_is_one_clear_error(source_run, preset, over, match):
    wd, _ = source_run
    cfg = rj.get_preset(preset, {**over, "train.init_from": str(wd)})
    with pytest.raises(rj.ConfigError, match=match):
        _init_from(cfg, rj.create_train_state(cfg, jax.random.key(1)), make_mesh())


def test_init_from_a_missing_path_is_named(tmp_path):
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.init_from": str(tmp_path / "nothing")})
    with pytest.raises(CheckpointError, match="nothing"):
        _init_from(cfg, rj.create_train_state(cfg, jax.random.key(1)), make_mesh())


def _records(wd):
    import json
    drop = ("epoch_seconds", "images_per_sec", "compile_seconds")
    return [{k: v for k, v in json.loads(l).items() if k not in drop}
            for l in (wd / "metrics.jsonl").read_text().splitlines() if l.strip()]


# An RAE-GAN (2 passes) whose first 2 of 3 epochs are the plain AE's stage.
RAEGAN_STAGE = {**TINY, "model.family": "raegan", "model.passes": 2, "train.ae_stage_epochs": 2,
                "train.epochs": 3, "gan.threshold_ema": 0.5}


@pytest.fixture(scope="module")
def raegan_source(tmp_path_factory, tiny_mnist):
    """The RAE-GAN above, without R1, keeping the checkpoint of its stage's end (epoch 2):
    the source of a branch and of another family's AE stage."""
    wd = tmp_path_factory.mktemp("raegan_src") / "raegan"
    train_and_evaluate(rj.get_preset("mnist_aegan", {**RAEGAN_STAGE, "train.keep_epochs": "2"}),
                       wd, data_dir=str(tiny_mnist), progress=False)
    return wd


def test_a_branch_continues_its_source_as_a_run_from_scratch_would(tmp_path, tiny_mnist,
                                                                   raegan_source):
    # The game with D's R1 penalty on: once straight, once as a branch of a run whose game
    # had no penalty, from that run's checkpoint at the end of its AE stage.
    run = lambda wd, over: train_and_evaluate(rj.get_preset("mnist_aegan", {**RAEGAN_STAGE, **over}),  # noqa: E731
                                              wd, data_dir=str(tiny_mnist), progress=False)
    straight = run(tmp_path / "straight", {"gan.r1_weight": 1.0})
    stage_end = raegan_source / "checkpoints" / "8"  # 128 images / 32 = 4 steps an epoch
    branch = run(tmp_path / "branch", {"gan.r1_weight": 1.0, "train.init_from": str(stage_end),
                                       "train.init_from_state": True})
    assert branch["val_recon_loss"] == straight["val_recon_loss"]
    assert branch["d_fake_acc"] == straight["d_fake_acc"]
    branch_recs = _records(tmp_path / "branch")
    for r in branch_recs[:2]:  # epochs 1-2 copied
        assert r.pop("copied_from") == str(raegan_source)
    assert branch_recs == _records(tmp_path / "straight")
    assert branch_recs[2].get("train/d_learns/d_r1", 0) > 0
    # The source's own epoch 3 (no penalty) is not what the branch trained.
    assert _records(raegan_source)[2] != branch_recs[2]


@pytest.mark.parametrize("over,match", [
    ({"train.seed": 1}, "train.seed"),
    ({"train.batch_size": 16}, "train.batch_size"),
    ({"train.epochs": 1}, "leaves nothing to train"),
])
def test_a_branch_from_another_run_is_one_clear_error(source_run, over, match):
    wd, _ = source_run
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 2, "train.init_from": str(wd),
                                     "train.init_from_state": True, **over})
    with pytest.raises(rj.ConfigError, match=match):
        from raegan_jax.runs import branch_from
        branch_from(cfg, rj.create_train_state(cfg, jax.random.key(1)), make_mesh(),
                     workdir=wd.parent / "unused")
    with pytest.raises(rj.ConfigError, match="init_from_state"):
        rj.get_preset("mnist_ae", {"train.init_from_state": True})


@pytest.fixture(scope="module")
def stage_source(tmp_path_factory, tiny_mnist):
    """A plain AE (with a weight average) trained 3 epochs, keeping epoch 2's checkpoint."""
    wd = tmp_path_factory.mktemp("stage_src") / "ae"
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 3, "train.keep_epochs": "2",
                                     "train.keep_checkpoints": 1})
    train_and_evaluate(cfg, wd, data_dir=str(tiny_mnist), progress=False)
    return wd


@pytest.fixture(scope="module")
def cooled_source(tmp_path_factory, tiny_mnist):
    """``stage_source``'s run with a cool-down over its last third (epoch 3: steps 8-12)."""
    wd = tmp_path_factory.mktemp("cooled_src") / "ae"
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 3, "train.keep_epochs": "2",
                                     "train.cooldown_fraction": 1 / 3})
    train_and_evaluate(cfg, wd, data_dir=str(tiny_mnist), progress=False)
    return wd


def test_a_cooldown_branched_from_a_constant_rate_equals_one_from_scratch(
        tmp_path, tiny_mnist, stage_source, cooled_source):
    """The warmup-stable-decay recipe: the constant-rate run's epoch-2 checkpoint, continued
    with the cool-down (its optax state gains a schedule count), ends where the run with
    that cool-down from scratch does, bit for bit; and the cool-down changed the epoch."""
    cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 3, "train.cooldown_fraction": 1 / 3,
                                     "train.init_from": str(stage_source / "checkpoints" / "8"),
                                     "train.init_from_state": True})
    branch = train_and_evaluate(cfg, tmp_path / "branch", data_dir=str(tiny_mnist), progress=False)
    cooled = _records(cooled_source)
    assert branch["val_recon_loss"] == json.loads((cooled_source / "summary.json").read_text())[
        "val_recon_loss"]
    assert _records(tmp_path / "branch")[2] == cooled[2]
    assert cooled[2]["train/loss"] != _records(stage_source)[2]["train/loss"]
    assert cooled[1] == _records(stage_source)[1]  # constant until the cool-down starts


def test_a_source_cooling_down_only_after_the_stage_can_stand_in_for_it():
    """A cool-down that starts once the stage has ended leaves the stage's updates those
    of a constant rate (bit for bit: test_an_ae_run_stands_in..., the cooled source); one
    that starts inside the stage is named."""
    from raegan_jax.runs import ae_stage_mismatch
    rae = rj.get_preset("cifar10_rae")  # an AE stage of 120 epochs, 252 steps each
    ae = lambda f: rj.get_preset("cifar10_ae", {"train.cooldown_fraction": f,  # noqa: E731
                                                "train.batch_size": 32})  # the stage's batch
    assert ae_stage_mismatch(ae(0.4), rae, 8068) == []  # 200 epochs cooling from epoch 120
    assert ae_stage_mismatch(ae(0.41), rae, 8068) == ["train.cooldown_fraction"]


def test_ds_own_settings_leave_the_ae_stage_as_it_is():
    """D's Adam (rate, b1, eps) and the game's settings change no AE-stage update: a plain
    AE run stands in for the stage of a GAN run that sets them; the AE's own rate and
    batch size do not (the cifar10_ae preset's batch 16 is not the stage's 32)."""
    from raegan_jax.runs import ae_stage_mismatch
    assert ae_stage_mismatch(rj.get_preset("cifar10_ae", {"train.epochs": 120}),
                             rj.get_preset("cifar10_aegan"), 8068) == ["train.batch_size"]
    ae = rj.get_preset("cifar10_ae", {"train.epochs": 120, "train.batch_size": 32})
    gan = lambda over: rj.get_preset("cifar10_aegan", over)  # noqa: E731
    assert ae_stage_mismatch(ae, gan({"train.d_lr": 1e-3, "train.d_b1": 0.5, "train.d_eps": 1e-4,
                                      "gan.adv_weight": 0.1}), 8068) == []
    assert ae_stage_mismatch(ae, gan({"train.ae_lr": 5e-3}), 8068) == ["train.ae_lr"]


@pytest.mark.parametrize("family,over", [
    ("rae", {}),  # the weight average carried on
    ("raegan", {"train.ae_ema": 0.0, "gan.threshold_ema": 0.5, "gan.r1_weight": 1.0}),  # dropped
])
def test_an_ae_run_stands_in_for_the_ae_stage_bit_for_bit(tmp_path, tiny_mnist, stage_source,
                                                          cooled_source, family, over):
    """train.ae_stage_from: a plain-AE run's epoch-2 checkpoint replaces a 2-epoch AE stage,
    and the run ends exactly where the run that trained its own stage does."""
    from raegan_jax.checkpoint import Checkpointer
    ck = Checkpointer(stage_source / "checkpoints", create=False)
    assert ck.all_steps() == [8, 12]  # keep_epochs kept epoch 2 (4 steps an epoch) beside the newest
    ck.close()
    cfg = {**TINY, "model.family": family, "model.passes": 2, "train.ae_stage_epochs": 2,
           "train.epochs": 3, **over}
    run = lambda wd, o: train_and_evaluate(rj.get_preset("mnist_ae", {**cfg, **o}), wd,  # noqa: E731
                                           data_dir=str(tiny_mnist), progress=False)
    straight = run(tmp_path / "straight", {})
    shared = run(tmp_path / "shared", {"train.ae_stage_from": str(stage_source)})
    for k in ("val_recon_loss", "val_psnr", "val_ssim", "d_fake_acc", "d_real_acc"):
        assert shared.get(k) == straight.get(k), k
    if family == "rae":  # a source that cools down over its epoch 3 (its optax state has a
        # schedule count the constant rate's lacks) stands in for the stage as well
        assert run(tmp_path / "shared_cooled", {"train.ae_stage_from": str(cooled_source)}
                   )["val_recon_loss"] == straight["val_recon_loss"]
    mine, theirs = _records(tmp_path / "shared"), _records(tmp_path / "straight")
    assert mine[2] == theirs[2]  # the family's own epoch, every logged number
    for m, t in zip(mine[:2], theirs[:2]):  # the stage's epochs: the source's training records
        assert not any(k.startswith("val/") for k in m)
        assert m == {**{k: v for k, v in t.items() if not k.startswith("val/")},
                     "copied_from": str(stage_source)}
    from raegan_jax.workdir import read_records  # its own epoch's speed only, not the source's
    assert shared["images_per_sec"] == read_records(tmp_path / "shared")[2]["images_per_sec"]
    if family == "raegan":  # D's accuracy figure plots the epochs that were evaluated
        assert (tmp_path / "shared" / "d_accuracy.png").stat().st_size > 0


@pytest.mark.parametrize("over,err,match", [
    ({"train.seed": 1}, rj.ConfigError, "train.seed"),
    ({"train.ae_lr": 1e-3}, rj.ConfigError, "train.ae_lr"),
    ({"train.ae_stage_epochs": 1, "train.epochs": 2}, CheckpointError, "keep_epochs=1"),
])
def test_an_ae_stage_from_another_training_is_one_clear_error(tmp_path, tiny_mnist, stage_source,
                                                              over, err, match):
    cfg = rj.get_preset("mnist_ae", {**TINY, "model.family": "rae", "model.passes": 2,
                                     "train.ae_stage_epochs": 2, "train.epochs": 3,
                                     "train.ae_stage_from": str(stage_source), **over})
    with pytest.raises(err, match=match):
        train_and_evaluate(cfg, tmp_path / "run", data_dir=str(tiny_mnist), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(rj.ConfigError, match="ae_stage_from"):
        rj.get_preset("cifar10_ae", {"train.ae_stage_from": str(stage_source)})  # no AE stage


def test_a_run_with_a_longer_ae_stage_is_a_source_too(tmp_path, tiny_mnist, raegan_source):
    """An RAE-GAN's AE stage (2 epochs) stands in for an AE-GAN's (2 epochs): same AE, bit for
    bit; a source whose stage ends earlier than the run's is refused, naming both epochs."""
    run = lambda wd, o: train_and_evaluate(rj.get_preset("mnist_aegan", {**RAEGAN_STAGE, **o}), wd,  # noqa: E731
                                           data_dir=str(tiny_mnist), progress=False)
    aegan = {"model.family": "aegan", "model.passes": 1, "gan.r1_weight": 1.0}
    straight = run(tmp_path / "straight", aegan)
    shared = run(tmp_path / "shared", {**aegan, "train.ae_stage_from": str(raegan_source)})
    assert shared["val_recon_loss"] == straight["val_recon_loss"]
    assert shared["d_fake_acc"] == straight["d_fake_acc"]
    assert _records(tmp_path / "shared")[2] == _records(tmp_path / "straight")[2]
    with pytest.raises(rj.ConfigError, match="ends at epoch 2, before 3"):
        run(tmp_path / "longer", {**aegan, "train.ae_stage_epochs": 3, "train.epochs": 4,
                                  "train.ae_stage_from": str(raegan_source)})
