"""One train state holding both networks, each with its own optax state (SPEC §4)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from raegan_jax.config import IMAGE_SHAPES, Config, ConfigError, DataConfig
from raegan_jax.models import build_models, torch_style_init
from raegan_jax.stages import STAGE_D, STAGE_RECON, init_controller

__all__ = ["TrainState", "create_train_state",
           "make_optimizers", "learning_rate", "count_params", "eval_params",
           "eval_d_params", "update_count"]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree.

    Attributes:
      step: int32 [] number of train steps taken.
      stage: int32 [] which network learns next: :data:`~raegan_jax.stages.STAGE_AE`,
        ``STAGE_D`` or ``STAGE_RECON``. Lives on device so the
        threshold rule can switch it inside the jitted step.
      rng: uint32 [2] raw PRNG key data; per-step keys are
        ``fold_in(rng, step)`` so a resumed run draws the same numbers.
      ae_params, ae_opt_state: AE parameters and its Adam state.
      d_params, d_opt_state: discriminator parameters and its own Adam state
        (None for the ``ae``/``rae`` families). Two separate optax states
        mean a frozen network's moments and counts never move.
      ctrl: the stage controller's memory, ``{"fake_acc": float32 [passes]}``
        (D's running accuracy on each pass's fakes; plus ``"real_acc": []``
        with ``gan.threshold_on="both"``), or None when no
        controller needs one (:func:`~raegan_jax.stages.needs_controller`).
      ae_ema: the exponential moving average of ``ae_params`` (``train.ae_ema``
        > 0), or None. What evaluation uses when present (:func:`eval_params`).
      d_ema: the same for ``d_params`` (``gan.d_ema`` > 0), or None; what
        evaluation's D is when present (:func:`eval_d_params`).
    """

    step: jax.Array
    stage: jax.Array
    rng: jax.Array
    ae_params: Any
    ae_opt_state: Any
    d_params: Any = None
    d_opt_state: Any = None
    ctrl: Any = None
    ae_ema: Any = None
    d_ema: Any = None


def eval_params(state: TrainState) -> Any:
    """The AE parameters a run evaluates and shows: the weight average if kept, else the live ones."""
    return state.ae_params if state.ae_ema is None else state.ae_ema


def eval_d_params(state: TrainState) -> Any:
    """The D parameters evaluation reads: D's weight average if kept, else the live ones."""
    return state.d_params if state.d_ema is None else state.d_ema


def update_count(opt_state: Any) -> jax.Array:
    """The number of updates an optax state has applied (its first ``count``: with a
    schedule or clipping there are several, and every update advances them all)."""
    (_, count), *_ = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return count


def learning_rate(cfg: Config, peak: float, steps_per_epoch: int | None = None) -> optax.ScalarOrSchedule:
    """The learning rate (a float or an optax schedule) peaking at ``peak``.

    ``train.lr_schedule="constant"`` with ``warmup_steps`` > 0 warms up
    linearly from 0, and with ``cooldown_fraction`` > 0 decays linearly to 0 over
    that fraction of the run's updates (``TrainConfig.cooldown_start`` on; 0 at step
    ``epochs * steps_per_epoch``); ``"cosine"`` warms up, then decays to 0 over
    ``decay_steps`` (0 = ``epochs * steps_per_epoch``). Counts are the
    network's own updates (its optax state's count).

    Raises:
      ConfigError: the warm-up does not end before the cool-down starts.
    """
    t = cfg.train
    # Without a sweep length only the structure is needed (state init, eval); the
    # train steps refuse to run without it (steps.needs_epoch_length).
    spe = steps_per_epoch or 1
    if t.lr_schedule == "cosine":
        decay = t.decay_steps or t.epochs * spe
        return optax.warmup_cosine_decay_schedule(0.0, peak, t.warmup_steps,
                                                  max(decay, t.warmup_steps + 1))
    pieces, boundaries = [], []
    if t.warmup_steps:
        pieces.append(optax.linear_schedule(0.0, peak, t.warmup_steps))
        boundaries.append(t.warmup_steps)
    if t.cooldown_fraction:
        start, total = t.cooldown_start(spe), t.epochs * spe
        if steps_per_epoch is not None and start < t.warmup_steps:
            raise ConfigError(f"train.cooldown_fraction ({t.cooldown_fraction}) starts the cool-down "
                              f"at step {start}, inside the {t.warmup_steps}-step warm-up")
        pieces.append(optax.constant_schedule(peak))
        boundaries.append(start)
        pieces.append(optax.linear_schedule(peak, 0.0, total - start))
    elif pieces:
        pieces.append(optax.constant_schedule(peak))
    return optax.join_schedules(pieces, boundaries) if pieces else peak


def make_optimizers(cfg: Config, steps_per_epoch: int | None = None
                    ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Returns ``(ae_tx, d_tx)``: Adam at ``train.ae_lr`` and ``train.d_lr`` (5e-3, 1e-3),
    D's with its own moments ``train.d_b1`` and ``train.d_eps``.

    Each follows :func:`learning_rate`'s schedule and, if
    ``train.grad_clip_norm`` > 0, clips its gradient to that global norm first.
    """
    def tx(peak, **adam_kw):
        adam = optax.adam(learning_rate(cfg, peak, steps_per_epoch), **adam_kw)
        clip = cfg.train.grad_clip_norm
        return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam

    return tx(cfg.train.ae_lr), tx(cfg.train.d_lr, b1=cfg.train.d_b1, eps=cfg.train.d_eps)


def restart_ae_optimizer(cfg: Config, state: TrainState) -> TrainState:
    """``state`` with the AE's optimizer state re-initialised (zero Adam moments,
    schedule count 0: a warm-up, if any, runs again); parameters, weight average,
    D and its optimizer untouched."""
    return state.replace(ae_opt_state=make_optimizers(cfg)[0].init(state.ae_params))


def carry_opt_state(src: Any, fresh: Any) -> Any:
    """Another schedule's optimizer state ``src`` in the structure of ``fresh``.

    A schedule adds a count to the optax state that a constant rate has none of
    (``ScaleByScheduleState``), so a run that changes its schedule (a cool-down
    branched from a constant-rate run, the warmup-stable-decay recipe) cannot take
    the source's state as it is. Adam's moments and its update count carry over,
    and the schedule's count is that same count: every update advances both.

    Args:
      src: the source's optax state (Adam, with or without a schedule or clipping).
      fresh: this config's optax state (``tx.init(params)``), for its structure.

    Returns:
      ``src`` if the structures agree, else ``fresh`` holding ``src``'s moments and count.
    """
    if src is None or jax.tree.structure(src) == jax.tree.structure(fresh):
        return src
    tu = optax.tree_utils
    return tu.tree_set(fresh, mu=tu.tree_get(src, "mu"), nu=tu.tree_get(src, "nu"),
                       count=update_count(src))


def create_train_state(cfg: Config, key: jax.Array) -> TrainState:
    """Initialises both networks and their optimizer states.

    Args:
      cfg: a validated config.
      key: a PRNG key (``jax.random.key(seed)`` or a legacy uint32 key).

    Returns:
      A :class:`TrainState` at step 0. GAN families start in the D stage
      (the report trains D until it beats the threshold).
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    ae_params, d_params, rng = _init_params(_param_config(cfg), key)
    ae_tx, d_tx = make_optimizers(cfg)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        stage=jnp.asarray(STAGE_D if cfg.is_gan else STAGE_RECON, jnp.int32),
        rng=rng,
        ae_params=ae_params,
        ae_opt_state=ae_tx.init(ae_params),
        d_params=d_params,
        d_opt_state=d_tx.init(d_params) if d_params is not None else None,
        ctrl=init_controller(cfg),
        # The average starts at the initial weights (a copy: the state is donated).
        ae_ema=jax.tree.map(jnp.copy, ae_params) if cfg.train.ae_ema > 0 else None,
        d_ema=jax.tree.map(jnp.copy, d_params) if d_params is not None and cfg.gan.d_ema > 0
        else None,
    )


def _param_config(cfg: Config) -> Config:
    """The part of ``cfg`` the initial parameters depend on: the architecture and the dataset.

    Configs that differ only in training, data sizes or the recursion share one
    compiled initialisation (:func:`_init_params`)."""
    model = dataclasses.replace(cfg.model, family="aegan" if cfg.is_gan else "ae", passes=1,
                                unroll=0, batch_chunks=0)
    return Config(model=model, data=DataConfig(dataset=cfg.data.dataset))


# The parameters are drawn in one compiled program. Run eagerly, every layer's
# initializer is its own XLA program (~45 of them): 18 s of compilation for the MNIST GAN
# on a 2-core CPU (41 s for CIFAR-10's) against 7 s (16 s) here, with bit-identical
# values (tests/test_models.py). The config is static (a frozen, hashable dataclass).
@functools.partial(jax.jit, static_argnums=0)
def _init_params(cfg: Config, key: jax.Array) -> tuple[Any, Any, jax.Array]:
    """Returns ``(ae_params, d_params or None, rng)``: the networks' initial parameters
    and the raw key data the run's per-step keys fold from."""
    ae, disc = build_models(cfg)
    k_ae, k_d, k_run = jax.random.split(key, 3)
    dummy = jnp.zeros((1, *IMAGE_SHAPES[cfg.data.dataset]), jnp.float32)
    ae_params = ae.init(k_ae, dummy)["params"]
    d_params = disc.init(k_d, dummy)["params"] if disc is not None else None
    if cfg.model.init == "torch":  # the report's framework's defaults (see torch_style_init)
        ae_params = torch_style_init(ae_params, k_ae)
        d_params = torch_style_init(d_params, k_d) if d_params is not None else None
    return ae_params, d_params, jax.random.key_data(k_run)


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
