import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax import losses
from raegan_jax.recursion import cycle_offset, cycle_pass, rae_objective, recursive_apply
from raegan_jax.steps import bind, pass_index


@pytest.fixture(scope="module")
def mnist():
    cfg = rj.get_preset("mnist_ae")
    ae, _ = rj.build_models(cfg)
    state = rj.create_train_state(cfg, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    return ae, state.ae_params, x


@pytest.mark.parametrize("unroll", [0, 1, 2])
def test_recursive_apply_equals_hand_applied(mnist, unroll):
    ae, params, x = mnist
    f = lambda y: rj.to_images(ae.apply({"params": params}, y, method="logits"))
    outs = recursive_apply(f, x, 3, unroll=unroll)
    assert outs.shape == (3, *x.shape)
    y = x
    for j in range(3):
        y = f(y)
        np.testing.assert_allclose(np.asarray(outs[j]), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_public_api_example(mnist):
    ae, params, x = mnist
    outs = rj.recursive_apply(lambda y: ae.apply({"params": params}, y), x, 3)
    assert outs.shape == (3, *x.shape)
    np.testing.assert_allclose(np.asarray(outs[1]),
                               np.asarray(ae.apply({"params": params}, ae.apply({"params": params}, x))),
                               rtol=1e-5, atol=1e-6)


def test_gradient_flows_through_every_pass(mnist):
    ae, params, x = mnist
    f = lambda p, y: ae.apply({"params": p}, y, method="logits")

    def scanned(p):
        logits = recursive_apply(lambda y: f(p, y), x, 3, feedback=jax.nn.sigmoid)
        return losses.recon_loss(logits, x, "bce").sum()

    def by_hand(p):
        total, y = 0.0, x
        for _ in range(3):
            logits = f(p, y)
            total += losses.recon_loss(logits, x, "bce").sum()
            y = jax.nn.sigmoid(logits)
        return total

    g1, g2 = jax.jit(jax.grad(scanned))(params), jax.jit(jax.grad(by_hand))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)

    def last_only(p):  # the last pass alone still reaches pass-1 activations
        logits = recursive_apply(lambda y: f(p, y), x, 3, feedback=jax.nn.sigmoid)
        return losses.recon_loss(logits[-1], x, "bce").sum()
    g3 = jax.jit(jax.grad(last_only))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g3))


def test_recursive_apply_rejects_zero_passes(mnist):
    ae, params, x = mnist
    with pytest.raises(ValueError, match="passes"):
        recursive_apply(lambda y: y, x, 0)


def test_cycle_schedule_picks_pass_s_plus_i_mod_passes():
    # Sweep of 3 steps of 4 rows: row r of step k is sample 4k + r of its sweep.
    for step in range(12):
        s, k = cycle_offset(7, step // 3, 3), step % 3
        assert [cycle_pass(7, step, r, 3, 4, 3) for r in range(4)] == [(s + 4 * k + r) % 3
                                                                        for r in range(4)]
    losses_ = jnp.asarray([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [100.0, 200.0, 300.0, 400.0]])
    pidx = jnp.asarray([0, 1, 2, 0])
    assert float(rae_objective(losses_, "cycle", pidx)) == pytest.approx((1 + 20 + 300 + 4) / 4)
    assert float(rae_objective(losses_, "sum", pidx)) == pytest.approx(2.5 + 25 + 250)
    assert float(rae_objective(losses_, "last", pidx)) == pytest.approx(250.0)


def test_cycle_offset_is_uniform_and_equal_on_ints_and_uint32_arrays():
    counts = np.bincount([cycle_offset(0, e, 3) for e in range(3000)], minlength=3)
    assert counts.min() > 900  # each start about a third of the sweeps
    sweeps = jnp.arange(200, dtype=jnp.uint32)
    traced = jax.jit(lambda e: cycle_offset(12345, e, 5))(sweeps)
    assert np.asarray(traced).tolist() == [cycle_offset(12345, e, 5) for e in range(200)]


def test_cycle_offset_is_fixed_within_an_epoch_and_continues_across_batches(key):
    cfg = rj.get_preset("cifar10_rae", {"train.batch_size": 128})
    b = bind(cfg, steps_per_epoch=5)
    state = rj.create_train_state(cfg, key)
    offsets = set()
    for step in range(5):
        idx = pass_index(b, state.replace(step=jnp.int32(step)), 128)
        # i runs over the epoch: within a batch (s + i) mod 3 steps by one.
        assert np.all(np.diff(np.asarray(idx)) % 3 == 1)
        offsets.add((int(idx[0]) - step * 128) % 3)
    assert len(offsets) == 1  # one s for the whole epoch
    seen = {(int(pass_index(b, state.replace(step=jnp.int32(5 * e)), 128)[0])) for e in range(30)}
    assert seen == {0, 1, 2}  # s is redrawn per epoch


def test_library_steps_need_the_epoch_length_for_the_cycle():
    cfg = rj.get_preset("cifar10_rae")
    with pytest.raises(rj.ConfigError, match="steps_per_epoch"):
        rj.make_train_step(cfg)
    rj.make_train_step(rj.get_preset("cifar10_rae", {"train.rae_objective": "sum"}))  # no cycle
    rj.make_train_step(rj.get_preset("cifar10_ae"))  # one pass
