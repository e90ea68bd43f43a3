"""The train and eval steps of the four families, as pure functions (SPEC §3–4).

Every family runs through :func:`train_step_fn`, a pure function of
``(bound, state, batch)``. ``bound`` carries the models, optimizers and static
config; it is bound with ``functools.partial`` and never passed through jit
(:mod:`raegan_jax.programs` jits these functions). Which network learns is the
stage's business: :mod:`raegan_jax.stages` holds the policies; here are the
updates each stage runs (:func:`recon_update`, :func:`d_update`,
:func:`ae_update`, :func:`alternate_update`) and the one-program forms that
pick among them on device (``lax.switch`` or :func:`selected_update`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import dm_pix as pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from raegan_jax import diagnostics, losses
from raegan_jax.config import RECURSIVE_FAMILIES, Config, ConfigError
from raegan_jax.models import build_models, to_images
from raegan_jax.parallel import in_chunks, largest_divisor
from raegan_jax.realism import high_frequency_energies, quantise
from raegan_jax.recursion import cycle_pass, rae_objective, recursive_apply
from raegan_jax.stages import (STAGE_AE, STAGE_D, STAGE_RECON, controller_update, next_stage,
                               pass_weights, stage_impl)
from raegan_jax.state import TrainState, eval_d_params, eval_params, make_optimizers, update_count

Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Bound:
    """Static pieces of a step: config, modules, optimizers, epoch length."""

    cfg: Config
    ae: nn.Module
    disc: nn.Module | None
    ae_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    steps_per_epoch: int | None


def needs_epoch_length(cfg: Config) -> bool:
    """True if the train step must know the sweep length: the ``cycle`` objective
    places each sample in its sweep, and a cosine or a cool-down decays over the run."""
    cycle = (cfg.model.family in RECURSIVE_FAMILIES and cfg.model.passes > 1
             and cfg.train.rae_objective == "cycle")
    return cycle or cfg.train.schedule_spans_run


def steps_per_epoch(cfg: Config, num_train_images: int) -> int:
    """Train steps per sweep over ``num_train_images`` (the last partial batch is dropped)."""
    return num_train_images // cfg.train.batch_size


def bind(cfg: Config, steps_per_epoch: int | None = None) -> Bound:
    """Builds the static pieces of the steps for ``cfg``.

    Args:
      cfg: a validated config.
      steps_per_epoch: train steps per sweep over the training images
        (``len(train_images) // batch_size``, :func:`steps_per_epoch`). The
        ``cycle`` objective needs it to know where each sample sits in its
        sweep; :func:`make_train_step` raises if it is missing where needed.
    """
    ae, disc = build_models(cfg)
    ae_tx, d_tx = make_optimizers(cfg, steps_per_epoch)
    return Bound(cfg, ae, disc, ae_tx, d_tx, steps_per_epoch)


def _require_epoch_length(cfg: Config, steps_per_epoch: int | None) -> None:
    if steps_per_epoch is None and needs_epoch_length(cfg):
        raise ConfigError(
            "this config needs steps_per_epoch (the cycle objective or a schedule over the run "
            "depends on each step's place in its sweep): pass "
            "steps_per_epoch=len(train_images) // train.batch_size")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")


def as_images(batch: jax.Array) -> jax.Array:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1]."""
    if batch.dtype == jnp.uint8:
        return batch.astype(jnp.float32) / 255.0
    return batch.astype(jnp.float32)


# --------------------------------------------------------------------------- pieces

def ae_logits(b: Bound, ae_params: Any, images: jax.Array) -> jax.Array:
    """All passes of the (recursive) AE: [B, H, W, C] -> logits [passes, B, H, W, C].

    The batch runs as :func:`batch_chunks` independent chunks, each through
    every pass (see :func:`~raegan_jax.parallel.in_chunks`); the values are
    those of one whole-batch recursion.
    """
    m = b.cfg.model

    def recursion(x: jax.Array) -> jax.Array:
        return recursive_apply(lambda y: b.ae.apply({"params": ae_params}, y, method="logits"),
                               x, m.passes, unroll=m.unroll, feedback=to_images)

    chunks = batch_chunks(b.cfg, images.shape[0])
    return in_chunks(recursion, chunks, batch_axis=1)(images)


def reconstruction_images(b: Bound, state: TrainState, images: jax.Array) -> jax.Array:
    """Every pass's reconstruction of ``images`` (uint8 [N, H, W, C]) by the weights the
    run evaluates (:func:`~raegan_jax.state.eval_params`), as 8-bit images
    [passes, N, H, W, C]."""
    return quantise(to_images(ae_logits(b, eval_params(state), as_images(images))))


def d_scores(b: Bound, state: TrainState, images: jax.Array) -> jax.Array:
    """The game D's "real" logits [N] of ``images`` (uint8 or float [N, H, W, C]), by the
    weights the run evaluates (:func:`~raegan_jax.state.eval_d_params`)."""
    return b.disc.apply({"params": eval_d_params(state)}, as_images(images))


# Images per chunk that ran fastest on a 2-core x86 CPU (XLA:CPU, jax 0.10):
# CIFAR-10 batch 128 in 4 chunks 55 ms vs 71 ms whole (rae 154 vs 200 ms);
# MNIST batch 128 in 2 chunks 29 ms vs 37 ms, but 43 ms in 4 chunks.
# See benchmarks/RESULTS.md.
_CPU_CHUNK_IMAGES = {"cifar10": 32, "mnist": 64}


def batch_chunks(cfg: Config, batch_size: int) -> int:
    """How many independent chunks the AE runs a batch of ``batch_size`` in.

    ``model.batch_chunks`` if set (> 0), else on CPU about one chunk per
    ``_CPU_CHUNK_IMAGES[dataset]`` images, and 1 on accelerators (whose
    kernels fill the device with one batch). Always a divisor of
    ``batch_size``: the largest one not above the requested count.
    """
    want = cfg.model.batch_chunks
    if want == 0:
        want = (batch_size // _CPU_CHUNK_IMAGES.get(cfg.data.dataset, batch_size)
                if jax.default_backend() == "cpu" else 1)
    return largest_divisor(batch_size, want)


def pass_index(b: Bound, state: TrainState, batch_size: int) -> jax.Array:
    """[B] zero-based pass each sample trains on under the ``cycle`` objective.

    :func:`raegan_jax.recursion.cycle_pass` is the one definition (the PyTorch
    twin calls it too): the sweep's start s depends only on ``train.seed``
    and the sweep number ``step // steps_per_epoch``, so every step of a
    sweep shares it and a resumed run draws the same s.
    """
    passes = b.cfg.model.passes
    if passes == 1 or b.cfg.train.rae_objective != "cycle":
        return jnp.zeros((batch_size,), jnp.int32)
    _require_epoch_length(b.cfg, b.steps_per_epoch)
    pidx = cycle_pass(b.cfg.train.seed, state.step.astype(jnp.uint32),
                      jnp.arange(batch_size, dtype=jnp.uint32), b.steps_per_epoch, batch_size,
                      passes)
    return pidx.astype(jnp.int32)


def recon_objective(b: Bound, logits: jax.Array, images: jax.Array, pidx: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    """Returns (scalar objective over the passes, [passes] mean loss per pass)."""
    per_sample = losses.recon_loss(logits, images, b.cfg.train.recon_loss)  # [P, B]
    objective = b.cfg.train.rae_objective if b.cfg.model.family in RECURSIVE_FAMILIES else "last"
    return rae_objective(per_sample, objective, pidx), per_sample.mean(axis=1)


def d_logits(b: Bound, d_params: Any, images: jax.Array, fakes: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
    """D on real images [B, ...] and fakes [P, B, ...] in one call: ([B], [P, B]) logits.

    The pass and batch axes stay separate (no reshape merging them): merging
    would make XLA regather a batch that is sharded over devices.
    """
    out = b.disc.apply({"params": d_params}, jnp.concatenate([images[None], fakes]))
    return out[0], out[1:]


def _gan_metrics(b: Bound, recon_obj: jax.Array, per_pass: jax.Array, colour: jax.Array,
                 real_l: jax.Array, fake_l: jax.Array, adv_coef: jax.Array | None = None,
                 lam: jax.Array | None = None, weights: jax.Array | None = None,
                 r1: jax.Array | None = None) -> Metrics:
    """A GAN step's metrics, and the AE's objective (the one place it is defined).

    ``loss`` is the AE's objective: ``recon_objective`` plus ``adv_weighted``,
    the adversarial term of each pass times its coefficient ``adv_coef``
    [passes] (set in :func:`_ae_grads`; None = no adversarial term), summed
    over passes. D's update replaces ``loss`` by D's loss, which it optimises.
    ``adv_lambda`` (adaptive weight) and ``pass_weight`` (per-pass weighting)
    are added only where configured, so every update of a config returns the
    same keys (lax.switch needs that); an update that does not compute them
    reports zeros (``lam``/``weights`` None).
    """
    adv = losses.adversarial_loss(fake_l, b.cfg.gan.adv_loss)
    adv_weighted = jnp.zeros((), adv.dtype) if adv_coef is None else adv_coef @ adv
    m = {
        "loss": recon_obj + adv_weighted,
        "recon_objective": recon_obj,
        "adv_weighted": adv_weighted,
        "recon_loss": per_pass,
        "colour_loss": colour,
        "adv_loss": adv,
        "d_loss": losses.d_loss(real_l, fake_l),
        "d_real_acc": losses.accuracy_real(real_l),
        "d_fake_acc": losses.accuracy_fake(fake_l),
    }
    zeros = jnp.zeros_like(adv)
    if b.cfg.gan.adv_weight_mode == "adaptive":
        m["adv_lambda"] = zeros if lam is None else lam
    if b.cfg.gan.pass_weighting != "uniform":
        m["pass_weight"] = zeros if weights is None else weights
    if b.cfg.gan.r1_weight > 0:
        m["d_r1"] = jnp.zeros((), adv.dtype) if r1 is None else r1
    return m


def colour_per_pass(logits: jax.Array, images: jax.Array) -> jax.Array:
    """[passes] batch mean of :func:`~raegan_jax.losses.mean_colour_error` of the fakes."""
    return losses.mean_colour_error(to_images(logits), images).mean(axis=-1)


def adaptive_lambda(b: Bound, vjp_fn, weights: jax.Array) -> jax.Array:
    """The adaptive adversarial weight λ per pass (Esser et al. 2021, VQGAN), [passes].

    λ = ‖∇_W L_rec‖ / (‖∇_W L_adv‖ + δ), W the decoder's last kernel
    (``ae.last_layer``), clipped to [0, ``gan.adaptive_max``] and treated as a
    constant. ``gan.adaptive_scope="shared"``: one λ for ``L_adv = Σ_j w_j
    adv_j``; ``"per_pass"``: λ_j for each pass's ``adv_j`` alone, its norm
    taken ``passes`` times so that each pass is held to 1/passes of the
    reconstruction gradient. Gradients at W include every path (for the
    recursive AE W acts at each pass); the rest of each backward pass is
    never used, and XLA drops it.

    Args:
      b: the bound step pieces.
      vjp_fn: the VJP of ``params -> (L_rec, [passes] adv)`` at the current params.
      weights: [passes] per-pass weights w_j (:func:`~raegan_jax.stages.pass_weights`).
    """
    g = b.cfg.gan
    p = weights.shape[0]

    def grad_w(ct_rec, ct_adv):  # gradient at W of ct_rec L_rec + ct_adv . adv
        return vjp_fn((ct_rec, ct_adv))[0][b.ae.last_layer]["kernel"]

    norm = optax.global_norm
    rec = norm(grad_w(jnp.float32(1.0), jnp.zeros((p,), jnp.float32)))
    if g.adaptive_scope == "shared":
        lam = jnp.full((p,), rec / (norm(grad_w(jnp.float32(0.0), weights)) + g.adaptive_eps))
    else:
        per = jax.vmap(lambda e: norm(grad_w(jnp.float32(0.0), e)))(jnp.eye(p, dtype=jnp.float32))
        lam = rec / (p * per + g.adaptive_eps)
    return jax.lax.stop_gradient(jnp.clip(lam, 0.0, g.adaptive_max))


def _apply(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# --------------------------------------------------------------------------- updates
# Each update returns (state, metrics) with the same metric structure, so the
# three can be branches of one lax.switch. A branch that does not update a
# network passes its leaves through untouched (bit-identical).

def recon_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array,
                 measure_d: bool = True) -> tuple[TrainState, Metrics]:
    """The AE learns reconstruction only (ae/rae, pretraining, the phases' first sweep).

    For GAN families the metrics include D's view of the step's fakes unless
    ``measure_d`` is False (a reconstruction sweep's program touches no D).
    """
    def loss_fn(p):
        logits = ae_logits(b, p, images)
        obj, per_pass = recon_objective(b, logits, images, pidx)
        return obj, (per_pass, logits)

    (obj, (per_pass, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.ae_params)
    ae_params, ae_opt = _apply(b.ae_tx, state.ae_params, state.ae_opt_state, grads)
    if b.disc is None or not measure_d:
        metrics = {"loss": obj, "recon_loss": per_pass}
    else:
        logits = jax.lax.stop_gradient(logits)
        real_l, fake_l = d_logits(b, state.d_params, images, to_images(logits))
        metrics = _gan_metrics(b, obj, per_pass, colour_per_pass(logits, images), real_l, fake_l)
    return state.replace(ae_params=ae_params, ae_opt_state=ae_opt), metrics


def _d_grads(b: Bound, d_params: Any, images: jax.Array, fakes: jax.Array
             ) -> tuple[Any, tuple[jax.Array, jax.Array], jax.Array]:
    """D's gradient of its loss on real images and fakes.

    D's loss is :func:`~raegan_jax.losses.d_loss`, plus ``gan.r1_weight`` / 2 x
    the R1 penalty at the real images where configured (its gradient is a
    second-order one: XLA differentiates D's input gradient).

    Returns:
      ``(grads, (real logits [B], fake logits [P, B]), r1)``, ``r1`` the
      penalty's mean (0 when off).
    """
    r1_weight = b.cfg.gan.r1_weight

    def loss_fn(dp):
        real_l, fake_l = d_logits(b, dp, images, fakes)
        loss = losses.d_loss(real_l, fake_l)
        r1 = jnp.zeros((), loss.dtype)
        if r1_weight > 0:
            r1 = losses.r1_penalty(lambda x: b.disc.apply({"params": dp}, x), images)
            loss = loss + 0.5 * r1_weight * r1
        return loss, (real_l, fake_l, r1)

    (_, (real_l, fake_l, r1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    return grads, (real_l, fake_l), r1


def d_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array
             ) -> tuple[TrainState, Metrics]:
    """D learns real -> 1, every pass's reconstruction -> 0; the AE is frozen."""
    logits = jax.lax.stop_gradient(ae_logits(b, state.ae_params, images))
    obj, per_pass = recon_objective(b, logits, images, pidx)
    grads, (real_l, fake_l), r1 = _d_grads(b, state.d_params, images, to_images(logits))
    d_params, d_opt = _apply(b.d_tx, state.d_params, state.d_opt_state, grads)
    metrics = _gan_metrics(b, obj, per_pass, colour_per_pass(logits, images), real_l, fake_l,
                           r1=r1)
    metrics["loss"] = metrics["d_loss"]  # what this step optimised
    return state.replace(d_params=d_params, d_opt_state=d_opt), metrics


def _ae_grads(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array,
              adv_on: jax.Array | bool) -> tuple[Any, Metrics, jax.Array]:
    """The AE's gradient of recon + Σ_j c_j adv_j against D (c = 0 unless ``adv_on``).

    The coefficient of pass j's adversarial term is ``gan.adv_weight`` x its
    per-pass weight (:func:`~raegan_jax.stages.pass_weights`) x λ_j
    (:func:`adaptive_lambda`, or 1 under ``gan.adv_weight_mode="fixed"``).
    One forward pass and one VJP: the losses' values are computed once, and
    the gradient is the VJP at cotangent (1, c), so λ can depend on
    gradients of the same forward pass.

    D is a constant here: only its input gradient is taken, and it sees the
    real images outside the differentiated function (their logits feed the
    metrics only), so no backward pass runs over real rows.

    Returns:
      ``(grads, metrics, logits)`` with logits [passes, B, H, W, C].
    """
    g = b.cfg.gan
    real_l = b.disc.apply({"params": state.d_params}, images)

    def losses_fn(p):
        logits = ae_logits(b, p, images)
        obj, per_pass = recon_objective(b, logits, images, pidx)
        colour = colour_per_pass(logits, images)
        if g.colour_weight > 0:  # part of the game's reconstruction side, so λ sees it
            obj = obj + jnp.where(adv_on, g.colour_weight, 0.0) * colour.sum()
        fake_l = b.disc.apply({"params": state.d_params}, to_images(logits))  # [P, B]
        return ((obj, losses.adversarial_loss(fake_l, g.adv_loss)),
                (per_pass, colour, fake_l, logits))

    (obj, adv), vjp_fn, (per_pass, colour, fake_l, logits) = jax.vjp(
        losses_fn, state.ae_params, has_aux=True)
    weights = pass_weights(b.cfg, state.ctrl)
    lam = (adaptive_lambda(b, vjp_fn, weights) if g.adv_weight_mode == "adaptive"
           else jnp.ones_like(adv))
    coef = jnp.where(adv_on, g.adv_weight * weights * lam, 0.0).astype(adv.dtype)
    (grads,) = vjp_fn((jnp.ones_like(obj), coef))
    metrics = _gan_metrics(b, obj, per_pass, colour, real_l, fake_l, coef, lam, weights)
    return grads, metrics, logits


def ae_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array,
              adv_on: jax.Array | bool = True) -> tuple[TrainState, Metrics]:
    """The AE learns reconstruction + ``adv_weight`` x adversarial term; D is frozen.

    For ``raegan`` the adversarial term is summed over every pass's output.
    ``adv_on=False`` (traced or not) drops the adversarial term.
    """
    grads, metrics, _ = _ae_grads(b, state, images, pidx, adv_on)
    ae_params, ae_opt = _apply(b.ae_tx, state.ae_params, state.ae_opt_state, grads)
    return state.replace(ae_params=ae_params, ae_opt_state=ae_opt), metrics


def alternate_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array
                     ) -> tuple[TrainState, Metrics]:
    """One D update, then one AE update against the updated D (the usual GAN loop).

    In :data:`STAGE_RECON` (pretraining) D is left untouched and the AE learns
    reconstruction only. D's loss and accuracies are reported from the D
    update; the rest, ``loss`` (the AE's objective) included, from the AE update.
    """
    game_on = state.stage != STAGE_RECON
    new, m_d = d_update(b, state, images, pidx)
    new = _select(game_on, new, state, ("d_params", "d_opt_state"))
    new, m_ae = ae_update(b, new, images, pidx, adv_on=game_on)
    return new, {**m_ae, **{k: m_d[k] for k in ("d_loss", "d_real_acc", "d_fake_acc", "d_r1")
                            if k in m_d}}


def _select(pred: jax.Array, new: TrainState, old: TrainState, fields: tuple[str, ...]
            ) -> TrainState:
    """``new`` where ``pred`` else ``old``, for the named state fields (exact copies)."""
    return new.replace(**{f: jax.tree.map(lambda n, o: jnp.where(pred, n, o),
                                          getattr(new, f), getattr(old, f)) for f in fields})


def selected_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array
                    ) -> tuple[TrainState, Metrics]:
    """The stage's update with its convolutions outside any conditional.

    The AE's forward and backward run in every stage (its loss is the
    stage's: recon + adversarial against a frozen D in :data:`STAGE_AE`,
    recon only in :data:`STAGE_RECON`); ``jnp.where`` then keeps it
    bit-identical in :data:`STAGE_D`. D's own gradient, which needs only
    dense layers, sits in a ``lax.cond`` that runs in :data:`STAGE_D` alone.
    Same results as the ``lax.switch`` form; on XLA:CPU it is much faster,
    because convolutions inside a conditional miss the fast Eigen path.
    """
    is_d = state.stage == STAGE_D
    g_ae, metrics, logits = _ae_grads(b, state, images, pidx, adv_on=state.stage != STAGE_RECON)
    fakes = jax.lax.stop_gradient(to_images(logits))
    def d_grads(dp):
        grads, _, r1 = _d_grads(b, dp, images, fakes)
        return grads, r1

    def no_d_grads(dp):
        return jax.tree.map(jnp.zeros_like, dp), jnp.zeros((), jnp.float32)

    g_d, r1 = jax.lax.cond(is_d, d_grads, no_d_grads, state.d_params)
    if "d_r1" in metrics:
        metrics["d_r1"] = r1
    ae_params, ae_opt = _apply(b.ae_tx, state.ae_params, state.ae_opt_state, g_ae)
    d_params, d_opt = _apply(b.d_tx, state.d_params, state.d_opt_state, g_d)
    new = state.replace(ae_params=ae_params, ae_opt_state=ae_opt, d_params=d_params,
                        d_opt_state=d_opt)
    new = _select(~is_d, new, state, ("ae_params", "ae_opt_state"))  # AE learns unless D stage
    new = _select(is_d, new, state, ("d_params", "d_opt_state"))  # D learns only in D stage
    # In D's stage the step optimised D's loss; the AE's terms were computed, not used.
    metrics["loss"] = jnp.where(is_d, metrics["d_loss"], metrics["loss"])
    metrics["adv_weighted"] = jnp.where(is_d, 0.0, metrics["adv_weighted"])
    return new, metrics


def ema_decay(decay: float, updates: jax.Array) -> jax.Array:
    """A weight average's decay after ``updates`` updates: ``min(decay, (1 + n) / (10 + n))``.

    Ramped up as TensorFlow's ``ExponentialMovingAverage(num_updates=n)`` does: at a
    fixed 0.999 the average would still be half the initial weights after 700 steps (an
    average of a trained and an untrained network outputs gray), while early steps,
    weighted less, let it follow the network from the start. The AE's average counts
    the run's steps (``train.ae_ema``); D's counts D's own updates (``gan.d_ema``: D may
    first learn after a long AE stage).
    """
    n = jnp.asarray(updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def train_step_fn(b: Bound, state: TrainState, batch: jax.Array, fixed_stage: int | None = None
                  ) -> tuple[TrainState, Metrics]:
    """One train step of any family (pure; jit it via :func:`~raegan_jax.programs.make_train_step`).

    Args:
      b: the bound static pieces (:func:`bind`).
      state: the train state.
      batch: [B, H, W, C] images, float32 in [0, 1] or uint8.
      fixed_stage: None (default) for the one program whose on-device stage
        flag picks the update; or a stage the host knows holds for the whole
        sweep, for a program that runs only that stage's update (no AE
        gradient in a D step, no D in a reconstruction step) and leaves the
        flag alone.

    Returns:
      ``(new_state, metrics)``, the metrics measured on the pre-update
      parameters. ``loss`` is the objective this step optimised: the
      reconstruction objective (ae/rae, :data:`STAGE_RECON`), D's loss
      (:data:`STAGE_D`), or reconstruction + weighted adversarial term
      (:data:`STAGE_AE`; also under ``alternate``, whose D part is
      ``d_loss``). ``recon_loss`` [passes] per pass. GAN families add
      ``ae_updates`` and ``d_updates`` (0/1) and, except in a fixed
      reconstruction step, ``recon_objective`` and ``adv_weighted`` (the AE
      objective's parts), ``adv_loss`` [passes], ``d_loss``, ``d_real_acc``,
      ``d_fake_acc`` [passes]; the one-program step adds ``stage`` (the
      stage that ran). Where configured: ``adv_lambda`` [passes] (the
      adaptive weight λ), ``pass_weight`` [passes], and ``rule_acc``
      (the accuracy the threshold rule read: running, or the min with reals). ``finite`` flags a
      NaN/Inf loss. With ``train.diagnostics`` the ``diag/...`` instruments of
      :mod:`raegan_jax.diagnostics` are added.
    """
    images = as_images(batch)
    pidx = pass_index(b, state, images.shape[0])
    stage = state.stage
    diag = {}
    if b.cfg.train.diagnostics:  # measured on the pre-update parameters, like every metric
        diag = diagnostics.ae_diagnostics(
            b.ae, state.ae_params, images,
            lambda p: recon_objective(b, ae_logits(b, p, images), images, pidx)[0])
    if b.disc is None:
        new, metrics = recon_update(b, state, images, pidx)
    elif fixed_stage is not None:
        # The host knows the stage for the whole sweep: trace only its update.
        if fixed_stage == STAGE_D:
            new, metrics = d_update(b, state, images, pidx)
            for k in ("adv_lambda", "pass_weight"):  # not computed in a D sweep
                metrics.pop(k, None)
        elif fixed_stage == STAGE_AE:
            new, metrics = ae_update(b, state, images, pidx)
        else:
            new, metrics = recon_update(b, state, images, pidx, measure_d=False)
        metrics["ae_updates"] = jnp.int32(fixed_stage != STAGE_D)
        metrics["d_updates"] = jnp.int32(fixed_stage == STAGE_D)
    else:
        policy = b.cfg.gan.stage_policy
        if policy == "alternate":
            new, metrics = alternate_update(b, state, images, pidx)
        elif stage_impl(b.cfg) == "select":
            new, metrics = selected_update(b, state, images, pidx)
        else:
            branches = [functools.partial(f, b) for f in (ae_update, d_update, recon_update)]
            # lax.switch: one compiled program, only the selected branch runs.
            new, metrics = jax.lax.switch(jnp.clip(stage, 0, 2), branches, state, images, pidx)
        both = policy == "alternate"
        metrics["stage"] = stage
        metrics["ae_updates"] = ((stage != STAGE_D) | both).astype(jnp.int32)
        metrics["d_updates"] = ((stage == STAGE_D) | (both & (stage != STAGE_RECON))).astype(
            jnp.int32)
    if "d_fake_acc" in metrics:  # every GAN step that shows D the fakes (not a recon sweep)
        ctrl, rule_acc = controller_update(b.cfg, state.ctrl, metrics["d_fake_acc"],
                                           metrics["d_real_acc"])
        new = new.replace(ctrl=ctrl)
        if ctrl is not None or b.cfg.gan.threshold_on == "both":
            metrics["rule_acc"] = rule_acc
        if fixed_stage is None:
            stage = next_stage(b.cfg.gan.stage_policy, stage, rule_acc, b.cfg.gan.threshold,
                               b.cfg.gan.hysteresis)
    metrics["finite"] = jnp.all(jnp.asarray([jnp.isfinite(metrics["loss"]).all(),
                                             jnp.isfinite(metrics.get("d_loss", 0.0)).all()]))
    metrics.update(diag)
    # The weight averages move every step, whichever network learned: a frozen network's
    # average drifts towards its (unchanged) weights.
    if state.ae_ema is not None:
        new = new.replace(ae_ema=optax.incremental_update(
            new.ae_params, state.ae_ema, 1.0 - ema_decay(b.cfg.train.ae_ema, state.step)))
    if state.d_ema is not None and b.disc is not None:  # not in an AE stage's plain-AE steps
        new = new.replace(d_ema=optax.incremental_update(
            new.d_params, state.d_ema,
            1.0 - ema_decay(b.cfg.gan.d_ema, update_count(state.d_opt_state))))
    return new.replace(step=state.step + 1, stage=stage), metrics


def eval_step_fn(b: Bound, state: TrainState, batch: jax.Array,
                 weights: jax.Array | None = None) -> Metrics:
    """Evaluation on one batch: every pass's reconstruction loss, D's accuracies.

    Args:
      b: the bound static pieces.
      state: the train state (not modified).
      batch: [B, H, W, C] images.
      weights: optional [B] sample weights (0 for padding rows).

    Returns:
      Weighted means: ``recon_loss``, ``psnr`` (dB), ``ssim`` and ``hf_energy`` [passes] of
      the reconstructions (dm-pix, images in [0, 1]) of :func:`~raegan_jax.state.eval_params`
      (the AE's weight average under ``train.ae_ema``) and ``hf_energy_real`` of the
      images themselves (:mod:`raegan_jax.realism`); under ``train.ae_ema``
      also ``recon_loss_live`` [passes], the live AE's loss on the same
      images, so one run measures what the average gains; for GAN families
      ``d_loss``, ``d_real_acc``, ``d_fake_acc`` [passes] and D's mean
      probability of "real" on the reals and on each pass's fakes, ``d_real_prob``,
      ``d_fake_prob`` [passes] (:func:`~raegan_jax.losses.prob_real`), of
      :func:`~raegan_jax.state.eval_d_params` (D's weight average under
      ``gan.d_ema``, which adds the live D's with the suffix ``_live``); and
      ``weight`` (sum of weights).
    """
    images = as_images(batch)
    w = jnp.ones(images.shape[0]) if weights is None else weights.astype(jnp.float32)
    w_mean = w / w.sum()
    logits = ae_logits(b, eval_params(state), images)  # the weight average, if kept
    per_sample = losses.recon_loss(logits, images, b.cfg.train.recon_loss)
    outs = to_images(logits)
    m = {"recon_loss": per_sample @ w_mean, "weight": w.sum(),
         "psnr": jax.vmap(lambda o: pix.psnr(o, images))(outs) @ w_mean,
         "ssim": jax.vmap(lambda o: losses.ssim(o, images))(outs) @ w_mean,
         # realism.py's high-frequency energy: the ratio of the two is the detail kept
         "hf_energy": jax.vmap(high_frequency_energies)(outs) @ w_mean,
         "hf_energy_real": high_frequency_energies(images) @ w_mean}
    if state.ae_ema is not None:
        live = ae_logits(b, state.ae_params, images)
        m["recon_loss_live"] = losses.recon_loss(live, images, b.cfg.train.recon_loss) @ w_mean
    if b.disc is not None:
        ds = {"": eval_d_params(state)}
        if state.d_ema is not None:
            ds["_live"] = state.d_params
        for suffix, d_params in ds.items():
            real_l, fake_l = d_logits(b, d_params, images, to_images(logits))
            m["d_loss" + suffix] = losses.d_loss(real_l, fake_l, w)
            m["d_real_acc" + suffix] = losses.accuracy_real(real_l, w)
            m["d_fake_acc" + suffix] = losses.accuracy_fake(fake_l, w)
            m["d_real_prob" + suffix] = losses.prob_real(real_l, w)
            m["d_fake_prob" + suffix] = losses.prob_real(fake_l, w)
    return m
