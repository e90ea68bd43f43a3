"""The game's levers against D's colour chase: D's R1 penalty and the AE's mean-colour term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax import losses, steps
from raegan_jax.stages import STAGE_AE, STAGE_RECON

from test_steps import batch, small_cfg


def test_r1_penalty_of_a_linear_d_is_its_weights_squared_norm():
    w = jax.random.normal(jax.random.key(0), (28 * 28,))
    d_fn = lambda x: x.reshape(x.shape[0], -1) @ w + 3.0  # noqa: E731
    got = losses.r1_penalty(d_fn, batch(5))
    np.testing.assert_allclose(float(got), float(w @ w), rtol=1e-5)
    # Per image, not of the batch's sum: a quadratic D's gradient differs image by image.
    q = lambda x: (x.reshape(x.shape[0], -1) ** 2).sum(-1)  # noqa: E731 (grad 2x)
    x = batch(4)
    want = np.mean([(4 * np.asarray(xi) ** 2).sum() for xi in x])
    np.testing.assert_allclose(float(losses.r1_penalty(q, x)), want, rtol=1e-5)


def test_mean_colour_error_reads_the_colour_cast_only():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=0.2, maxval=0.8)
    shift = jnp.asarray([0.1, -0.05, 0.0])
    np.testing.assert_allclose(np.asarray(losses.mean_colour_error(x + shift, x)),
                               [0.0125, 0.0125], rtol=1e-4)
    pattern = jnp.tile(jnp.asarray([[0.1, -0.1], [-0.1, 0.1]]), (4, 4))[None, :, :, None]
    np.testing.assert_allclose(np.asarray(losses.mean_colour_error(x + pattern, x)), 0.0, atol=1e-7)
    assert losses.mean_colour_error(jnp.stack([x, x + shift]), x).shape == (2, 2)  # pass axis


def test_d_gradient_with_r1_is_that_of_its_loss_plus_the_penalty(key):
    cfg = small_cfg("raegan", **{"gan.r1_weight": 2.5})
    b = steps.bind(cfg, steps_per_epoch=10)
    state = rj.create_train_state(cfg, key)
    images, fakes = batch(), jnp.stack([batch(seed=2), batch(seed=3)])
    grads, _, r1 = steps._d_grads(b, state.d_params, images, fakes)

    def reference(dp):  # each image's input gradient taken on its own
        d = lambda x: b.disc.apply({"params": dp}, x[None])[0]  # noqa: E731
        per = jax.vmap(jax.grad(d))(images)
        real_l, fake_l = steps.d_logits(b, dp, images, fakes)
        return losses.d_loss(real_l, fake_l) + 1.25 * (per ** 2).sum(axis=(1, 2, 3)).mean()

    want = jax.grad(reference)(state.d_params)
    for a, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=1e-4, atol=1e-7)
    assert float(r1) > 0
    plain, _, zero = steps._d_grads(steps.bind(small_cfg("raegan"), 10), state.d_params, images, fakes)
    assert float(zero) == 0.0
    assert any(not np.allclose(np.asarray(a), np.asarray(p))
               for a, p in zip(jax.tree.leaves(grads), jax.tree.leaves(plain)))


@pytest.mark.parametrize("stage", [STAGE_AE, STAGE_RECON])
def test_colour_term_adds_its_gradient_in_the_game_only(key, stage):
    # adv_weight 0: the AE's gradient is the reconstruction's, plus the colour term's in the game.
    over = {"gan.adv_weight": 0.0}
    b0 = steps.bind(small_cfg("raegan", **over), steps_per_epoch=10)
    bc = steps.bind(small_cfg("raegan", **over, **{"gan.colour_weight": 7.0}), steps_per_epoch=10)
    state = rj.create_train_state(b0.cfg, key)
    images = batch()
    pidx = steps.pass_index(b0, state, 8)
    on = stage == STAGE_AE
    g0, m0, _ = steps._ae_grads(b0, state, images, pidx, adv_on=on)
    gc, mc, _ = steps._ae_grads(bc, state, images, pidx, adv_on=on)
    colour = lambda p: losses.mean_colour_error(  # noqa: E731
        rj.to_images(steps.ae_logits(b0, p, images)), images).mean(-1).sum()
    gcol = jax.grad(colour)(state.ae_params)
    for a, z, c in zip(jax.tree.leaves(gc), jax.tree.leaves(g0), jax.tree.leaves(gcol)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(z) + (7.0 * np.asarray(c) if on else 0),
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mc["colour_loss"]), np.asarray(m0["colour_loss"]))
    assert float(mc["colour_loss"].sum()) > 0


@pytest.mark.parametrize("field", ["gan.r1_weight", "gan.colour_weight"])
def test_negative_lever_weights_are_refused(field):
    with pytest.raises(rj.ConfigError, match=field):
        rj.get_preset("cifar10_raegan", {field: -1.0})
