"""Which network learns when: the stage policies, in one place (SPEC §4).

The stage flag (``state.stage``, on device) takes one of three values:

* :data:`~raegan_jax.state.STAGE_AE` — the AE learns reconstruction plus the
  adversarial term against the frozen D;
* :data:`~raegan_jax.state.STAGE_D` — D learns real vs. fake against the frozen AE;
* :data:`~raegan_jax.state.STAGE_RECON` — the AE learns reconstruction only.

Two levels decide it:

* **Per sweep, on the host** (:func:`sweep_plan`): pretraining epochs are
  reconstruction sweeps; the ``phases`` policy (the report's CIFAR-10
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
from raegan_jax.state import STAGE_AE, STAGE_D, STAGE_RECON

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
    """

    stage: int | None
    fixed: bool = False

    @property
    def name(self) -> str | None:
        return SWEEP_NAMES.get(self.stage)


def sweep_plan(cfg: Config, epoch: int) -> list[Sweep]:
    """The sweeps of (zero-based) ``epoch``, in order.

    ``gan.ae_pretrain_epochs`` epochs are reconstruction sweeps; ``phases``
    epochs are reconstruction, D, adversarial AE; the first game epoch after
    pretraining starts with D (as a fresh run does at step 0); otherwise one
    sweep whose stage the on-device policy drives.
    """
    if not cfg.is_gan:
        return [Sweep(None)]
    pre = cfg.gan.ae_pretrain_epochs
    if epoch < pre:
        return [Sweep(STAGE_RECON, fixed=True)]
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
