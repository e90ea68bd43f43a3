"""Compiled programs: the jitted train step, eval step and many-steps-per-call sweep program.

Each is one ``jax.jit`` program over a :class:`jax.sharding.Mesh` (state
replicated, batch split over the ``"data"`` axis) with the state donated.
Models and static config are bound into the traced function with
``functools.partial`` (:func:`~raegan_jax.steps.bind`), never passed through jit.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from raegan_jax import seeds as seeds_lib
from raegan_jax.config import Config
from raegan_jax.parallel import (DATA_AXIS, batch_sharded, check_batch_divides, make_mesh,
                                 put_batch, put_global, replicated)
from raegan_jax.stages import AE_STAGE, ae_stage_config, split_by_group
from raegan_jax.state import TrainState, restart_ae_optimizer
from raegan_jax.steps import (Metrics, _require_epoch_length, bind, d_scores,
                              eval_step_fn, reconstruction_images, train_step_fn)

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

    def compile(self, state: TrainState, *args: Any,
                compiler_options: dict[str, Any] | None = None) -> float:
        """Compiles ahead of time for these arguments' shapes; returns the seconds it took.

        Later calls run that executable, so the first step is timed like every
        other. Arguments of other shapes or shardings then raise instead of
        silently compiling again. Nothing runs and nothing is donated here.
        ``compiler_options`` are XLA options for this program alone (e.g.
        ``{"xla_backend_optimization_level": 2}``), overriding ``XLA_FLAGS``.
        """
        t = time.perf_counter()
        lowered = self.jitted.lower(self._place(state), *args)
        self._compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
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
                    donate: bool = True, stage: int | None = None) -> TrainStep:
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
      stage: None (default): the on-device stage flag picks each step's
        update. A stage: a program running only that stage's update, for a
        stretch where the caller knows the stage (see :mod:`raegan_jax.stages`).

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
    jitted = jax.jit(functools.partial(train_step_fn, b, fixed_stage=stage),
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



def make_multi_step(cfg: Config, num_steps: int, *, steps_per_epoch: int,
                    mesh: Mesh | None = None, stage: int | None = None) -> TrainStep:
    """Returns a jitted function running up to ``num_steps`` train steps in one call.

    The sweep's batches are on device (:func:`sweep_batches`); step ``k`` of
    the sweep takes batch ``k``, so there is one dispatch per ``num_steps``
    steps. A call never crosses an epoch boundary: steps past the end of the
    sweep leave the state as it was, so one compiled program serves every call.

    Args:
      cfg: a validated config.
      num_steps: steps per call (unrolled on CPU, a rolled scan elsewhere).
      steps_per_epoch: steps per sweep (the batches' leading axis).
      mesh: the device mesh (default: :func:`~raegan_jax.parallel.make_mesh`).
      stage: None for the one program whose on-device flag picks the update
        (``threshold``, ``alternate``); or the stage a whole sweep runs in
        (``phases``, pretraining), for a program with only that update.

    Returns:
      A :class:`TrainStep` called as ``state, sums = fn(state, batches)``
      with ``batches`` uint8 [steps_per_epoch, B, H, W, C] split over the
      mesh along B. For a many-seed ``cfg`` (``train.seeds``) the state, the
      batches ([S, steps_per_epoch, B, ...]) and the sums have a leading seed
      axis (:func:`~raegan_jax.seeds.over_seeds`). ``sums`` holds metric sums over the steps run, ``count``
      (steps run), ``nonfinite_step`` (first step whose loss was NaN/Inf, or
      -1) and, for the one-program GAN step, ``stage_switches`` (steps after
      which the stage flag changed) and per-group sums (:func:`split_by_group`).
    """
    _require_epoch_length(cfg, steps_per_epoch)
    mesh = mesh or make_mesh(batch_size=cfg.train.batch_size)
    b = bind(cfg, steps_per_epoch)
    check_batch_divides(cfg.train.batch_size, mesh)
    bat = batch_sharded(mesh)

    def one(state, batches):
        k = state.step % steps_per_epoch
        batch = jax.lax.with_sharding_constraint(
            jax.lax.dynamic_index_in_dim(batches, k, axis=0, keepdims=False), bat)
        old = state
        state, m = train_step_fn(b, state, batch, fixed_stage=stage)
        if "stage" in m:
            m = split_by_group(m)
            m["stage_switches"] = (state.stage != old.stage).astype(jnp.int32)
        m["nonfinite_step"] = jnp.where(m.pop("finite"), -1, old.step)
        return state, m

    def run(state, batches):
        epoch_end = state.step - state.step % steps_per_epoch + steps_per_epoch

        def body(carry, _):
            st, acc = carry
            active = st.step < epoch_end
            new, m = one(st, batches)
            # Steps past the epoch's end keep the old state (a select, not lax.cond:
            # XLA:CPU runs convolutions inside conditionals on a slow path).
            st = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, st)
            m["nonfinite_step"] = jnp.where(active, m["nonfinite_step"], -1)
            bad = jnp.where(acc["nonfinite_step"] >= 0, acc["nonfinite_step"], m["nonfinite_step"])
            new_acc = {k: acc[k] + jnp.where(active, m[k], 0) for k in m}
            new_acc["nonfinite_step"] = bad
            new_acc["count"] = acc["count"] + active.astype(jnp.int32)
            return (st, new_acc), None

        m_shape = jax.eval_shape(one, state, batches)[1]
        acc0 = {k: jnp.zeros(v.shape, v.dtype) for k, v in m_shape.items()}
        acc0["nonfinite_step"] = jnp.int32(-1)
        acc0["count"] = jnp.int32(0)
        # Fully unrolled on CPU (no while loop: XLA:CPU misses its fast convolutions
        # inside loop bodies); a rolled loop elsewhere keeps compile time flat.
        unroll = 0 if jax.default_backend() == "cpu" else 1
        (state, acc), _ = jax.lax.scan(body, (state, acc0), None, length=num_steps, unroll=unroll)
        return state, acc

    rep = replicated(mesh)
    seeded = seeds_lib.many(cfg)
    jitted = jax.jit(seeds_lib.over_seeds(run, cfg),
                     in_shardings=(rep, sweep_sharded(mesh, seeded)), out_shardings=(rep, rep),
                     donate_argnums=0)
    return TrainStep(jitted, mesh, check_batch=False)


def sweep_sharded(mesh: Mesh, seeded: bool = False) -> NamedSharding:
    """[steps, B, ...] batches of a sweep (``seeded``: [S, steps, B, ...]), B split over the mesh."""
    return NamedSharding(mesh, P(*(None,) * seeded, None, DATA_AXIS))


def sweep_batches(images: np.ndarray, perm: np.ndarray, steps: int, batch_size: int,
                  mesh: Mesh) -> jax.Array:
    """A sweep's batches on device: ``images[perm[:steps * B]]`` as [steps, B, ...].

    Each process places only the rows of every global batch that its own
    devices hold (in a multi-process run it never sends another process's
    rows), so the same call serves one device, a mesh, and many processes.

    Args:
      images: uint8 [N, H, W, C] host images (the same on every process).
      perm: int [>= steps * batch_size] this sweep's order (:func:`epoch_permutation`),
        or [S, ...] one order per seed of a many-seed run (then the batches are
        [S, steps, B, ...]).
      steps: steps in the sweep.
      batch_size: the global batch size.
      mesh: the device mesh.
    """
    perm = np.asarray(perm)
    lead = perm.shape[:-1]
    idx = perm[..., :steps * batch_size].reshape(*lead, steps, batch_size)
    return put_global((*idx.shape, *images.shape[1:]), sweep_sharded(mesh, bool(lead)),
                      lambda index: images[idx[index[:idx.ndim]]])


def device_sweep_batches(images: jax.Array, perm: jax.Array, steps: int, batch_size: int,
                         mesh: Mesh) -> jax.Array:
    """:func:`sweep_batches` from training images already on the devices: the sweep's
    batches gathered there, by one compiled program (the same for every sweep), so
    nothing crosses from the host but the order.

    Args:
      images: uint8 [N, H, W, C], replicated over ``mesh`` (:func:`put_replicated`, once a run).
      perm: int32 [N] or [S, N] (a many-seed run), replicated: the sweep's order(s).
    """
    return _gather(mesh, perm.ndim - 1, steps, batch_size)(images, perm)


@functools.lru_cache(maxsize=None)
def _gather(mesh: Mesh, seeded: int, steps: int, batch_size: int) -> Callable:
    def gather(images, perm):
        idx = perm[..., :steps * batch_size]
        return images[idx.reshape(*idx.shape[:-1], steps, batch_size)]

    return jax.jit(gather, out_shardings=sweep_sharded(mesh, bool(seeded)))


def sweep_order(cfg: Config, sweep: int, n: int) -> np.ndarray:
    """The data order of ``sweep``: [n] for a run, [S, n] (one per seed) for a many-seed run."""
    perms = [np.asarray(epoch_permutation(s, sweep, n)) for s in seeds_lib.seeds_of(cfg)]
    return np.stack(perms) if seeds_lib.many(cfg) else perms[0]


@functools.partial(jax.jit, static_argnums=2)  # one dispatch per sweep, compiled once
def epoch_permutation(seed: int, sweep: int, n: int) -> jax.Array:
    """The data order of one sweep: a permutation of ``n`` from ``(seed, sweep)``.

    Depends only on the seed and the sweep number, so a resumed run sees the
    same order as an uninterrupted one.
    """
    key = jax.random.fold_in(jax.random.key(seed), sweep)
    return jax.random.permutation(key, n).astype(jnp.int32)


class Evaluator:
    """Evaluates the state on the test set, held on device as sharded, zero-padded batches."""

    def __init__(self, cfg: Config, mesh, test_images: np.ndarray):
        bs = cfg.train.batch_size
        n = len(test_images)
        pad = (-n) % bs
        images = np.concatenate([test_images, np.zeros((pad, *test_images.shape[1:]), np.uint8)])
        weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        self.batches = [put_batch((images[i:i + bs], weights[i:i + bs]), mesh)
                        for i in range(0, len(images), bs)]
        self.step = make_eval_step(cfg, mesh=mesh)

    def __call__(self, state: TrainState) -> dict:
        """Weighted means over the whole test set (still on device)."""
        parts = [self.step(state, x, w) for x, w in self.batches]
        weight = sum(m["weight"] for m in parts)
        return {k: sum(m[k] * m["weight"] for m in parts) / weight for k in parts[0] if k != "weight"}


def start_sweep(cfg: Config, state: TrainState, sweep) -> TrainState:
    """The state at the start of ``sweep`` (a :class:`~raegan_jax.stages.Sweep`): its fixed
    stage on the flag, and the AE's Adam restarted where the sweep says so (the first
    sweep after the AE stage)."""
    if sweep.stage is not None:  # every seed's flag, in a many-seed run
        state = state.replace(stage=jnp.full_like(state.stage, sweep.stage))
    if sweep.restart_ae_optimizer:
        state = seeds_lib.map_state(cfg, functools.partial(restart_ae_optimizer, cfg), state)
    return state


def sweep_programs(cfg: Config, kinds: set, n_dispatch: int, steps_per_epoch: int, mesh: Mesh
                   ) -> dict[Any, TrainStep]:
    """One multi-step program per kind of sweep (``Sweep.program``) a run's epochs use: the
    on-device stage program, a stage's own program, or the plain AE's step on this run's
    state for an AE-stage sweep. Not yet compiled (:meth:`TrainStep.compile`)."""
    return {kind: make_multi_step(ae_stage_config(cfg) if kind == AE_STAGE else cfg, n_dispatch,
                                  steps_per_epoch=steps_per_epoch, mesh=mesh,
                                  stage=None if kind == AE_STAGE else kind)
            for kind in sorted(kinds, key=repr)}


# --------------------------------------------------------------------------- a run's outputs

def reconstructions(cfg: Config, state: TrainState, *image_sets: np.ndarray, chunk: int = 512
                    ) -> list[np.ndarray]:
    """Every pass's reconstruction of each of ``image_sets`` (uint8 [N, H, W, C]) as 8-bit
    images [passes, N, H, W, C], by the weights the run evaluates, in chunks of ``chunk``:
    one program compiled for all (the last chunk of a set is padded)."""
    run = jax.jit(functools.partial(reconstruction_images, bind(cfg)))

    def one(images):
        out = []
        for i in range(0, len(images), chunk):
            x = images[i:i + chunk]
            pad = chunk - len(x)
            y = run(state, np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.uint8)]) if pad else x)
            out.append(np.asarray(y)[:, :len(x)])
        return np.concatenate(out, axis=1)

    return [one(images) for images in image_sets]


def game_d_scores(cfg: Config, state: TrainState, *image_sets: np.ndarray) -> list[np.ndarray]:
    """The game D's "real" logits [N] of each of ``image_sets`` (uint8 [N, H, W, C])."""
    score = jax.jit(functools.partial(d_scores, bind(cfg)))
    return [np.asarray(score(state, images)) for images in image_sets]

