import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax.models import Cifar10AE, MnistAE, SubpixelConvTranspose, subpixel_kernel
from raegan_jax.state import count_params
from conftest import TINY


def conv(k, i, o):
    return k * k * i * o + o


def dense(i, o):
    return i * o + o


MNIST_AE = (conv(3, 1, 16) + conv(3, 16, 32) + conv(3, 32, 64) + dense(576, 128) + dense(128, 64)
            + dense(64, 16)  # encoder
            + dense(16, 64) + dense(64, 128) + dense(128, 576) + conv(3, 64, 32) + conv(3, 32, 16)
            + conv(3, 16, 1))  # decoder
CIFAR_AE = (conv(3, 3, 8) + conv(4, 8, 16) + conv(3, 16, 16) + conv(4, 16, 32) + conv(3, 32, 32)
            + conv(4, 32, 64) + conv(3, 64, 64)  # encoder
            + conv(3, 64, 64) + conv(4, 64, 32) + conv(3, 32, 32) + conv(4, 32, 16)
            + conv(3, 16, 16) + conv(4, 16, 8) + conv(3, 8, 3))  # decoder
MNIST_D = dense(784, 512) + dense(512, 256) + dense(256, 128) + dense(128, 1)
CIFAR_D = dense(3072, 1024) + dense(1024, 512) + dense(512, 256) + dense(256, 1)


@pytest.mark.parametrize("preset,shape,n_ae,n_d", [
    ("mnist_ae", (28, 28, 1), MNIST_AE, None),
    ("mnist_aegan", (28, 28, 1), MNIST_AE, MNIST_D),
    ("cifar10_ae", (32, 32, 3), CIFAR_AE, None),
    ("cifar10_raegan", (32, 32, 3), CIFAR_AE, CIFAR_D),
])
def test_shapes_ranges_and_parameter_counts(preset, shape, n_ae, n_d, key):
    cfg = rj.get_preset(preset)
    ae, disc = rj.build_models(cfg)
    state = rj.create_train_state(cfg, key)
    assert count_params(state.ae_params) == n_ae
    x = jax.random.uniform(jax.random.key(1), (5, *shape))
    logits = ae.apply({"params": state.ae_params}, x, method="logits")
    assert logits.shape == x.shape
    images = ae.apply({"params": state.ae_params}, x)  # the public output: images (SPEC §2)
    np.testing.assert_allclose(np.asarray(images), np.asarray(jax.nn.sigmoid(logits)), rtol=1e-6)
    saturated = rj.to_images(logits * 50.0)  # push hard into both saturations
    assert float(saturated.min()) >= 0.0 and float(saturated.max()) <= 1.0
    if n_d is None:
        assert disc is None and state.d_params is None
    else:
        assert count_params(state.d_params) == n_d
        assert disc.apply({"params": state.d_params}, x).shape == (5,)


def test_widths_are_config_fields(key):
    cfg = rj.get_preset("mnist_aegan", {"model.conv_widths": "8,8,8", "model.latent_dim": 4,
                                        "model.disc_widths": (32,)})
    state = rj.create_train_state(cfg, key)
    assert state.ae_params["enc_latent"]["kernel"].shape == (64, 4)
    assert state.ae_params["enc_conv0"]["kernel"].shape == (3, 3, 1, 8)
    assert count_params(state.d_params) == dense(784, 32) + dense(32, 1)


def test_train_state_is_one_program_with_the_eager_values(key):
    """The parameters are drawn by one compiled program per architecture (configs that
    differ elsewhere share it), bit for bit as each initializer run eagerly draws them."""
    from raegan_jax.models import torch_style_init
    from raegan_jax.state import _init_params
    cfg = rj.get_preset("mnist_aegan", {**TINY, "train.ae_ema": 0.9})
    before = _init_params._cache_size()
    state = rj.create_train_state(cfg, key)
    programs = _init_params._cache_size()
    # One program for this architecture (none new if a test before this one in the process
    # already drew it).
    assert programs in (before, before + 1)
    # A raw uint32 key, another family, other training settings: the same program and values.
    again = rj.create_train_state(rj.get_preset("cifar10_raegan", {
        **{k: v for k, v in TINY.items() if k.startswith("model.")}, "data.dataset": "mnist",
        "model.latent_dim": 4, "train.ae_lr": 0.1, "train.grad_clip_norm": 1.0}),
        jax.random.key_data(key))
    assert _init_params._cache_size() == programs
    for a, b in zip(jax.tree.leaves((state.ae_params, state.d_params, state.rng)),
                    jax.tree.leaves((again.ae_params, again.d_params, again.rng)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # D's layers drawn eagerly, one program per draw (the AE's take ~30 s to compile that way).
    _, k_d, _ = jax.random.split(key, 3)
    eager = torch_style_init(jax.device_get(state.d_params), k_d)
    for a, b in zip(jax.tree.leaves(state.d_params), jax.tree.leaves(eager), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The weight average is its own buffers (the state is donated to the train step).
    np.testing.assert_array_equal(np.asarray(state.ae_ema["dec_up2"]["kernel"]),
                                  np.asarray(state.ae_params["dec_up2"]["kernel"]))
    assert not any(x.unsafe_buffer_pointer() == y.unsafe_buffer_pointer()
                   for x, y in zip(jax.tree.leaves(state.ae_ema), jax.tree.leaves(state.ae_params)))


@pytest.mark.parametrize("model,shape", [(Cifar10AE, (4, 32, 32, 3)), (MnistAE, (4, 28, 28, 1))])
def test_subpixel_decoder_equals_transposed_conv(model, shape):
    """The sub-pixel form computes the same function with the same parameters."""
    x = jax.random.uniform(jax.random.key(3), shape)
    plain, sub = model(decoder_impl="transpose"), model(decoder_impl="subpixel")
    # Random, non-small weights so every tap matters. Jitted: one compile, not one per op.
    params = jax.jit(lambda k: jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(p.size), p.shape) * 0.3, plain.init(k, x)))(
        jax.random.key(4))
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(sub.init, jax.random.key(4), x))
    a, b = jax.jit(plain.apply)(params, x), jax.jit(sub.apply)(params, x)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-4 * float(jnp.abs(a).max()))


@pytest.mark.parametrize("hw", [(4, 4), (5, 3), (3, 3), (7, 2)])
@pytest.mark.parametrize("k,pad", [(4, (2, 2)), (3, (2, 2)), (3, (1, 2)), (5, (3, 4)), (2, (1, 1))])
def test_subpixel_layer_matches_conv_transpose(hw, k, pad):
    import flax.linen as nn
    x = jax.random.normal(jax.random.key(5), (2, *hw, 6))
    ref = nn.ConvTranspose(5, (k, k), strides=(2, 2), padding=(pad, pad))
    p = ref.init(jax.random.key(6), x)
    p = jax.tree.map(lambda v: jax.random.normal(jax.random.key(7), v.shape), p)
    want = ref.apply(p, x)
    out = SubpixelConvTranspose(5, k, pad).apply(p, x)
    assert out.shape == want.shape
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-4, atol=1e-4)
    if (k, pad) == (4, (2, 2)):
        sub, first = subpixel_kernel(p["params"]["kernel"], 2)
        assert sub.shape == (3, 3, 6, 20) and first == -1


def test_reshape_max_pool_equals_flax_max_pool():
    import flax.linen as nn
    from raegan_jax.models import max_pool_2x2
    for shape in [(3, 28, 28, 4), (3, 7, 7, 5), (2, 14, 14, 1)]:
        x = jax.random.normal(jax.random.key(shape[1]), shape)
        np.testing.assert_array_equal(np.asarray(max_pool_2x2(x)),
                                      np.asarray(nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")))
        # Without ties the gradients agree exactly too.
        g1 = jax.grad(lambda v: (max_pool_2x2(v) ** 2).sum())(x)
        g2 = jax.grad(lambda v: (nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID") ** 2).sum())(x)
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-6)
