"""The game's balance controls: adaptive adversarial weight, threshold controllers,
per-pass weighting, and the balance measures a run reports."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax import losses, stages, steps
from raegan_jax.config import ConfigError
from raegan_jax.models import to_images
from raegan_jax.stages import STAGE_AE, STAGE_D
from raegan_jax.train import train_and_evaluate
from conftest import TINY
from test_steps import batch, small_cfg, with_d_bias


def brute_force(cfg, state, x):
    """Per-pass gradients at the decoder's last kernel, each loss differentiated alone."""
    b = steps.bind(cfg, steps_per_epoch=10)
    pidx = steps.pass_index(b, state, x.shape[0])
    last = b.ae.last_layer

    def parts(p):
        logits = steps.ae_logits(b, p, x)
        rec = steps.recon_objective(b, logits, x, pidx)[0]
        fake = b.disc.apply({"params": state.d_params}, to_images(logits))
        return rec, losses.adversarial_loss(fake, cfg.gan.adv_loss)

    g_rec = jax.jit(jax.grad(lambda p: parts(p)[0]))(state.ae_params)[last]["kernel"]
    g_adv = jax.jit(jax.jacrev(lambda p: parts(p)[1]))(state.ae_params)[last]["kernel"]
    return b, pidx, parts, g_rec, list(g_adv)  # g_adv[j]: pass j's adversarial term alone


@pytest.mark.parametrize("family,scope", [("aegan", "shared"), ("raegan", "per_pass")])
def test_adaptive_weight_is_vqgans_and_a_constant(family, scope, key):
    cfg = small_cfg(family, **{"gan.adv_weight_mode": "adaptive", "gan.adaptive_scope": scope,
                               "gan.adv_weight": 0.5})
    state = rj.create_train_state(cfg, key).replace(stage=jnp.int32(STAGE_AE))
    x = batch()
    b, pidx, parts, g_rec, g_adv = brute_force(cfg, state, x)
    norm = lambda t: float(jnp.sqrt(jnp.sum(t ** 2)))
    p = cfg.model.passes
    if scope == "shared":
        want = np.full(p, norm(g_rec) / (norm(sum(g_adv)) + cfg.gan.adaptive_eps))
    else:
        want = np.array([norm(g_rec) / (p * norm(g) + cfg.gan.adaptive_eps) for g in g_adv])
    grads, m, _ = jax.jit(steps._ae_grads, static_argnums=(0, 4))(b, state, x, pidx, True)
    np.testing.assert_allclose(m["adv_lambda"], want, rtol=1e-4)
    # The step's gradient treats λ as a constant: d/dθ [L_rec + Σ_j c_j adv_j], c fixed.
    coef = 0.5 * jnp.asarray(want, jnp.float32)
    np.testing.assert_allclose(m["adv_weighted"], float(coef @ parts(state.ae_params)[1]), rtol=1e-5)
    expect = jax.jit(jax.grad(lambda q: parts(q)[0] + coef @ parts(q)[1]))(state.ae_params)
    for a, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expect)):
        np.testing.assert_allclose(a, e, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("scope", ["shared", "per_pass"])
def test_adaptive_lambda_formula_and_clip(scope):
    # Gradients at W of L_rec (norm 3) and of each pass's adv_j (norms 1 and 4, orthogonal),
    # served by a stand-in for the VJP: the formula alone, no model.
    cfg = small_cfg("raegan", **{"gan.adv_weight_mode": "adaptive", "gan.adaptive_scope": scope,
                                 "gan.adaptive_eps": 1e-6})
    b = steps.bind(cfg, steps_per_epoch=10)
    g_rec, g_adv = jnp.array([3.0, 0, 0]), jnp.array([[0, 1.0, 0], [0, 0, 4.0]])
    vjp_fn = lambda ct: ({b.ae.last_layer: {"kernel": ct[0] * g_rec + ct[1] @ g_adv}},)
    w = jnp.array([1.0, 0.5])
    lam = steps.adaptive_lambda(b, vjp_fn, w)
    want = [3 / np.hypot(1, 2)] * 2 if scope == "shared" else [3 / (2 * 1), 3 / (2 * 4)]
    np.testing.assert_allclose(lam, want, rtol=1e-5)
    clipped = steps.bind(rj.config.apply_overrides(cfg, {"gan.adaptive_max": 0.5}), 10)
    np.testing.assert_allclose(steps.adaptive_lambda(clipped, vjp_fn, w), np.minimum(want, 0.5))


def test_next_stage_hysteresis_band():
    def nxt(stage, acc):
        return int(stages.next_stage("threshold", jnp.int32(stage), jnp.float32(acc), 0.5, 0.2))
    # D hands over only above 0.7; the AE only at 0.3 or below; inside the band nothing moves.
    assert [nxt(STAGE_D, a) for a in (0.2, 0.5, 0.7, 0.71)] == [STAGE_D] * 3 + [STAGE_AE]
    assert [nxt(STAGE_AE, a) for a in (0.9, 0.5, 0.31, 0.3)] == [STAGE_AE] * 3 + [STAGE_D]


def test_running_mean_and_hysteresis_flip_the_stage_on_device(key):
    # (The select form, CPU's default; test_steps checks that switch and select agree.)
    cfg = small_cfg("raegan", **{"gan.stage_impl": "select", "gan.threshold_ema": 0.5,
                                 "gan.hysteresis": 0.2})
    b = steps.bind(cfg, steps_per_epoch=10)

    @jax.jit
    @chex.assert_max_traces(n=1)  # every flip below runs the one compiled program
    def step(state, x):
        return steps.train_step_fn(b, state, x)

    state = rj.create_train_state(cfg, key)
    np.testing.assert_allclose(state.ctrl["fake_acc"], [0.5, 0.5])  # starts at the threshold
    # D's accuracy on fakes per step (forced through D's last bias) and what must follow:
    # running mean m <- (m + acc) / 2; AE above 0.7, D at 0.3 or below, else unchanged.
    script = [(1.0, 0.75, STAGE_AE), (0.0, 0.375, STAGE_AE), (0.0, 0.1875, STAGE_D),
              (1.0, 0.59375, STAGE_D), (1.0, 0.796875, STAGE_AE)]
    for acc, mean, stage_after in script:
        state, m = step(with_d_bias(state, -30.0 if acc else 30.0), batch())
        np.testing.assert_allclose(m["d_fake_acc"], [acc, acc])
        np.testing.assert_allclose(m["rule_acc"], mean, rtol=1e-6)
        np.testing.assert_allclose(state.ctrl["fake_acc"], [mean, mean], rtol=1e-6)
        assert int(state.stage) == stage_after, (acc, mean)
    # (The report's rule alone would have flipped at every change of accuracy:
    # test_steps.py::test_next_stage_boundaries.)


@pytest.mark.parametrize("on,stage_after", [("fake", STAGE_AE), ("both", STAGE_D)])
def test_threshold_on_both_keeps_d_learning_while_it_calls_reals_fake(on, stage_after, key):
    # A D that calls every image fake (forced through its last bias) is right on every
    # fake: the report's rule hands the turn to the AE; "both" keeps D learning.
    cfg = small_cfg("raegan", **{"gan.stage_impl": "select", "gan.threshold_on": on})
    state = with_d_bias(rj.create_train_state(cfg, key).replace(stage=jnp.int32(STAGE_D)), -30.0)
    new, m = rj.make_train_step(cfg, steps_per_epoch=10)(state, batch())
    np.testing.assert_allclose([m["d_real_acc"], *m["d_fake_acc"]], [0.0, 1.0, 1.0])
    assert int(new.stage) == stage_after
    assert ("rule_acc" in m) == (on == "both")  # no controller memory: logged only for "both"
    if on == "both":
        assert float(m["rule_acc"]) == 0.0


def test_threshold_on_both_running_means():
    cfg = small_cfg("raegan", **{"gan.threshold_on": "both", "gan.threshold_ema": 0.5})
    ctrl = stages.init_controller(cfg)
    np.testing.assert_allclose([ctrl["real_acc"], *ctrl["fake_acc"]], [0.5, 0.5, 0.5])
    ctrl, rule = stages.controller_update(cfg, ctrl, jnp.asarray([1.0, 0.8]), jnp.asarray(0.2))
    np.testing.assert_allclose(ctrl["fake_acc"], [0.75, 0.65])
    np.testing.assert_allclose(ctrl["real_acc"], 0.35)
    np.testing.assert_allclose(rule, 0.35)  # min(mean(0.75, 0.65), 0.35): the reals decide
    ctrl, rule = stages.controller_update(cfg, ctrl, jnp.asarray([0.0, 0.0]), jnp.asarray(1.0))
    np.testing.assert_allclose(rule, 0.35)  # now the fakes do: min(0.35, 0.675)


def test_caught_weighting_pushes_on_the_pass_d_catches(key):
    cfg = small_cfg("raegan", **{"gan.pass_weighting": "caught", "gan.adv_weight": 0.5})
    state = rj.create_train_state(cfg, key).replace(stage=jnp.int32(STAGE_AE))
    state = state.replace(ctrl={"fake_acc": jnp.asarray([0.9, 0.3], jnp.float32)})
    _, m = rj.make_train_step(cfg, steps_per_epoch=10)(state, batch())
    np.testing.assert_allclose(m["pass_weight"], [1.5, 0.5], rtol=1e-6)  # 2 x [0.9, 0.3] / 1.2
    assert "adv_lambda" not in m  # a fixed weight has no λ to report
    np.testing.assert_allclose(m["adv_weighted"], 0.5 * np.dot([1.5, 0.5], m["adv_loss"]), rtol=1e-5)
    # While D catches nothing on any pass, the weights stay uniform.
    zero = state.replace(ctrl={"fake_acc": jnp.zeros(2, jnp.float32)})
    np.testing.assert_allclose(stages.pass_weights(cfg, zero.ctrl), [1.0, 1.0])


@pytest.mark.parametrize("field,value,words", [
    ("gan.adv_weight_mode", "vqgan", "'fixed' or 'adaptive'"),
    ("gan.adaptive_scope", "each", "'shared' or 'per_pass'"),
    ("gan.threshold_ema", 1.0, "[0, 1)"),
    ("gan.hysteresis", 0.5, "inside (0, 1)"),
    ("gan.pass_weighting", "worst", "'uniform' or 'caught'"),
    ("gan.threshold_on", "real", "'fake' or 'both'"),
])
def test_bad_balance_settings_are_named(field, value, words):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        rj.get_preset("mnist_aegan", {field: value})
    assert words in str(e.value)


def test_a_balanced_run_reports_its_balance_and_resumes_exactly(tmp_path, tiny_mnist):
    over = {**TINY, "model.family": "raegan", "model.passes": 2, "gan.adv_weight_mode": "adaptive",
            "gan.threshold_ema": 0.8, "gan.hysteresis": 0.05, "gan.pass_weighting": "caught",
            "gan.threshold_on": "both"}
    cfg = rj.get_preset("mnist_aegan", {**over, "train.epochs": 2})
    summary = train_and_evaluate(cfg, tmp_path / "a", data_dir=str(tiny_mnist), progress=False)
    recs = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        assert r["val/balance_gap"] == pytest.approx(
            max(abs(a - 0.5) for a in r["val/d_fake_acc"]))
    assert any("train/ae_learns/adv_lambda" in r for r in recs)
    assert summary["balance_gap"] == pytest.approx(max(abs(a - 0.5) for a in summary["d_fake_acc"]))
    last3 = summary["last_3_epochs"]
    assert last3["epochs"] == [1, 2]  # (fewer than 3 epochs: all of them)
    np.testing.assert_allclose(last3["val_recon_loss"],
                               np.mean([r["val/recon_loss"] for r in recs], axis=0))
    assert last3["balance_gap"] == pytest.approx(np.mean([r["val/balance_gap"] for r in recs]))

    assert (tmp_path / "a" / "d_accuracy.png").is_file()
    # The controller's memory is part of the checkpoint: 1 epoch, then a second on resume,
    # ends exactly where the uninterrupted run ends.
    train_and_evaluate(rj.get_preset("mnist_aegan", {**over, "train.epochs": 1}), tmp_path / "b",
                       data_dir=str(tiny_mnist), progress=False)
    train_and_evaluate(cfg, tmp_path / "b", data_dir=str(tiny_mnist), progress=False)
    from test_train import final_state
    a, b = final_state(cfg, tmp_path / "a"), final_state(cfg, tmp_path / "b")
    assert a.ctrl is not None
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
