"""Which network learns when: the stage policies, in one place (SPEC §4).

The stage flag (``state.stage``, on device) takes one of three values:

* :data:`STAGE_AE` — the AE learns reconstruction plus the
  adversarial term against the frozen D;
* :data:`STAGE_D` — D learns real vs. fake against the frozen AE;
* :data:`STAGE_RECON` — the AE learns reconstruction only.

Two levels decide it:

* **Per sweep, on the host** (:func:`sweep_plan`): the AE stage's epochs
  (``train.ae_stage_epochs``, any family but ``ae``) train the plain one-pass
  AE (:func:`ae_stage_config`), D and the recursion untouched; the ``phases`` policy (the report's CIFAR-10
  schedule) runs a reconstruction sweep, a D sweep, then an adversarial AE
  sweep. The stage of such a sweep is *fixed*: the loop runs a program
  specialised to it (a D sweep takes no AE gradient, a reconstruction sweep
  touches no D).
* **Per step, on device**: ``threshold`` (:func:`next_stage`, the report's
  rule) rewrites the flag after every step inside the one compiled program;
  ``alternate`` runs a D update then an AE update every step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from raegan_jax.config import Config

# Values of the on-device stage flag (``TrainState.stage``).
STAGE_AE = 0  # the AE learns against the frozen discriminator
STAGE_D = 1  # the discriminator learns against the frozen AE
STAGE_RECON = 2  # the AE learns reconstruction only (ae/rae, pretraining, phases sweep 1)
# Their short names (benchmark rows, ``raegan bench``).
STAGE_NAMES = {STAGE_AE: "ae", STAGE_D: "d", STAGE_RECON: "recon"}

Metrics = dict[str, jax.Array]

# What each sweep of a multi-sweep epoch is called in the metrics (by its stage).
SWEEP_NAMES = {STAGE_RECON: "recon_sweep", STAGE_D: "d_sweep", STAGE_AE: "game_sweep"}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One sweep over the training images.

    Attributes:
      stage: the stage the sweep starts in, or None to leave the state's flag.
      fixed: the stage stays put for the whole sweep (the loop then runs the
        program specialised to it).
      ae_stage: an AE-stage sweep (the plain one-pass AE's program).
      restart_ae_optimizer: the AE's optimizer state (Adam moments, schedule
        count) is re-initialised before the sweep's first step.
    """

    stage: int | None
    fixed: bool = False
    ae_stage: bool = False  # the plain one-pass AE learns (train.ae_stage_epochs)
    restart_ae_optimizer: bool = False  # the AE's Adam starts afresh (the AE stage's end)

    @property
    def name(self) -> str | None:
        return SWEEP_NAMES.get(self.stage)

    @property
    def program(self) -> int | str | None:
        """Which compiled program runs the sweep: :data:`AE_STAGE` (the plain AE's
        step), a stage (fixed for the sweep), or None (the on-device flag picks)."""
        if self.ae_stage:
            return AE_STAGE
        return self.stage if self.fixed else None


# The program key of an AE-stage sweep (Sweep.program).
AE_STAGE = "ae_stage"


def ae_stage_config(cfg: Config) -> Config:
    """The config whose train step an AE-stage sweep runs: the same model, data and
    optimizer settings as the family ``ae`` with one pass (reconstruction of pass 1
    only; D, if any, left as it is). Its state is ``cfg``'s own, so the family's
    training continues from the same parameters (and weight average); the AE's
    Adam moments restart there (:attr:`Sweep.restart_ae_optimizer`)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family="ae", passes=1))


def sweep_plan(cfg: Config, epoch: int) -> list[Sweep]:
    """The sweeps of (zero-based) ``epoch``, in order.

    The first ``train.ae_stage_epochs`` epochs are AE-stage sweeps (the plain
    one-pass AE); ``phases`` epochs are reconstruction, D, adversarial AE; the
    first game epoch after the stage starts with D (as a fresh run does at step 0);
    otherwise one sweep whose stage the on-device policy drives. The first sweep after the AE stage restarts the AE's optimizer.
    """
    if epoch < cfg.train.ae_stage_epochs:
        # The flag reads "reconstruction" meanwhile (the AE's program ignores it).
        return [Sweep(STAGE_RECON, fixed=True, ae_stage=True)]
    plan = _family_plan(cfg, epoch)
    if epoch == cfg.train.ae_stage_epochs > 0:
        # Why: Adam's second moments, settled on the one-pass AE's small gradients,
        # scale the recursion's (or the game's) larger first gradients into steps
        # 2-4x too long, and the trained AE falls back to the mean-image plateau
        # (experiments/notes/2026-11-30_to_12-06-results-history.md §3 item 9). Fresh moments start the family's
        # training as train.init_from does.
        plan[0] = dataclasses.replace(plan[0], restart_ae_optimizer=True)
    return plan


def _family_plan(cfg: Config, epoch: int) -> list[Sweep]:
    if not cfg.is_gan:
        return [Sweep(None)]
    pre = cfg.train.ae_stage_epochs
    if cfg.gan.stage_policy == "phases":
        return [Sweep(STAGE_RECON, True), Sweep(STAGE_D, True), Sweep(STAGE_AE, True)]
    if epoch == pre and pre > 0:
        return [Sweep(STAGE_D)]
    return [Sweep(None)]


def sweeps_before(cfg: Config, epoch: int) -> int:
    """How many sweeps the epochs before ``epoch`` run (a step's sweep is ``step // spe``)."""
    return sum(len(sweep_plan(cfg, e)) for e in range(epoch))


def stage_impl(cfg: Config) -> str:
    """How the one-program step picks the update: "switch" (lax.switch) or "select"
    (see :func:`~raegan_jax.steps.selected_update`). ``gan.stage_impl="auto"``
    uses "select" on CPU."""
    impl = cfg.gan.stage_impl
    if impl == "auto":
        return "select" if jax.default_backend() == "cpu" else "switch"
    return impl


def next_stage(policy: str, stage: jax.Array, acc: jax.Array, threshold: float,
               hysteresis: float = 0.0) -> jax.Array:
    """The stage after this step (all on device, no host sync).

    ``threshold`` (the report's rule): train D while it classifies at most
    ``threshold`` of the fakes correctly; once it classifies more, train the
    AE until D's accuracy on fakes falls to ``threshold`` or below. Both
    directions reduce to "AE if accuracy > threshold, else D". With a
    ``hysteresis`` band h the switches move apart: D's stage hands over when
    the accuracy exceeds ``threshold + h``, the AE's when it falls to
    ``threshold - h`` or below; inside the band the stage stays. ``acc``
    is what the rule reads (:func:`controller_update`: this step's accuracy
    over every pass's fakes or its running mean, and with
    ``gan.threshold_on="both"`` the smaller of that and D's accuracy on
    reals). :data:`STAGE_RECON` is left to the loop (pretraining), and so is
    every stage under the other policies.
    """
    if policy != "threshold":
        return stage
    to_ae = acc > threshold + hysteresis
    to_d = acc <= threshold - hysteresis
    # h = 0: to_ae and to_d are complements, the report's rule exactly.
    rule = jnp.where(to_ae, STAGE_AE, jnp.where(to_d, STAGE_D, stage)).astype(stage.dtype)
    return jnp.where(stage == STAGE_RECON, stage, rule)


def needs_controller(cfg: Config) -> bool:
    """True if the GAN keeps a running accuracy of D on each pass's fakes in its state
    (``gan.threshold_ema`` > 0 or ``gan.pass_weighting="caught"``)."""
    g = cfg.gan
    return cfg.is_gan and (g.threshold_ema > 0 or g.pass_weighting == "caught")


def init_controller(cfg: Config) -> dict | None:
    """The controller's memory at step 0: D's running accuracy on fakes per pass,
    ``{"fake_acc": [passes]}``, and with ``gan.threshold_on="both"`` on reals,
    ``"real_acc": []``, all starting at ``gan.threshold`` (no evidence either
    way); None when no controller needs it."""
    if not needs_controller(cfg):
        return None
    t = cfg.gan.threshold
    ctrl = {"fake_acc": jnp.full((cfg.model.passes,), t, jnp.float32)}
    if cfg.gan.threshold_on == "both":
        ctrl["real_acc"] = jnp.full((), t, jnp.float32)
    return ctrl


def controller_update(cfg: Config, ctrl: dict | None, fake_acc: jax.Array,
                      real_acc: jax.Array) -> tuple[dict | None, jax.Array]:
    """Folds this step's accuracies of D into the running means; returns what the
    threshold rule reads.

    Args:
      cfg: the config (``gan.threshold_ema`` is the means' decay; 0 keeps
        only the latest step; ``gan.threshold_on`` what the rule reads).
      ctrl: the state's controller memory (:func:`init_controller`) or None.
      fake_acc: [passes] D's accuracy on this step's fakes.
      real_acc: [] D's accuracy on this step's real images.

    Returns:
      ``(new ctrl, rule's accuracy)``: the accuracy on fakes averaged over
      passes (running or this step's), and with ``threshold_on="both"`` the
      smaller of that and the accuracy on reals.
    """
    fake_acc, real_acc = fake_acc.astype(jnp.float32), real_acc.astype(jnp.float32)
    if ctrl is not None:
        beta = cfg.gan.threshold_ema
        ema = lambda old, new: beta * old + (1.0 - beta) * new
        ctrl = {k: ema(v, fake_acc if k == "fake_acc" else real_acc) for k, v in ctrl.items()}
        fake_acc = ctrl["fake_acc"]
        real_acc = ctrl.get("real_acc", real_acc)
    rule = fake_acc.mean()
    if cfg.gan.threshold_on == "both":
        # Why: a D that calls every image fake is "right" on every fake; it must also be
        # right on reals before the AE's turn comes.
        rule = jnp.minimum(rule, real_acc)
    return ctrl, rule


def pass_weights(cfg: Config, ctrl: dict | None) -> jax.Array:
    """[passes] weights of each pass's adversarial term; they average 1.

    ``uniform``: all 1. ``caught``: pass j gets ``passes * m_j / sum(m)``,
    m_j being D's running accuracy on pass j's fakes before this step, so
    the AE pushes hardest on the passes D still catches (uniform while D
    catches nothing).
    """
    p = cfg.model.passes
    if cfg.gan.pass_weighting != "caught" or ctrl is None:
        return jnp.ones((p,), jnp.float32)
    m = ctrl["fake_acc"]
    total = m.sum()
    return jnp.where(total > 0, p * m / jnp.maximum(total, 1e-12), 1.0)


# Which network a GAN step trained: the AE against D (``ae_learns``), D
# (``d_learns``) or the AE on reconstruction alone (``recon``). Under
# ``alternate`` a step is in both ae_learns and d_learns.
STEP_GROUPS = ("ae_learns", "d_learns", "recon")
GROUPED_METRICS = ("loss", "recon_loss", "adv_loss", "d_loss", "d_real_acc", "d_fake_acc",
                   "adv_lambda", "pass_weight", "d_r1", "colour_loss")


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
            if k in m:  # adv_lambda and pass_weight only where configured
                out[f"{g}/{k}"] = jnp.where(mask, m[k], jnp.zeros_like(m[k]))
    return out
