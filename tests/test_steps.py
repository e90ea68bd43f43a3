import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax import stages, steps
from raegan_jax.stages import STAGE_AE, STAGE_D, STAGE_RECON
from conftest import TINY

SMALL = {"model.conv_widths": "4,8,8", "model.dense_widths": "16", "model.latent_dim": 4,
         "model.disc_widths": "16,8", "train.batch_size": 8,
         "train.warmup_steps": 0,  # the first step moves the weights
         # the report's rule (one batch's fake accuracy), whose boundaries the tests pin
         "gan.threshold_on": "fake", "gan.threshold_ema": 0.0,
         "train.ae_stage_epochs": 0}  # mnist_aegan trains its AE alone first; these step at once


def small_cfg(family="aegan", **kw):
    over = dict(SMALL, **{"model.family": family})
    if family in ("rae", "raegan"):
        over["model.passes"] = 2
    over.update(kw)
    return rj.get_preset("mnist_aegan", over)


def batch(n=8, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


def with_d_bias(state, bias):
    """A discriminator that outputs the constant logit ``bias`` for every image."""
    d = jax.tree.map(lambda x: x, state.d_params)
    last = sorted(d)[-1]
    d[last] = {"kernel": jnp.zeros_like(d[last]["kernel"]), "bias": jnp.full_like(d[last]["bias"], bias)}
    return state.replace(d_params=d)


def copy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def assert_identical(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def assert_changed(a, b):
    assert any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("impl", ["select", "switch"])
@pytest.mark.parametrize("family", ["aegan", "raegan"])
def test_d_step_freezes_ae_and_ae_step_freezes_d(impl, family, key):
    cfg = small_cfg(family, **{"gan.stage_impl": impl})
    step = rj.make_train_step(cfg, steps_per_epoch=10)
    state = rj.create_train_state(cfg, key)
    # D stage: every AE leaf (params, Adam moments, count) stays bit-identical.
    state = state.replace(stage=jnp.int32(STAGE_D))
    before_ae, before_d = copy((state.ae_params, state.ae_opt_state)), copy((state.d_params, state.d_opt_state))
    state, m = step(state, batch())
    assert int(m["d_updates"]) == 1 and int(m["ae_updates"]) == 0
    assert_identical(before_ae, (state.ae_params, state.ae_opt_state))
    assert_changed(before_d, (state.d_params, state.d_opt_state))
    # AE stage: every D leaf stays bit-identical.
    state = state.replace(stage=jnp.int32(STAGE_AE))
    before_ae, before_d = copy((state.ae_params, state.ae_opt_state)), copy((state.d_params, state.d_opt_state))
    state, m = step(state, batch(seed=2))
    assert int(m["d_updates"]) == 0 and int(m["ae_updates"]) == 1
    assert_identical(before_d, (state.d_params, state.d_opt_state))
    assert_changed(before_ae, (state.ae_params, state.ae_opt_state))
    # Reconstruction-only stage: D frozen too.
    state = state.replace(stage=jnp.int32(STAGE_RECON))
    before_d = copy((state.d_params, state.d_opt_state))
    state, _ = step(state, batch(seed=3))
    assert_identical(before_d, (state.d_params, state.d_opt_state))


@pytest.mark.parametrize("impl", ["select", "switch"])
def test_threshold_rule_flips_stage_on_device(impl, key):
    cfg = small_cfg("raegan", **{"gan.stage_impl": impl})
    step = rj.make_train_step(cfg, steps_per_epoch=10)
    state = rj.create_train_state(cfg, key)
    assert int(state.stage) == STAGE_D
    # D calls everything fake: accuracy on fakes 1.0 > 0.5 -> the AE's turn.
    state, m = step(with_d_bias(state, -30.0), batch())
    assert np.allclose(m["d_fake_acc"], 1.0) and int(m["stage"]) == STAGE_D
    assert int(state.stage) == STAGE_AE
    # Still fooled nobody: the AE keeps training.
    state, m = step(with_d_bias(state, -30.0), batch())
    assert int(m["stage"]) == STAGE_AE and int(state.stage) == STAGE_AE
    # D calls everything real: accuracy on fakes 0.0 <= 0.5 -> back to D.
    state, m = step(with_d_bias(state, 30.0), batch())
    assert np.allclose(m["d_fake_acc"], 0.0) and int(state.stage) == STAGE_D
    state, m = step(with_d_bias(state, 30.0), batch())
    assert int(m["stage"]) == STAGE_D and int(state.stage) == STAGE_D
    # Pretraining stage is left alone by the rule.
    state, _ = step(with_d_bias(state.replace(stage=jnp.int32(STAGE_RECON)), -30.0), batch())
    assert int(state.stage) == STAGE_RECON


@pytest.mark.parametrize("stage,acc,expected", [
    (STAGE_D, 0.5, STAGE_D), (STAGE_D, 0.5001, STAGE_AE), (STAGE_D, 0.2, STAGE_D),
    (STAGE_AE, 0.5, STAGE_D), (STAGE_AE, 0.51, STAGE_AE), (STAGE_AE, 1.0, STAGE_AE),
    (STAGE_RECON, 0.9, STAGE_RECON)])
def test_next_stage_boundaries(stage, acc, expected):
    got = stages.next_stage("threshold", jnp.int32(stage), jnp.float32(acc), 0.5)
    assert int(got) == expected
    assert int(stages.next_stage("alternate", jnp.int32(stage), jnp.float32(acc), 0.5)) == stage


@pytest.mark.parametrize("levers", [{}, {"gan.r1_weight": 1.0, "gan.colour_weight": 5.0}])
def test_select_and_switch_agree(key, levers):
    states, metrics = {}, {}
    for impl in ("select", "switch"):
        cfg = small_cfg("raegan", **{"gan.stage_impl": impl, **levers})
        step = rj.make_train_step(cfg, steps_per_epoch=10)
        state = rj.create_train_state(cfg, key)
        ms = []
        for i in range(6):
            state, m = step(state, batch(seed=i))
            ms.append(m)
        states[impl], metrics[impl] = state, ms
    assert int(states["select"].stage) == int(states["switch"].stage)
    for a, b in zip(jax.tree.leaves(states["select"]), jax.tree.leaves(states["switch"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert [int(m["stage"]) for m in metrics["select"]] == [int(m["stage"]) for m in metrics["switch"]]
    for k in ("d_r1", "colour_loss"):  # the levers' metrics: the same in both forms
        if k in metrics["select"][0]:
            np.testing.assert_allclose([np.asarray(m[k]) for m in metrics["select"]],
                                       [np.asarray(m[k]) for m in metrics["switch"]], rtol=1e-4, atol=1e-6)
    assert ("d_r1" in metrics["select"][0]) == bool(levers)


def test_alternate_updates_both_networks(key):
    cfg = small_cfg("aegan", **{"gan.stage_policy": "alternate"})
    step = rj.make_train_step(cfg, steps_per_epoch=10)
    state = rj.create_train_state(cfg, key)
    before = copy((state.ae_params, state.d_params))
    state, m = step(state, batch())
    assert int(m["ae_updates"]) == 1 and int(m["d_updates"]) == 1
    assert_changed(before[0], state.ae_params)
    assert_changed(before[1], state.d_params)
    # Pretraining stage: only the AE learns.
    state = state.replace(stage=jnp.int32(STAGE_RECON))
    before_d = copy((state.d_params, state.d_opt_state))
    state, m = step(state, batch())
    assert int(m["d_updates"]) == 0
    assert_identical(before_d, (state.d_params, state.d_opt_state))


@pytest.mark.parametrize("family", ["ae", "rae", "aegan", "raegan"])
def test_no_recompilation_and_state_is_donated(family, key):
    cfg = small_cfg(family)
    step = rj.make_train_step(cfg, steps_per_epoch=10)
    state = rj.create_train_state(cfg, key)
    for i in range(12):
        if i % 4 == 3 and cfg.is_gan:  # stage changes from the host as well as on device
            state = state.replace(stage=jnp.int32(i % 3))
        old_leaf = state.ae_params[sorted(state.ae_params)[0]]["kernel"]
        state, _ = step(state, batch(seed=i))
        if i > 0:
            assert old_leaf.is_deleted(), "the state's buffers were not donated"
    assert step.compiles() == 1
    assert int(state.step) == 12


def test_traced_once_under_chex(key):
    cfg = small_cfg("raegan")
    b = steps.bind(cfg, steps_per_epoch=10)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(state, x):
        return steps.train_step_fn(b, state, x)

    state = rj.create_train_state(cfg, key)
    for i in range(5):
        state, _ = fn(state, batch(seed=i))


def test_metrics_structure(key):
    cfg = small_cfg("raegan")
    state, m = rj.make_train_step(cfg, steps_per_epoch=10)(rj.create_train_state(cfg, key), batch())
    assert m["recon_loss"].shape == (2,) and m["d_fake_acc"].shape == (2,)
    assert m["adv_loss"].shape == (2,)
    for k in ("d_loss", "d_real_acc", "stage", "loss", "recon_objective", "adv_weighted",
              "ae_updates", "d_updates", "finite"):
        assert m[k].shape == ()
    ev = rj.make_eval_step(cfg)(state, batch())
    for k in ("recon_loss", "d_fake_acc", "psnr", "ssim"):
        assert ev[k].shape == (2,)


def test_eval_weights_ignore_padding(key):
    cfg = small_cfg("aegan")
    state = rj.create_train_state(cfg, key)
    ev = rj.make_eval_step(cfg)
    x = batch()
    full = ev(state, x[:4].repeat(2, axis=0))
    padded = ev(state, jnp.concatenate([x[:4], jnp.zeros_like(x[:4])]),
                jnp.asarray([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32))
    for k in ("recon_loss", "d_loss", "d_real_acc", "d_fake_acc", "d_real_prob", "d_fake_prob"):
        np.testing.assert_allclose(np.asarray(padded[k]), np.asarray(full[k]), rtol=1e-5)


def test_multi_step_equals_single_steps(key):
    """N steps in one lax.scan over the on-device dataset == N single calls."""
    cfg = small_cfg("raegan")
    data = (np.asarray(jax.random.uniform(jax.random.key(9), (40, 28, 28, 1))) * 255).astype(np.uint8)
    spe = 40 // 8
    perm = rj.epoch_permutation(0, 0, 40)
    single = rj.make_train_step(cfg, steps_per_epoch=spe)
    s1 = rj.create_train_state(cfg, key)
    for k in range(spe):
        s1, _ = single(s1, jnp.asarray(data)[perm[k * 8:(k + 1) * 8]])
    multi = rj.make_multi_step(cfg, 3, steps_per_epoch=spe)
    s2 = rj.create_train_state(cfg, key)
    counts = []
    batches = rj.sweep_batches(data, np.asarray(perm), spe, 8, multi.mesh)
    assert batches.shape == (spe, 8, 28, 28, 1)
    for _ in range(2):  # 3 + 2 steps: the second call stops at the epoch's end
        s2, sums = multi(s2, batches)
        counts.append(int(sums["count"]))
    assert counts == [3, 2] and int(s2.step) == spe
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(sums["nonfinite_step"]) == -1
    assert multi.compiles() == 1


def test_in_chunks_keeps_every_sample_in_its_row():
    from raegan_jax.parallel import in_chunks
    x = jnp.arange(24.0).reshape(12, 2)
    # a per-sample function, output batch on axis 1 (like the recursion's [passes, B, ...])
    fn = lambda v: jnp.stack([v * 2, v.sum(axis=1, keepdims=True) + v])
    for chunks in (1, 2, 3, 4, 6, 12):
        np.testing.assert_array_equal(in_chunks(fn, chunks, batch_axis=1)(x), fn(x))
    with pytest.raises(ValueError, match="does not divide the batch of 12"):
        in_chunks(fn, 5)(x)


def test_batch_chunks_auto_and_divisors():
    cfg = rj.get_preset("cifar10_rae")
    assert steps.batch_chunks(cfg, 128) == (4 if jax.default_backend() == "cpu" else 1)
    assert steps.batch_chunks(rj.get_preset("cifar10_rae", {"model.batch_chunks": 4}), 6) == 3
    assert steps.batch_chunks(rj.get_preset("mnist_ae", {"model.batch_chunks": 8}), 8) == 8


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_chunked_batch_computes_the_same_step(dataset, key):
    # The AE on 4 interleaved chunks: the same logits, the same training trajectory.
    over = {**SMALL, "model.passes": 2}
    if dataset == "cifar10":  # the CIFAR-10 AE's 4 conv stages, narrow
        over.update({"model.conv_widths": "4,4,8,8", "model.dense_widths": "", "model.latent_dim": 0})
    base = "mnist_aegan" if dataset == "mnist" else "cifar10_raegan"
    x = jax.random.uniform(key, (8, 28, 28, 1) if dataset == "mnist" else (8, 32, 32, 3))
    out = {}
    for chunks in (1, 4):
        cfg = rj.get_preset(base, {**over, "model.family": "raegan", "model.batch_chunks": chunks})
        state = rj.create_train_state(cfg, jax.random.key(0))
        logits = steps.ae_logits(steps.bind(cfg), state.ae_params, x)
        step = rj.make_train_step(cfg, steps_per_epoch=10)
        for i in range(3):
            state, m = step(state, jax.random.uniform(jax.random.key(i), x.shape))
        out[chunks] = (logits, state, m)
    np.testing.assert_allclose(out[1][0], out[4][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(out[1][1:]), jax.tree.leaves(out[4][1:])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stage", [STAGE_AE, STAGE_D, STAGE_RECON])
def test_stage_programs_do_what_the_one_program_does_in_that_stage(stage, key):
    """The program specialised to a stage computes the one program's update in that stage,
    with less work: a D step takes no AE gradient, a reconstruction step never runs D."""
    cfg = small_cfg("raegan", **{"gan.stage_policy": "phases"})
    one = rj.make_train_step(cfg, steps_per_epoch=10, donate=False)
    fixed = rj.make_train_step(cfg, steps_per_epoch=10, donate=False, stage=stage)
    state = rj.create_train_state(cfg, key).replace(stage=jnp.int32(stage))
    a, m_one = one(state, batch())
    b, m_fixed = fixed(state, batch())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    assert int(b.stage) == stage
    for k in m_fixed:
        np.testing.assert_allclose(np.asarray(m_fixed[k]), np.asarray(m_one[k]), rtol=1e-5,
                                   atol=1e-6, err_msg=k)
    assert (int(m_fixed["ae_updates"]), int(m_fixed["d_updates"])) == (int(stage != STAGE_D),
                                                                       int(stage == STAGE_D))
    if stage == STAGE_RECON:
        assert "d_loss" not in m_fixed
    flops = lambda s: s.jitted.lower(state, batch()).compile().cost_analysis()["flops"]  # noqa: E731
    assert flops(fixed) < (0.6 if stage == STAGE_D else 0.95) * flops(one)


def test_a_phases_run_compiles_one_program_per_stage(tmp_path, tiny_mnist, monkeypatch):
    import raegan_jax.train as tr
    made = []  # (family, stage, program) of every sweep program the loop builds

    def record(cfg, *args, stage=None, **kw):
        made.append((cfg.model.family, stage, real(cfg, *args, stage=stage, **kw)))
        return made[-1][2]

    import raegan_jax.programs as programs
    real = programs.make_multi_step
    monkeypatch.setattr(programs, "make_multi_step", record)
    cfg = rj.get_preset("mnist_aegan", {**TINY, "gan.stage_policy": "phases", "train.epochs": 2})
    tr.train_and_evaluate(cfg, tmp_path, data_dir=str(tiny_mnist), progress=False)
    # no one-program step: never needed
    assert [(f, s) for f, s, _ in made] == [("aegan", s) for s in (STAGE_AE, STAGE_D, STAGE_RECON)]
    assert [p.compiles() for _, _, p in made] == [1, 1, 1]
    made.clear()
    staged = rj.get_preset("mnist_aegan", {**TINY, "train.ae_stage_epochs": 1, "train.epochs": 2})
    tr.train_and_evaluate(staged, tmp_path / "staged", data_dir=str(tiny_mnist), progress=False)
    # the plain AE's program for the stage, the one program of the game after it
    assert sorted((f, s) for f, s, _ in made) == [("ae", None), ("aegan", None)]
    assert [p.compiles() for _, _, p in made] == [1, 1]
