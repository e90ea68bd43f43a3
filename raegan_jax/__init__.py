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
    summary = rj.train_and_evaluate(cfg, "workdir")   # what `raegan train` runs

Names are imported lazily, so ``import raegan_jax`` does not import jax: the
``raegan`` command can still set up CPU devices before jax starts.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "raegan_jax.config": ["Config", "ConfigError", "DataConfig", "GanConfig", "ModelConfig",
                          "TrainConfig", "apply_overrides"],
    "raegan_jax.configs": ["PRESETS", "departures", "get_preset"],
    "raegan_jax.models": ["Cifar10AE", "DenseDiscriminator", "MnistAE", "build_models", "to_images"],
    "raegan_jax.parallel": ["initialize_distributed", "make_mesh"],
    "raegan_jax.data": ["load_data"],
    "raegan_jax.recursion": ["cycle_offset", "cycle_pass", "rae_objective", "recursive_apply"],
    "raegan_jax.state": ["TrainState", "create_train_state", "eval_d_params", "eval_params"],
    "raegan_jax.steps": ["steps_per_epoch", "train_step_fn"],
    "raegan_jax.programs": ["epoch_permutation", "make_eval_step", "make_multi_step",
                            "make_train_step", "sweep_batches"],
    "raegan_jax.stages": ["STAGE_AE", "STAGE_D", "STAGE_RECON", "sweep_plan"],
    "raegan_jax.train": ["Preempted", "train_and_evaluate"],
    "raegan_jax.evaluate": ["evaluate_run"],
    "raegan_jax.runs": ["load_run"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'raegan_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
