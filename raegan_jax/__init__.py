"""raegan-jax: the Recursive-Autoencoder-with-GAN (RAE-GAN) model in JAX/Flax.

The public API::

    import jax, raegan_jax as rj
    cfg = rj.get_preset("cifar10_raegan", overrides={"train.batch_size": 64})
    ae, disc = rj.build_models(cfg)
    state = rj.create_train_state(cfg, jax.random.key(0))
    train_step = rj.make_train_step(cfg)          # jitted, donates `state`
    state, metrics = train_step(state, batch)     # batch: float32 [B, H, W, C] in [0, 1]
    metrics = rj.make_eval_step(cfg)(state, batch)
    outs = rj.recursive_apply(lambda x: ae.apply({"params": state.ae_params}, x), batch, 3)
"""

from raegan_jax.config import (PRESETS, Config, ConfigError, DataConfig, GanConfig, ModelConfig,
                               TrainConfig, apply_overrides, get_preset)
from raegan_jax.models import Cifar10AE, DenseDiscriminator, MnistAE, build_models, to_images
from raegan_jax.parallel import make_mesh
from raegan_jax.recursion import cycle_pass_index, rae_objective, recursive_apply
from raegan_jax.state import STAGE_AE, STAGE_D, STAGE_RECON, TrainState, create_train_state
from raegan_jax.steps import make_eval_step, make_multi_step, make_train_step

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "Config", "ConfigError", "DataConfig", "GanConfig", "ModelConfig", "TrainConfig",
    "apply_overrides", "get_preset", "Cifar10AE", "DenseDiscriminator", "MnistAE",
    "build_models", "to_images", "make_mesh", "cycle_pass_index", "rae_objective",
    "recursive_apply", "STAGE_AE", "STAGE_D", "STAGE_RECON", "TrainState", "create_train_state",
    "make_eval_step", "make_multi_step", "make_train_step", "train_and_evaluate",
]


def __getattr__(name):
    # The training loop pulls in tfds, Orbax and matplotlib; import it lazily.
    if name == "train_and_evaluate":
        from raegan_jax.train import train_and_evaluate
        return train_and_evaluate
    raise AttributeError(name)
