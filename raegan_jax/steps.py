"""Jitted train and eval steps for the four families, and the stage logic (SPEC §3–4).

Every family runs through :func:`train_step_fn`, a pure function of
``(bound, state, batch)``. ``bound`` carries the models, optimizers and static
config; it is bound with ``functools.partial`` and never passed through jit.

The stage flag (``state.stage``) selects which network learns, inside the one
compiled program, through ``lax.switch``:

* :data:`~raegan_jax.state.STAGE_AE` — the AE learns reconstruction plus the
  adversarial term against the frozen D;
* :data:`~raegan_jax.state.STAGE_D` — D learns real vs. fake against the frozen AE;
* :data:`~raegan_jax.state.STAGE_RECON` — the AE learns reconstruction only.

The ``threshold`` policy rewrites the flag on device after every step
(:func:`next_stage`); ``alternate`` runs a D update then an AE update every
step; ``phases`` leaves the flag to the training loop.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import dm_pix as pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from raegan_jax import diagnostics, losses
from raegan_jax.config import RECURSIVE_FAMILIES, Config, ConfigError
from raegan_jax.cycle import cycle_pass
from raegan_jax.models import build_models, to_images
from raegan_jax.parallel import (batch_sharded, check_batch_divides, in_chunks, largest_divisor,
                                 make_mesh, replicated)
from raegan_jax.recursion import rae_objective, recursive_apply
from raegan_jax.state import STAGE_AE, STAGE_D, STAGE_RECON, TrainState, make_optimizers

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
    places each sample in its sweep, and a cosine schedule decays over the run."""
    cycle = (cfg.model.family in RECURSIVE_FAMILIES and cfg.model.passes > 1
             and cfg.train.rae_objective == "cycle")
    return cycle or (cfg.train.lr_schedule == "cosine" and cfg.train.decay_steps == 0)


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
            "this config needs steps_per_epoch (the cycle objective or a cosine schedule "
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

    :func:`raegan_jax.cycle.cycle_pass` is the one definition (the PyTorch
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


def _gan_metrics(b: Bound, recon_obj: jax.Array, per_pass: jax.Array, real_l: jax.Array,
                 fake_l: jax.Array, adv_on: jax.Array | bool = False) -> Metrics:
    """A GAN step's metrics, and the AE's objective (the one place it is defined).

    ``loss`` is the AE's objective: ``recon_objective`` plus ``adv_weighted``
    (``gan.adv_weight`` x the adversarial term summed over passes, 0 unless
    ``adv_on``). D's update replaces ``loss`` by D's loss, which it optimises.
    """
    adv = losses.adversarial_loss(fake_l, b.cfg.gan.adv_loss)
    adv_weighted = jnp.where(adv_on, b.cfg.gan.adv_weight * adv.sum(), 0.0)
    return {
        "loss": recon_obj + adv_weighted,
        "recon_objective": recon_obj,
        "adv_weighted": adv_weighted,
        "recon_loss": per_pass,
        "adv_loss": adv,
        "d_loss": losses.d_loss(real_l, fake_l),
        "d_real_acc": losses.accuracy_real(real_l),
        "d_fake_acc": losses.accuracy_fake(fake_l),
    }


def _apply(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# --------------------------------------------------------------------------- updates
# Each update returns (state, metrics) with the same metric structure, so the
# three can be branches of one lax.switch. A branch that does not update a
# network passes its leaves through untouched (bit-identical).

def recon_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array
                 ) -> tuple[TrainState, Metrics]:
    """The AE learns reconstruction only (ae/rae, pretraining, the phases' first sweep)."""
    def loss_fn(p):
        logits = ae_logits(b, p, images)
        obj, per_pass = recon_objective(b, logits, images, pidx)
        return obj, (per_pass, logits)

    (obj, (per_pass, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.ae_params)
    ae_params, ae_opt = _apply(b.ae_tx, state.ae_params, state.ae_opt_state, grads)
    if b.disc is None:
        metrics = {"loss": obj, "recon_loss": per_pass}
    else:
        real_l, fake_l = d_logits(b, state.d_params, images,
                                  jax.lax.stop_gradient(to_images(logits)))
        metrics = _gan_metrics(b, obj, per_pass, real_l, fake_l)
    return state.replace(ae_params=ae_params, ae_opt_state=ae_opt), metrics


def _d_grads(b: Bound, d_params: Any, images: jax.Array, fakes: jax.Array
             ) -> tuple[Any, tuple[jax.Array, jax.Array]]:
    """D's gradient of its loss on real images and fakes: (grads, (real logits, fake logits))."""
    def loss_fn(dp):
        real_l, fake_l = d_logits(b, dp, images, fakes)
        return losses.d_loss(real_l, fake_l), (real_l, fake_l)

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    return grads, logits


def d_update(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array
             ) -> tuple[TrainState, Metrics]:
    """D learns real -> 1, every pass's reconstruction -> 0; the AE is frozen."""
    logits = jax.lax.stop_gradient(ae_logits(b, state.ae_params, images))
    obj, per_pass = recon_objective(b, logits, images, pidx)
    grads, (real_l, fake_l) = _d_grads(b, state.d_params, images, to_images(logits))
    d_params, d_opt = _apply(b.d_tx, state.d_params, state.d_opt_state, grads)
    metrics = _gan_metrics(b, obj, per_pass, real_l, fake_l)
    metrics["loss"] = metrics["d_loss"]  # what this step optimised
    return state.replace(d_params=d_params, d_opt_state=d_opt), metrics


def _ae_grads(b: Bound, state: TrainState, images: jax.Array, pidx: jax.Array,
              adv_on: jax.Array | bool) -> tuple[Any, Metrics, jax.Array]:
    """The AE's gradient of recon (+ ``adv_weight`` x adversarial if ``adv_on``) against D.

    D is a constant here: only its input gradient is taken, and it sees the
    real images outside the differentiated function (their logits feed the
    metrics only), so no backward pass runs over real rows.

    Returns:
      ``(grads, metrics, logits)`` with logits [passes, B, H, W, C].
    """
    real_l = b.disc.apply({"params": state.d_params}, images)

    def loss_fn(p):
        logits = ae_logits(b, p, images)
        obj, per_pass = recon_objective(b, logits, images, pidx)
        fake_l = b.disc.apply({"params": state.d_params}, to_images(logits))  # [P, B]
        m = _gan_metrics(b, obj, per_pass, real_l, fake_l, adv_on)
        return m["loss"], (m, logits)

    (_, (metrics, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.ae_params)
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
    return new, {**m_ae, **{k: m_d[k] for k in ("d_loss", "d_real_acc", "d_fake_acc")}}


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
    g_d = jax.lax.cond(is_d, lambda dp: _d_grads(b, dp, images, fakes)[0],
                       lambda dp: jax.tree.map(jnp.zeros_like, dp), state.d_params)
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


def stage_impl(cfg: Config) -> str:
    """How the stage picks the update: "switch" (lax.switch) or "select" (see
    :func:`selected_update`). ``gan.stage_impl="auto"`` uses "select" on CPU."""
    impl = cfg.gan.stage_impl
    if impl == "auto":
        return "select" if jax.default_backend() == "cpu" else "switch"
    return impl


def next_stage(policy: str, stage: jax.Array, fake_acc: jax.Array, threshold: float) -> jax.Array:
    """The stage after this step (all on device, no host sync).

    ``threshold`` (the report's rule): train D while it classifies at most
    ``threshold`` of the fakes correctly; once it classifies more, train the
    AE until D's accuracy on fakes falls to ``threshold`` or below. Both
    directions reduce to "AE if accuracy > threshold, else D". ``fake_acc``
    is measured in this step's forward pass, over the fakes of every pass.
    :data:`STAGE_RECON` is left to the loop (pretraining), and so is every
    stage under the other policies.
    """
    if policy != "threshold":
        return stage
    rule = jnp.where(fake_acc > threshold, STAGE_AE, STAGE_D).astype(stage.dtype)
    return jnp.where(stage == STAGE_RECON, stage, rule)


def train_step_fn(b: Bound, state: TrainState, batch: jax.Array) -> tuple[TrainState, Metrics]:
    """One train step of any family (pure; jit it via :func:`make_train_step`).

    Args:
      b: the bound static pieces (:func:`bind`).
      state: the train state.
      batch: [B, H, W, C] images, float32 in [0, 1] or uint8.

    Returns:
      ``(new_state, metrics)``, the metrics measured on the pre-update
      parameters. ``loss`` is the objective this step optimised: the
      reconstruction objective (ae/rae, :data:`STAGE_RECON`), D's loss
      (:data:`STAGE_D`), or reconstruction + weighted adversarial term
      (:data:`STAGE_AE`; also under ``alternate``, whose D part is
      ``d_loss``). ``recon_loss`` [passes] per pass. GAN families add
      ``recon_objective`` and ``adv_weighted`` (the AE objective's parts),
      ``adv_loss`` [passes], ``d_loss``, ``d_real_acc``, ``d_fake_acc``
      [passes], ``stage`` (the stage that ran), ``ae_updates`` and
      ``d_updates`` (0/1). ``finite`` flags a NaN/Inf loss. With
      ``train.diagnostics`` the ``diag/...`` instruments of
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
        stage = next_stage(policy, stage, metrics["d_fake_acc"].mean(), b.cfg.gan.threshold)
    metrics["finite"] = jnp.all(jnp.asarray([jnp.isfinite(metrics["loss"]).all(),
                                             jnp.isfinite(metrics.get("d_loss", 0.0)).all()]))
    metrics.update(diag)
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
      Weighted means: ``recon_loss``, ``psnr`` (dB) and ``ssim`` [passes] of
      the reconstructions (dm-pix, images in [0, 1]); for GAN families
      ``d_loss``, ``d_real_acc``, ``d_fake_acc`` [passes]; and ``weight``
      (sum of weights).
    """
    images = as_images(batch)
    w = jnp.ones(images.shape[0]) if weights is None else weights.astype(jnp.float32)
    w_mean = w / w.sum()
    logits = ae_logits(b, state.ae_params, images)
    per_sample = losses.recon_loss(logits, images, b.cfg.train.recon_loss)
    outs = to_images(logits)
    m = {"recon_loss": per_sample @ w_mean, "weight": w.sum(),
         "psnr": jax.vmap(lambda o: pix.psnr(o, images))(outs) @ w_mean,
         "ssim": jax.vmap(lambda o: pix.ssim(o, images))(outs) @ w_mean}
    if b.disc is not None:
        real_l, fake_l = d_logits(b, state.d_params, images, to_images(logits))
        m["d_loss"] = losses.d_loss(real_l, fake_l, w)
        m["d_real_acc"] = losses.accuracy_real(real_l, w)
        m["d_fake_acc"] = losses.accuracy_fake(fake_l, w)
    return m


# --------------------------------------------------------------------------- jitting

class TrainStep:
    """A jitted train step: ``state, metrics = step(state, batch)``.

    The state is donated (its buffers are reused for the new state, so the
    old ``state`` must not be used after the call). Batches are split over
    the mesh; the state is replicated.

    Attributes:
      jitted: the underlying ``jax.jit`` function (``.lower``, cache stats).
      mesh: the device mesh it runs on.
    """

    def __init__(self, jitted: Callable, mesh: Mesh, check_batch: bool = True):
        self.jitted = jitted
        self.mesh = mesh
        self._check_batch = check_batch
        self._rep = replicated(mesh)
        self._compiled = None

    def _place(self, state: TrainState) -> TrainState:
        # A fresh state, or a leaf set from the host (e.g. the stage), is not yet
        # committed to the mesh; placing it keeps a single compiled program.
        rep = self._rep
        return jax.tree.map(
            lambda x: x if getattr(x, "sharding", None) == rep else jax.device_put(x, rep), state)

    def compile(self, state: TrainState, *args: Any) -> float:
        """Compiles ahead of time for these arguments' shapes; returns the seconds it took.

        Later calls run that executable, so the first step is timed like every
        other. Arguments of other shapes or shardings then raise instead of
        silently compiling again. Nothing runs and nothing is donated here.
        """
        t = time.perf_counter()
        self._compiled = self.jitted.lower(self._place(state), *args).compile()
        return time.perf_counter() - t

    def __call__(self, state: TrainState, *args: Any):
        if self._check_batch:
            check_batch_divides(args[0].shape[0], self.mesh)
        fn = self._compiled if self._compiled is not None else self.jitted
        return fn(self._place(state), *args)

    def compiles(self) -> int:
        """How many programs this step has compiled so far (ahead of time included)."""
        return self.jitted._cache_size() + (self._compiled is not None)  # pylint: disable=protected-access


def make_train_step(cfg: Config, *, mesh: Mesh | None = None, steps_per_epoch: int | None = None,
                    donate: bool = True) -> TrainStep:
    """Returns the jitted train step for ``cfg``.

    Args:
      cfg: a validated config.
      mesh: device mesh (default: :func:`~raegan_jax.parallel.make_mesh` for
        the batch size: every device, data parallel).
      steps_per_epoch: train steps per sweep over the training images,
        ``len(train_images) // batch_size`` (:func:`steps_per_epoch`).
        Required where :func:`needs_epoch_length` (the ``cycle`` objective
        with several passes, a cosine schedule without ``decay_steps``).
      donate: donate the input state's buffers (default True).

    Returns:
      A :class:`TrainStep`; call it as ``state, metrics = step(state, batch)``
      with ``batch`` [B, H, W, C] float32 in [0, 1] (or uint8), B divisible
      by the number of devices. Feed the batches of sweep k in the order
      ``epoch_permutation(seed, k, n)`` to train exactly what ``raegan train``
      trains.

    Raises:
      ConfigError: ``steps_per_epoch`` is missing where it is needed.
    """
    _require_epoch_length(cfg, steps_per_epoch)
    mesh = mesh or make_mesh(batch_size=cfg.train.batch_size)
    b = bind(cfg, steps_per_epoch)
    rep = replicated(mesh)
    jitted = jax.jit(functools.partial(train_step_fn, b),
                     in_shardings=(rep, batch_sharded(mesh)), out_shardings=(rep, rep),
                     donate_argnums=0 if donate else ())
    return TrainStep(jitted, mesh)


def make_eval_step(cfg: Config, *, mesh: Mesh | None = None) -> Callable[..., Metrics]:
    """Returns the jitted eval step: ``metrics = eval_step(state, batch, weights=None)``.

    See :func:`eval_step_fn` for the metrics. The state is not donated.
    """
    mesh = mesh or make_mesh(batch_size=cfg.train.batch_size)
    b = bind(cfg)
    rep, bat = replicated(mesh), batch_sharded(mesh)
    jitted = jax.jit(functools.partial(eval_step_fn, b), in_shardings=(rep, bat, bat),
                     out_shardings=rep)

    def eval_step(state: TrainState, batch: Any, weights: Any = None) -> Metrics:
        check_batch_divides(batch.shape[0], mesh)
        if weights is None:
            weights = jnp.ones((batch.shape[0],), jnp.float32)
        return jitted(state, batch, weights)

    eval_step.jitted = jitted  # type: ignore[attr-defined]
    return eval_step


# --------------------------------------------------------------------------- many steps

# Which network a GAN step trained: the AE against D (``ae_learns``), D
# (``d_learns``) or the AE on reconstruction alone (``recon``). Under
# ``alternate`` a step is in both ae_learns and d_learns.
STEP_GROUPS = ("ae_learns", "d_learns", "recon")
GROUPED_METRICS = ("loss", "recon_loss", "adv_loss", "d_loss", "d_real_acc", "d_fake_acc")


def split_by_group(m: Metrics) -> Metrics:
    """Adds per-group copies of a GAN step's metrics, zero outside the step's group.

    Summed over steps and divided by ``<group>/steps``, they give means over
    the steps where that network learned, so a controller that flips the
    stage is visible instead of averaged away. Consumes ``m["stage"]``.
    """
    stage = m.pop("stage")
    masks = {"ae_learns": (m["ae_updates"] == 1) & (stage != STAGE_RECON),
             "d_learns": m["d_updates"] == 1,
             "recon": stage == STAGE_RECON}
    out = dict(m)
    for g, mask in masks.items():
        out[f"{g}/steps"] = mask.astype(jnp.int32)
        for k in GROUPED_METRICS:
            out[f"{g}/{k}"] = jnp.where(mask, m[k], jnp.zeros_like(m[k]))
    return out


def make_multi_step(cfg: Config, num_steps: int, *, steps_per_epoch: int,
                    mesh: Mesh | None = None) -> TrainStep:
    """Returns a jitted function running up to ``num_steps`` train steps in one call.

    The dataset stays on device; each step gathers its batch from it through
    this sweep's permutation, so no data crosses from the host and there is
    one dispatch per ``num_steps`` steps. A call never crosses an epoch
    boundary: steps past the end of the epoch leave the state as it was, so
    one compiled program serves every call.

    Call as ``state, sums = fn(state, data, perm)`` with ``data`` uint8
    [N, H, W, C] (replicated) and ``perm`` int32 [N] (the sweep's order).
    ``sums`` holds metric sums over the steps run, ``count`` (steps run),
    ``nonfinite_step`` (first step whose loss was NaN/Inf, or -1) and, for
    GAN families, ``stage_switches`` (steps after which the stage flag
    changed) and per-group sums (:func:`split_by_group`).
    """
    _require_epoch_length(cfg, steps_per_epoch)
    mesh = mesh or make_mesh(batch_size=cfg.train.batch_size)
    b = bind(cfg, steps_per_epoch)
    bs = cfg.train.batch_size
    check_batch_divides(bs, mesh)
    bat = batch_sharded(mesh)

    def one(state, data, perm):
        k = state.step % steps_per_epoch
        idx = jax.lax.dynamic_slice_in_dim(perm, k * bs, bs)
        batch = jax.lax.with_sharding_constraint(jnp.take(data, idx, axis=0), bat)
        old = state
        state, m = train_step_fn(b, state, batch)
        if "stage" in m:
            m = split_by_group(m)
            m["stage_switches"] = (state.stage != old.stage).astype(jnp.int32)
        m["nonfinite_step"] = jnp.where(m.pop("finite"), -1, old.step)
        return state, m

    def run(state, data, perm):
        epoch_end = state.step - state.step % steps_per_epoch + steps_per_epoch

        def body(carry, _):
            st, acc = carry
            active = st.step < epoch_end
            new, m = one(st, data, perm)
            # Steps past the epoch's end keep the old state (a select, not lax.cond:
            # XLA:CPU runs convolutions inside conditionals on a slow path).
            st = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, st)
            m["nonfinite_step"] = jnp.where(active, m["nonfinite_step"], -1)
            bad = jnp.where(acc["nonfinite_step"] >= 0, acc["nonfinite_step"], m["nonfinite_step"])
            new_acc = {k: acc[k] + jnp.where(active, m[k], 0) for k in m}
            new_acc["nonfinite_step"] = bad
            new_acc["count"] = acc["count"] + active.astype(jnp.int32)
            return (st, new_acc), None

        m_shape = jax.eval_shape(one, state, data, perm)[1]
        acc0 = {k: jnp.zeros(v.shape, v.dtype) for k, v in m_shape.items()}
        acc0["nonfinite_step"] = jnp.int32(-1)
        acc0["count"] = jnp.int32(0)
        # Fully unrolled on CPU (no while loop: XLA:CPU misses its fast convolutions
        # inside loop bodies); a rolled loop elsewhere keeps compile time flat.
        unroll = 0 if jax.default_backend() == "cpu" else 1
        (state, acc), _ = jax.lax.scan(body, (state, acc0), None, length=num_steps, unroll=unroll)
        return state, acc

    rep = replicated(mesh)
    jitted = jax.jit(run, in_shardings=(rep, rep, rep), out_shardings=(rep, rep),
                     donate_argnums=0)
    return TrainStep(jitted, mesh, check_batch=False)


@functools.partial(jax.jit, static_argnums=2)  # one dispatch per sweep, compiled once
def epoch_permutation(seed: int, sweep: int, n: int) -> jax.Array:
    """The data order of one sweep: a permutation of ``n`` from ``(seed, sweep)``.

    Depends only on the seed and the sweep number, so a resumed run sees the
    same order as an uninterrupted one.
    """
    key = jax.random.fold_in(jax.random.key(seed), sweep)
    return jax.random.permutation(key, n).astype(jnp.int32)
