"""Typed, frozen configuration and the report's presets.

A :class:`Config` has four sections (``model``, ``data``, ``train``, ``gan``),
each a frozen dataclass. Presets are plain ``Config`` values; overrides are
dotted paths (``"model.passes"``) applied with :func:`apply_overrides`, which
validates every value before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

FAMILIES = ("ae", "rae", "aegan", "raegan")
DATASETS = ("mnist", "cifar10")
GAN_FAMILIES = ("aegan", "raegan")
RECURSIVE_FAMILIES = ("rae", "raegan")


class ConfigError(ValueError):
    """A preset, field or value that cannot be used. The message names it."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the autoencoder, the recursion and the discriminator.

    Widths left empty take the defaults of SPEC §2 for ``data.dataset``.
    """

    family: str = "ae"
    passes: int = 1
    # lax.scan unroll factor for the recursion; 0 means fully unrolled. On
    # XLA:CPU a rolled scan over these convolutions is 21-27x slower (benchmarks/RESULTS.md).
    unroll: int = 0
    # The AE runs the batch as this many independent chunks in one program (the
    # same values). XLA:CPU overlaps them across cores. 0 = auto: chunks of ~32
    # (CIFAR-10) or ~64 (MNIST) images on CPU, 1 on accelerators.
    batch_chunks: int = 0
    conv_widths: tuple[int, ...] = ()
    dense_widths: tuple[int, ...] = ()
    latent_dim: int = 16
    disc_widths: tuple[int, ...] = ()
    # The decoders' stride-2 transposed convolutions: "subpixel" computes them as
    # an exactly equivalent stride-1 conv + depth-to-space with the same
    # parameters; "transpose" uses nn.ConvTranspose. "auto" takes the one measured
    # faster on CPU: subpixel for CIFAR-10 (4x4 kernels, ~25% faster steps),
    # transpose for MNIST (its 3x3 layers gain nothing overall).
    decoder_impl: str = "auto"
    # "torch": weights and biases ~ U(+-1/sqrt(fan_in)) as in PyTorch, the report's
    # framework; "flax": Flax's lecun_normal / zeros defaults.
    init: str = "torch"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, how many, and where they are read from."""

    dataset: str = "mnist"
    train_examples: int = 0  # 0 = every training image available
    test_examples: int = 0  # 0 = every test image available
    subset: str = "first"  # "first" N images, or a seeded "sample" of N
    # True: every epoch trains on train_examples images drawn afresh, by the
    # sweep's permutation, from the whole training split (the DataLoader
    # pattern "stop after N images of a shuffled full set"); False: the same N.
    resample_train: bool = False
    data_dir: str = ""  # "" = search the default locations (see data.py)
    source: str = "auto"  # "auto" | "local" (raw files) | "tfds" (standard builders, may download)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings."""

    epochs: int = 1
    batch_size: int = 128
    ae_lr: float = 5e-3  # peak learning rates (Adam) of the AE and D
    d_lr: float = 1e-3
    # D's Adam moments: b1 (0.5 in DCGAN) and eps. Adam's normalised step moves D's
    # bias by about d_lr per update even where D sits at chance and its gradient is tiny;
    # an eps of the order of that gradient turns those steps back into small ones
    # (experiments/d_jitter.py measures the move against the spread of D's logits).
    d_b1: float = 0.9
    d_eps: float = 1e-8
    # Learning-rate schedule of both optimizers (optax), over each network's own
    # updates: "constant" (after warmup_steps of linear warm-up from 0), or
    # "cosine" (warm-up, then cosine decay to 0 over decay_steps; 0 = the whole
    # run, epochs x steps per epoch).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int = 0
    # A cool-down of the constant schedule: the run's last cooldown_fraction of its
    # updates decay the rate linearly to 0 (0 = none; 0.4 of 200 epochs: from epoch
    # 120 on). A fraction, so that a shorter run (--set train.epochs=N) cools down as
    # the whole one does. Families "ae" and "rae" without an AE stage (their networks
    # update every step, from the run's first).
    cooldown_fraction: float = 0.0
    grad_clip_norm: float = 0.0  # clip each network's gradient to this global norm; 0 = off
    # Decay of an exponential moving average of the AE's weights, updated every step
    # and ramped up over the first steps (steps.ema_decay); 0 = off. When on, evaluation,
    # figures and summaries use the averaged AE (val/recon_loss_live logs the live one's
    # loss beside it); the game is played by the live one.
    ae_ema: float = 0.0
    # Start from another run's parameters: a workdir or one of its checkpoint
    # folders (<workdir>/checkpoints/<step>). The AE's parameters always, D's too
    # with init_from_d; optimizer states start fresh. Used only when the workdir
    # holds no checkpoint of its own (a resumed run continues from its own).
    init_from: str = ""
    init_from_d: bool = False
    # A branch: with init_from, continue the source checkpoint's whole train state
    # (step, both networks and optimizer states, stage, controller, weight average)
    # from its epoch under this config, with the source's records of those epochs
    # copied into metrics.jsonl. The source must have this run's model, data, batch
    # size and seed, so the branch equals a run of this config from scratch wherever
    # the two configs train alike up to that epoch (e.g. a changed game after an AE
    # stage, RESULTS §8).
    init_from_state: bool = False
    # The AE stage: the first ae_stage_epochs of train.epochs train the plain one-pass
    # autoencoder on reconstruction (the family "ae"; D untouched); the family's own
    # training (recursion, game) then continues from those weights (and weight average)
    # with fresh Adam moments for the AE: carried ones send the trained AE back to the
    # plateau (RESULTS §3 item 9). The report builds its recursive AE and its GANs on a
    # trained AE this way. 0 = off.
    ae_stage_epochs: int = 0
    # A run that already trained this run's AE stage (a plain AE, or a run with an AE
    # stage at least as long): its workdir (or one checkpoint folder), whose checkpoint
    # at the end of epoch ae_stage_epochs stands in for the stage (its AE; the rest of
    # the state starts as this run's would). Its config must train the AE as this run's
    # stage does (stages.ae_stage_mismatch), so the run continues bit for bit as if it
    # had trained the stage itself; its records of those epochs lack their evaluations.
    # experiments/run_report.sh trains the 120-epoch AE stage once (cifar10_rae's) for
    # cifar10_aegan and cifar10_raegan this way. Read only when the workdir holds no
    # checkpoint of its own.
    ae_stage_from: str = ""
    # Log per-layer gradient norms, dead-ReLU fractions and output statistics
    # (raegan_jax/diagnostics.py); costs one extra AE forward/backward per step.
    diagnostics: bool = False
    seed: int = 0
    recon_loss: str = "mse"  # "mse" | "bce"
    rae_objective: str = "cycle"  # "cycle" | "sum" | "last"
    steps_per_dispatch: int = 1  # train steps fused into one lax.scan call
    eval_every_epochs: int = 1
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    # Also keep the checkpoints of these epochs' ends (e.g. the epoch another run's
    # train.ae_stage_from reads), whatever keep_checkpoints says.
    keep_epochs: tuple[int, ...] = ()
    num_figure_images: int = 8

    @property
    def schedule_spans_run(self) -> bool:
        """True if the learning rate at a step depends on ``epochs`` (a cosine over the
        whole run, or a cool-down ending with it): then a run cannot change its length."""
        return (self.lr_schedule == "cosine" and self.decay_steps == 0) or self.cooldown_fraction > 0

    def cooldown_start(self, steps_per_epoch: int) -> int:
        """The update at which ``cooldown_fraction``'s linear decay begins."""
        total = self.epochs * steps_per_epoch
        return total - round(self.cooldown_fraction * total)


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """The adversarial game (only used by the ``aegan``/``raegan`` families)."""

    stage_policy: str = "threshold"  # "threshold" | "alternate" | "phases"
    threshold: float = 0.5
    adv_weight: float = 1.0
    adv_loss: str = "nonsaturating"  # "nonsaturating" | "minimax"
    ae_pretrain_epochs: int = 0
    # How the on-device stage selects the update: "switch" runs only the chosen
    # branch (lax.switch); "select" keeps every convolution outside conditionals
    # (the AE's gradient in every stage, jnp.where keeps the frozen network; only
    # D's dense gradient sits in a lax.cond), faster on XLA:CPU; "auto" picks per
    # backend.
    stage_impl: str = "auto"
    # The adversarial term's weight: "fixed" = adv_weight; "adaptive" = adv_weight x
    # lambda, lambda = |grad_W L_rec| / (|grad_W L_adv| + adaptive_eps) at the decoder's
    # last layer W (Esser et al.'s VQGAN), clipped to [0, adaptive_max], computed in
    # the step and treated as a constant. adaptive_scope "shared": one lambda for the
    # adversarial terms of all passes together; "per_pass": one per pass, each pass
    # getting 1/passes of the reconstruction gradient's norm.
    adv_weight_mode: str = "fixed"
    adaptive_scope: str = "shared"
    adaptive_max: float = 1e4
    adaptive_eps: float = 1e-4
    # The threshold rule's controls (all on device). threshold_ema: the rule reads a
    # running mean of D's accuracy on fakes, m <- ema m + (1 - ema) acc (0 = this
    # step's accuracy alone). hysteresis: the AE's stage starts above
    # threshold + hysteresis and ends at or below threshold - hysteresis.
    threshold_ema: float = 0.0
    hysteresis: float = 0.0
    # What the threshold rule reads: "fake" (the report: D's accuracy on the fakes), or
    # "both": min(D's accuracy on reals, on fakes), so D keeps learning while it is
    # wrong on either (a D that calls every image fake scores 1 on fakes, 0 here).
    threshold_on: str = "fake"
    # Per-pass weights of the adversarial term: "uniform", or "caught": pass j gets
    # passes x m_j / sum(m) (m_j: D's running accuracy on pass j's fakes), pushing
    # hardest where D still catches the fakes.
    pass_weighting: str = "uniform"
    # R1 penalty on D (Mescheder et al. 2018, "Which training methods for GANs actually
    # converge?"): D's loss adds r1_weight / 2 x the mean over real images of
    # |grad_x D(x)|^2, which damps the oscillation of an unregularised game around its
    # balance. Logged as d_r1 (D's steps). 0 = off.
    r1_weight: float = 0.0
    # Mean-colour term: in the game's AE steps the AE's objective adds colour_weight x
    # the squared distance between each fake's and its real image's mean colour (summed
    # over channels, mean over the batch, summed over passes), against a D that reads the
    # fakes' colour cast (RESULTS §8). Logged as colour_loss [passes]. 0 = off.
    colour_weight: float = 0.0
    # Decay of an exponential moving average of D's weights, as train.ae_ema is the AE's:
    # updated every step, ramped up over D's own first updates; 0 = off. Training is
    # unchanged; when on, evaluation reads D's loss and accuracies from the average
    # (val/d_*_live: the live D's). A D near chance swings its bias with every update, so
    # its accuracy at logit 0 swings between all-real and all-fake (RESULTS §8); the
    # average reads where D sits over its last ~1/(1 - d_ema) steps.
    d_ema: float = 0.0


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment. ``preset`` records where it came from."""

    preset: str = "custom"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    gan: GanConfig = GanConfig()

    @property
    def is_gan(self) -> bool:
        return self.model.family in GAN_FAMILIES

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as nested plain dicts (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "gan": GanConfig}

# Architecture defaults per dataset (SPEC §2).
_DATASET_DEFAULTS = {
    "mnist": dict(conv_widths=(16, 32, 64), dense_widths=(128, 64), latent_dim=16,
                  disc_widths=(512, 256, 128)),
    "cifar10": dict(conv_widths=(8, 16, 32, 64), dense_widths=(), latent_dim=0,
                    disc_widths=(1024, 512, 256)),
}

IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def _preset(name: str, dataset: str, family: str, *, passes: int = 1, epochs: int,
            train: int, test: int, recon_loss: str, stage_policy: str = "threshold",
            ae_lr: float = 5e-3, adv_weight: float = 1.0, resample_train: bool = False,
            warmup_steps: int = 0, threshold_on: str = "fake", threshold_ema: float = 0.0,
            ae_pretrain_epochs: int = 0, batch_size: int = 128, ae_ema: float = 0.0,
            ae_stage_epochs: int = 0, r1_weight: float = 0.0, d_lr: float = 1e-3) -> Config:
    return resolve(Config(
        preset=name,
        model=ModelConfig(family=family, passes=passes),
        data=DataConfig(dataset=dataset, train_examples=train, test_examples=test,
                        resample_train=resample_train),
        train=TrainConfig(epochs=epochs, recon_loss=recon_loss, ae_lr=ae_lr, d_lr=d_lr,
                          warmup_steps=warmup_steps, batch_size=batch_size, ae_ema=ae_ema,
                          ae_stage_epochs=ae_stage_epochs),
        gan=GanConfig(stage_policy=stage_policy, adv_weight=adv_weight, threshold_on=threshold_on,
                      threshold_ema=threshold_ema, ae_pretrain_epochs=ae_pretrain_epochs,
                      r1_weight=r1_weight),
    ))


def resolve(cfg: Config) -> Config:
    """Fills empty architecture widths with the dataset's defaults (SPEC §2)."""
    d = _DATASET_DEFAULTS.get(cfg.data.dataset)
    if d is None:
        raise ConfigError(f"data.dataset must be one of {DATASETS}, got {cfg.data.dataset!r}")
    m = cfg.model
    m = dataclasses.replace(
        m,
        conv_widths=m.conv_widths or d["conv_widths"],
        dense_widths=m.dense_widths or d["dense_widths"],
        disc_widths=m.disc_widths or d["disc_widths"],
        latent_dim=m.latent_dim if cfg.data.dataset == "mnist" else 0,
    )
    return dataclasses.replace(cfg, model=m)


# The report's experiments (SPEC §5). Batch size is not stated in the report: 128.
# Deviations from the report's literal settings, each measured (experiments/RESULTS.md;
# the literal values stay reachable with --set):
# - CIFAR-10 AE learning rate 1e-3, not 5e-3: at 5e-3 the recursive AE's encoder
#   ReLUs die within ~100 steps and it stays on the mean-image plateau (5 of 5
#   seeds); at 1e-3 it leaves the plateau by step ~250 (5 of 5).
# - cifar10_ae: batch 16 (CIFAR_AE_BATCH), not the default 128 (the report states none): the
#   report's 200 epochs are then 100,800 steps instead of 12,600. The AE is short of steps,
#   not images (half the images at the same steps: the same loss). Val BCE, weight average,
#   seeds 0-2 (CPU): 0.5528 / 0.5524 / 0.5523 at batch 16, 0.5540 / 0.5532 / 0.5535 at 32,
#   0.5601 +- 0.0008 at 128 (H200); PSNR 28.1-28.6 dB against 27.1-27.8 and 23.9 (RESULTS §3
#   item 10). Neither a cool-down nor Adam 2e-3 after epoch 120 closes the gap at batch 32
#   (§3). It costs CPU time: 38 min alone (839 img/s), 46-47 beside another run, against
#   ~28 alone at 32 on the same machine.
# - cifar10_rae / cifar10_aegan / cifar10_raegan: batch 32 (CIFAR_BATCH). Their AE stage
#   (below) is the plain AE at batch 32: val BCE 0.5541 +- 0.0004 at its epoch 200 (3 seeds,
#   H200) against 0.5601 +- 0.0008 at 128.
# - cifar10_aegan: batch 32. Val BCE 0.5712 +- 0.0006 (3 seeds, CPU) against
#   0.5777 +- 0.0026 at 128, balance gap over the last 3 epochs 0.26 against 0.34 (RESULTS
#   §8). cifar10_raegan at batch 32 without the AE stage stayed on the mean-image plateau
#   in one seed of 3; with the stage every seed learns (0.5560 +- 0.0004 at pass 1).
# - cifar10_rae: batch 32, the first 120 of its 150 epochs the plain one-pass AE
#   (train.ae_stage_epochs, RAE_AE_STAGE; the AE's Adam restarts at the switch), the weight
#   average evaluated. Val BCE 0.5558 / 0.5570 / 0.5583 (passes 1-3, mean of 3 seeds, CPU;
#   std <= 0.0009; pass 1 below the report's 0.559 in every seed) against 0.5608 / 0.5625 /
#   0.5646 for 150 recursive epochs at 32 and 0.5701 / 0.5714 / 0.5730 at 128 (RESULTS §3
#   items 6 and 9).
# - GAN presets: adversarial weight 0.01, not 1. CIFAR-10: at 1 the adversarial sweep
#   undoes the reconstruction sweep (val BCE 0.696 / 0.705, gray images); at 0.1 the
#   game sweep still costs 0.01-0.04 BCE each epoch (val ~0.60 after 8 epochs). MNIST:
#   at 1 the AE's MSE ends at 0.237 (saturated outputs); at 0.01 it is 0.023 by epoch 27.
# - mnist_ae draws its 3,000 training images afresh each epoch from the 60,000
#   (data.resample_train): with the same 3,000 every epoch val MSE is 0.0248 against
#   train 0.0159; resampled, val 0.0157 and train 0.0155, the report's train ~ val
#   (its val 0.0149, train 0.0143).
# - mnist_ae warms Adam up linearly over its first 500 steps: without it seed 2 of 3 dies in
#   its first epoch (all-black output, val MSE 0.1030, also at Adam 1e-3); with it all three
#   seeds learn and end at val MSE 0.0158 / 0.0153 / 0.0160. mnist_aegan (the same AE,
#   the same seeds) too: without it seed 2 dies the same way (0.1025); with it the
#   three seeds end at 0.0155 / 0.0165 / 0.0165 after 200 epochs.
# - mnist_ae evaluates an exponential moving average of the AE's weights (train.ae_ema,
#   AE_EMA); training is unchanged and val_recon_loss_live reports the last weights. Val MSE
#   0.0146 / 0.0140 / 0.0219 against 0.0156 / 0.0157 / 0.0228 for the last weights of the
#   same runs (seeds 0-2, RESULTS §4): better in every seed, seeds 0 and 1 below the report's
#   0.0149. cifar10_ae too: better than its last weights at each of its last 25 epochs in
#   each of 3 seeds (RESULTS §3).
# - mnist_aegan: the threshold rule reads min(D's accuracy on reals, on fakes)
#   (gan.threshold_on="both"), and each epoch draws its 7,000 images afresh (as mnist_ae).
#   The report's rule lets D call every image fake (validation real accuracy 0.00-0.14,
#   fakes 0.82-1.00; D trains 0 steps in the last 20 epochs); with both changes D plays
#   the game to the end and every seed ends near the balance with a better AE
#   (experiments/RESULTS.md §7).
# - mnist_aegan: the rule reads running means (gan.threshold_ema=0.9) after 20 epochs of
#   plain AE training (gan.ae_pretrain_epochs=20, within the 200). On one batch the real
#   accuracy's noise (+-0.04) ends the AE's turns early and D sits at ~0.65 on training
#   fakes; on running means D sits at 0.54-0.55, val fake accuracy ends at 0.43 / 0.46 /
#   0.60 and val MSE at 0.0104 / 0.0111 / 0.0124 (seeds 0-2) against 0.0143 / 0.0146 /
#   0.0246 on one batch (RESULTS §7).
# - cifar10_aegan / cifar10_raegan: the threshold rule on reals and fakes (as mnist_aegan)
#   for 60 one-sweep epochs, instead of the report's 20 `phases` epochs (an AE sweep, a D
#   sweep, an adversarial AE sweep): the same 3 sweeps' worth of steps. Under `phases` the
#   adversarial sweep overshoots every epoch (D fooled by 85-100% of the validation fakes,
#   rating them more real than the reals); under the rule D stays in the game, the balance
#   gap falls from ~0.5 to 0.25-0.34 and the reconstruction is as good (aegan, 3 seeds:
#   0.578 vs 0.576) or better (raegan, 3 seeds: pass 1 0.592 vs 0.602) (RESULTS §8).
#   `--set gan.stage_policy=phases train.epochs=20 gan.threshold_on=fake train.ae_stage_epochs=0
#   gan.r1_weight=0` is the report's schedule.
#   Running means (as mnist_aegan) leave their balance where it was at batch 128 (RESULTS §8).
# - cifar10_raegan: as cifar10_rae, the plain AE first (train.ae_stage_epochs=120, batch 32,
#   the AE's Adam restarted at the switch), then 30 epochs of the game on running means
#   (gan.threshold_ema=0.9, as cifar10_aegan). Val BCE 0.5647 / 0.5728 / 0.5815 (passes 1-3,
#   mean of 3 seeds, CPU; pass 1 0.5700 / 0.5611 / 0.5631) against 0.5923 / 0.5964 / 0.6014
#   for 60 game epochs from scratch at batch 128; D sits nearer chance on the training
#   fakes (0.53-0.66 against 0.66-0.73), the balance is not reached (RESULTS §8).
#   D pays an R1 penalty (gan.r1_weight=1: gamma/2 |grad_x D(real)|^2): over the same 3
#   seeds, branched from the same AE stage, val BCE 0.5593 / 0.5633 / 0.5681 against 0.5647 /
#   0.5728 / 0.5815, better in every seed at every pass, every pass within 0.011 of pass 1;
#   the balance no better on validation (RESULTS §8, "Levers against the colour chase").
# - cifar10_aegan: the rule reads running means (gan.threshold_ema=0.9, as mnist_aegan). At
#   batch 32 one batch's accuracy is noisy (+-0.09) and the stage flipped 80-90 times an
#   epoch; on running means 28-38 times, and val BCE ends at 0.5680 +- 0.0010 against
#   0.5712 +- 0.0006 (better in every seed), the balance gap no different (RESULTS §8).
# - cifar10_aegan: as cifar10_raegan, the plain AE first (train.ae_stage_epochs=120 of 150
#   epochs), then 30 epochs of the game with D's R1 penalty (gan.r1_weight=1, CIFAR_GAN_R1):
#   the two CIFAR-10 GAN presets then differ only in the recursion (passes 1 vs 3). Over 3
#   seeds val BCE 0.5564 / 0.5555 / 0.5559 (PSNR 25.8 dB, SSIM 0.85) against 0.5689 / 0.5684 /
#   0.5666 for 60 game epochs from scratch without R1 (21.6 dB, 0.67); D ends at chance (AUC
#   0.48-0.55, mean P(real) 0.49-0.50 on reals and fakes) and its validation accuracy swings
#   with its bias (gap over the last 10 epochs 0.28-0.37 against 0.27-0.31). From scratch
#   with R1 (--set train.ae_stage_epochs=0 train.epochs=60) the gap is smaller (0.16-0.28)
#   but D still separates (AUC 0.64-0.74) and val BCE is 0.5629 +- 0.0012 (RESULTS §8, "R1
#   and the AE stage on cifar10_aegan").
# - cifar10_aegan: D learns at Adam 1e-4 (train.d_lr; D trains only in the game). At the
#   report's 1e-3 one of D's updates moves its verdict on every image by 1.7x the spread of
#   its verdicts over the images (experiments/d_jitter.py), so a D at chance is read at
#   logit 0 after a step that shifted its whole output, and its validation accuracy on the
#   fakes jumps between ~0 and ~1. At 1e-4 (3 seeds, each paired with the preset on the same
#   AE stage): balance gap over the last 10 epochs 0.21 / 0.24 / 0.22 against 0.31 / 0.44 /
#   0.38, evaluations at an extreme 1 / 3 / 1 of 10 against 5 / 8 / 5, val BCE 0.5564 +-
#   0.0005 against 0.5560 +- 0.0007 (RESULTS §8, "The #9 study on CIFAR-10").
# - cifar10_raegan: D learns at Adam 1e-4 too. 3 seeds, each paired with the preset at 1e-3
#   on the same AE stage: val BCE better at every pass in every seed (pass 1 0.5581 / 0.5578 /
#   0.5579 against 0.5596 / 0.5603 / 0.5591), balance gap over the last 10 epochs 0.24 /
#   0.32 / 0.19 against 0.34 / 0.34 / 0.38 (RESULTS §8, "The #9 study on CIFAR-10" item 6).
# - cifar10_aegan / cifar10_raegan: the game alternates (gan.stage_policy=alternate: a D
#   update, then an AE update, on every batch), D still at 1e-4. Under the threshold rule on
#   running means D must be right on reals and on fakes, both near 0.5, so it learned in
#   ~89% (aegan) / ~72% (raegan) of the game's steps and the AE in the rest: the game all
#   but froze the AE. Alternating, it learns on every batch. 3 seeds each, paired with the
#   rule on the same AE stage: val BCE better in every seed at every pass (aegan 0.5552 +-
#   0.0003 against 0.5564 +- 0.0005; raegan 0.5560 / 0.5580 / 0.5605 against 0.5579 / 0.5610
#   / 0.5650), D's mean P(real) within 0.008 of its mean on the reals, the swing of its
#   accuracy no wider (RESULTS §8 item 11).
#   `--set gan.stage_policy=threshold` is the preset before.
MNIST_AE_WARMUP = 500
AE_EMA = 0.999
GAN_EMA = 0.9
MNIST_GAN_PRETRAIN = 20
CIFAR_GAME_EPOCHS = 30
RAE_AE_STAGE = 120
CIFAR_GAN_R1 = 1.0
CIFAR_GAN_D_LR = 1e-4
CIFAR_AE_LR = 1e-3
CIFAR_BATCH = 32
CIFAR_AE_BATCH = 16
GAN_ADV_WEIGHT = 0.01
CIFAR_GAN_POLICY = "alternate"
PRESETS: dict[str, Config] = {
    "mnist_ae": _preset("mnist_ae", "mnist", "ae", epochs=100, train=3000, test=600,
                        recon_loss="mse", resample_train=True, warmup_steps=MNIST_AE_WARMUP,
                        ae_ema=AE_EMA),
    "cifar10_ae": _preset("cifar10_ae", "cifar10", "ae", epochs=200, train=10000, test=2000,
                          recon_loss="bce", ae_lr=CIFAR_AE_LR, batch_size=CIFAR_AE_BATCH,
                          ae_ema=AE_EMA),
    "cifar10_rae": _preset("cifar10_rae", "cifar10", "rae", passes=3, epochs=150, train=10000,
                           test=2000, recon_loss="bce", ae_lr=CIFAR_AE_LR, batch_size=CIFAR_BATCH,
                           ae_stage_epochs=RAE_AE_STAGE, ae_ema=AE_EMA),
    "mnist_aegan": _preset("mnist_aegan", "mnist", "aegan", epochs=200, train=7000, test=2000,
                           recon_loss="mse", adv_weight=GAN_ADV_WEIGHT, resample_train=True,
                           warmup_steps=MNIST_AE_WARMUP, threshold_on="both",
                           threshold_ema=GAN_EMA, ae_pretrain_epochs=MNIST_GAN_PRETRAIN),
    "cifar10_aegan": _preset("cifar10_aegan", "cifar10", "aegan",
                             epochs=RAE_AE_STAGE + CIFAR_GAME_EPOCHS, train=20000, test=2000,
                             recon_loss="bce", ae_lr=CIFAR_AE_LR, adv_weight=GAN_ADV_WEIGHT,
                             threshold_on="both", threshold_ema=GAN_EMA, batch_size=CIFAR_BATCH,
                             ae_stage_epochs=RAE_AE_STAGE, r1_weight=CIFAR_GAN_R1,
                             d_lr=CIFAR_GAN_D_LR, stage_policy=CIFAR_GAN_POLICY),
    "cifar10_raegan": _preset("cifar10_raegan", "cifar10", "raegan", passes=3,
                              epochs=RAE_AE_STAGE + CIFAR_GAME_EPOCHS, train=20000, test=2000,
                              recon_loss="bce", ae_lr=CIFAR_AE_LR, adv_weight=GAN_ADV_WEIGHT,
                              threshold_on="both", threshold_ema=GAN_EMA, batch_size=CIFAR_BATCH,
                              ae_stage_epochs=RAE_AE_STAGE, r1_weight=CIFAR_GAN_R1,
                              d_lr=CIFAR_GAN_D_LR, stage_policy=CIFAR_GAN_POLICY),
}


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Config:
    """Returns a validated preset, optionally with dotted-path overrides.

    Args:
      name: one of :data:`PRESETS` (``mnist_ae``, ``cifar10_raegan``, ...).
      overrides: ``{"model.passes": 3, "train.batch_size": 64, ...}``. Values
        may be Python values or strings (as given on the command line).

    Returns:
      The validated :class:`Config`.

    Raises:
      ConfigError: unknown preset, unknown field or a value out of range.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return apply_overrides(PRESETS[name], overrides or {})


def _coerce(path: str, value: Any, ftype: Any) -> Any:
    """Converts ``value`` (a Python value or a CLI string) to the field's type."""
    origin = typing.get_origin(ftype)
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            elif isinstance(value, int) and not isinstance(value, bool):
                value = [value]  # one number: a tuple of one (e.g. train.keep_epochs=120)
            return tuple(int(v) for v in value)
        if ftype is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes"):
                    return True
                if value.lower() in ("0", "false", "no"):
                    return False
                raise ValueError
            return bool(value)
        if ftype is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if ftype is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if ftype is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unhandled field type {ftype}")  # pragma: no cover
    raise ConfigError(f"{path}: cannot use {value!r} (expected {getattr(ftype, '__name__', ftype)})")


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Applies dotted-path overrides to ``cfg`` and validates the result.

    Args:
      cfg: the base config.
      overrides: mapping of ``"section.field"`` to a value or string.

    Returns:
      A new validated :class:`Config`.

    Raises:
      ConfigError: naming the unknown field or the bad value.
    """
    sections = {name: getattr(cfg, name) for name in _SECTIONS}
    changes: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    dataset_changed = False
    for path, value in overrides.items():
        parts = path.split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"unknown config field {path!r}; fields look like "
                              f"'model.passes' with sections {', '.join(_SECTIONS)}")
        section, field = parts
        hints = typing.get_type_hints(_SECTIONS[section])
        if field not in hints:
            raise ConfigError(f"unknown config field {path!r}; {section} has: "
                              f"{', '.join(hints)}")
        changes[section][field] = _coerce(path, value, hints[field])
        dataset_changed |= path == "data.dataset"
    for name, ch in changes.items():
        if ch:
            sections[name] = dataclasses.replace(sections[name], **ch)
    if dataset_changed and not changes["model"].keys() & {"conv_widths", "dense_widths", "disc_widths"}:
        # A new dataset brings its own default architecture.
        m = sections["model"]
        sections["model"] = dataclasses.replace(m, conv_widths=(), dense_widths=(), disc_widths=(),
                                                latent_dim=ModelConfig.latent_dim)
    new = dataclasses.replace(cfg, **sections)
    new = resolve(new) if new.data.dataset in DATASETS else new
    validate(new)
    return new


def _check(ok: bool, path: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{path} {msg}")


def validate(cfg: Config) -> None:
    """Raises :class:`ConfigError` naming the first invalid field of ``cfg``."""
    m, d, t, g = cfg.model, cfg.data, cfg.train, cfg.gan
    _check(d.dataset in DATASETS, "data.dataset", f"must be one of {DATASETS}, got {d.dataset!r}")
    _check(m.family in FAMILIES, "model.family", f"must be one of {FAMILIES}, got {m.family!r}")
    _check(m.passes >= 1, "model.passes", f"must be >= 1, got {m.passes}")
    if m.family in ("ae", "aegan"):
        _check(m.passes == 1, "model.passes",
               f"must be 1 for family {m.family!r} (use 'r{m.family}' for recursion), got {m.passes}")
    _check(m.unroll >= 0, "model.unroll", f"must be >= 0 (0 = fully unrolled), got {m.unroll}")
    _check(m.batch_chunks >= 0, "model.batch_chunks", f"must be >= 0 (0 = auto), got {m.batch_chunks}")
    _check(m.batch_chunks == 0 or cfg.train.batch_size % m.batch_chunks == 0, "model.batch_chunks",
           f"{m.batch_chunks} does not divide train.batch_size {cfg.train.batch_size}")
    _check(all(w >= 1 for w in m.conv_widths + m.dense_widths + m.disc_widths),
           "model widths", "must all be >= 1")
    if d.dataset == "mnist":
        _check(len(m.conv_widths) == 3, "model.conv_widths", "must have 3 entries for MNIST")
        _check(m.latent_dim >= 1, "model.latent_dim", f"must be >= 1, got {m.latent_dim}")
    else:
        _check(len(m.conv_widths) == 4, "model.conv_widths",
               "must have 4 entries for CIFAR-10 (stem, then 3 stride-2 stages)")
    _check(len(m.disc_widths) >= 1, "model.disc_widths", "must have at least one hidden layer")
    _check(m.decoder_impl in ("auto", "transpose", "subpixel"), "model.decoder_impl",
           f"must be 'auto', 'transpose' or 'subpixel', got {m.decoder_impl!r}")
    _check(m.init in ("torch", "flax"), "model.init", f"must be 'torch' or 'flax', got {m.init!r}")
    _check(d.train_examples >= 0, "data.train_examples", f"must be >= 0, got {d.train_examples}")
    _check(d.test_examples >= 0, "data.test_examples", f"must be >= 0, got {d.test_examples}")
    _check(d.subset in ("first", "sample"), "data.subset",
           f"must be 'first' or 'sample', got {d.subset!r}")
    _check(d.source in ("auto", "local", "tfds"), "data.source",
           f"must be 'auto', 'local' or 'tfds', got {d.source!r}")
    _check(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(not d.resample_train or d.train_examples > 0, "data.resample_train",
           "needs data.train_examples > 0 (how many images each epoch draws)")
    if d.train_examples:
        _check(d.train_examples >= t.batch_size, "data.train_examples",
               f"({d.train_examples}) must be at least train.batch_size ({t.batch_size})")
    _check(t.ae_lr > 0, "train.ae_lr", f"must be > 0, got {t.ae_lr}")
    _check(t.d_lr > 0, "train.d_lr", f"must be > 0, got {t.d_lr}")
    _check(0 <= t.d_b1 < 1, "train.d_b1", f"must be in [0, 1), got {t.d_b1}")
    _check(t.d_eps > 0, "train.d_eps", f"must be > 0, got {t.d_eps}")
    _check(t.lr_schedule in ("constant", "cosine"), "train.lr_schedule",
           f"must be 'constant' or 'cosine', got {t.lr_schedule!r}")
    _check(t.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
    _check(t.decay_steps >= 0, "train.decay_steps", f"must be >= 0 (0 = the whole run), got {t.decay_steps}")
    _check(t.decay_steps == 0 or t.decay_steps > t.warmup_steps, "train.decay_steps",
           f"({t.decay_steps}) must exceed train.warmup_steps ({t.warmup_steps})")
    _check(0 <= t.cooldown_fraction < 1, "train.cooldown_fraction",
           f"must be in [0, 1) (0 = none), got {t.cooldown_fraction}")
    if t.cooldown_fraction:
        _check(t.lr_schedule == "constant", "train.cooldown_fraction",
               f"cools down the constant schedule; train.lr_schedule={t.lr_schedule!r} decays already")
        # Why: the AE's update count lags the run's steps under a game (D's turns) and
        # restarts at an AE stage's end, so the decay would not end with the run.
        _check(m.family in ("ae", "rae") and not t.ae_stage_epochs, "train.cooldown_fraction",
               "needs the AE to update every step from the first (family 'ae' or 'rae', "
               "no train.ae_stage_epochs)")
    _check(t.grad_clip_norm >= 0, "train.grad_clip_norm", f"must be >= 0 (0 = off), got {t.grad_clip_norm}")
    _check(0 <= t.ae_ema < 1, "train.ae_ema", f"must be in [0, 1) (0 = off), got {t.ae_ema}")
    _check(t.ae_stage_epochs >= 0, "train.ae_stage_epochs", f"must be >= 0, got {t.ae_stage_epochs}")
    if t.ae_stage_from:
        _check(t.ae_stage_epochs > 0, "train.ae_stage_from",
               "needs an AE stage to stand in for (train.ae_stage_epochs > 0)")
        _check(not t.init_from, "train.ae_stage_from",
               f"and train.init_from ({t.init_from}) both say where the run starts; set one")
    _check(all(e >= 1 for e in t.keep_epochs), "train.keep_epochs",
           f"must be epochs >= 1, got {t.keep_epochs}")
    if t.ae_stage_epochs:
        _check(m.family != "ae", "train.ae_stage_epochs",
               "has no effect for family 'ae' (its whole run is the AE stage): set it to 0")
        _check(t.ae_stage_epochs < t.epochs, "train.ae_stage_epochs",
               f"({t.ae_stage_epochs}) must be below train.epochs ({t.epochs}): the "
               f"{m.family} needs at least one epoch of its own")
    _check(not t.init_from_d or (t.init_from and cfg.is_gan), "train.init_from_d",
           "needs train.init_from and a GAN family (aegan/raegan)")
    _check(not t.init_from_state or (t.init_from and not t.init_from_d), "train.init_from_state",
           "needs train.init_from (and takes D with the rest: drop train.init_from_d)")
    _check(t.recon_loss in ("mse", "bce"), "train.recon_loss",
           f"must be 'mse' or 'bce', got {t.recon_loss!r}")
    _check(t.rae_objective in ("cycle", "sum", "last"), "train.rae_objective",
           f"must be 'cycle', 'sum' or 'last', got {t.rae_objective!r}")
    for name in ("steps_per_dispatch", "eval_every_epochs", "checkpoint_every_epochs",
                 "keep_checkpoints"):
        _check(getattr(t, name) >= 1, f"train.{name}", f"must be >= 1, got {getattr(t, name)}")
    _check(t.num_figure_images >= 1, "train.num_figure_images", "must be >= 1")
    _check(g.stage_policy in ("threshold", "alternate", "phases"), "gan.stage_policy",
           f"must be 'threshold', 'alternate' or 'phases', got {g.stage_policy!r}")
    _check(0.0 < g.threshold < 1.0, "gan.threshold", f"must be in (0, 1), got {g.threshold}")
    _check(g.adv_weight >= 0.0, "gan.adv_weight", f"must be >= 0, got {g.adv_weight}")
    _check(g.adv_loss in ("nonsaturating", "minimax"), "gan.adv_loss",
           f"must be 'nonsaturating' or 'minimax', got {g.adv_loss!r}")
    _check(g.stage_impl in ("auto", "switch", "select"), "gan.stage_impl",
           f"must be 'auto', 'switch' or 'select', got {g.stage_impl!r}")
    _check(g.ae_pretrain_epochs >= 0, "gan.ae_pretrain_epochs",
           f"must be >= 0, got {g.ae_pretrain_epochs}")
    _check(g.adv_weight_mode in ("fixed", "adaptive"), "gan.adv_weight_mode",
           f"must be 'fixed' or 'adaptive', got {g.adv_weight_mode!r}")
    _check(g.adaptive_scope in ("shared", "per_pass"), "gan.adaptive_scope",
           f"must be 'shared' or 'per_pass', got {g.adaptive_scope!r}")
    _check(g.adaptive_max > 0, "gan.adaptive_max", f"must be > 0, got {g.adaptive_max}")
    _check(g.adaptive_eps > 0, "gan.adaptive_eps", f"must be > 0, got {g.adaptive_eps}")
    _check(0.0 <= g.threshold_ema < 1.0, "gan.threshold_ema",
           f"must be in [0, 1) (0 = off), got {g.threshold_ema}")
    _check(0.0 <= g.hysteresis < min(g.threshold, 1.0 - g.threshold), "gan.hysteresis",
           f"must be >= 0 and leave the band [threshold - h, threshold + h] inside (0, 1), "
           f"got {g.hysteresis} with threshold {g.threshold}")
    _check(g.threshold_on in ("fake", "both"), "gan.threshold_on",
           f"must be 'fake' or 'both', got {g.threshold_on!r}")
    _check(g.pass_weighting in ("uniform", "caught"), "gan.pass_weighting",
           f"must be 'uniform' or 'caught', got {g.pass_weighting!r}")
    _check(g.r1_weight >= 0.0, "gan.r1_weight", f"must be >= 0 (0 = off), got {g.r1_weight}")
    _check(g.colour_weight >= 0.0, "gan.colour_weight",
           f"must be >= 0 (0 = off), got {g.colour_weight}")
    _check(0.0 <= g.d_ema < 1.0, "gan.d_ema", f"must be in [0, 1) (0 = off), got {g.d_ema}")


def from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuilds a :class:`Config` from :meth:`Config.to_dict` output (e.g. config.json)."""
    overrides = {f"{s}.{k}": v for s in _SECTIONS for k, v in d.get(s, {}).items()}
    base = Config(preset=d.get("preset", "custom"))
    unknown = set(d) - set(_SECTIONS) - {"preset"}
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    return apply_overrides(base, overrides)


def diff(a: Config, b: Config) -> list[str]:
    """Lists the dotted fields whose values differ between two configs."""
    out = []
    if a.preset != b.preset:
        out.append("preset")
    for s in _SECTIONS:
        for f in dataclasses.fields(_SECTIONS[s]):
            if getattr(getattr(a, s), f.name) != getattr(getattr(b, s), f.name):
                out.append(f"{s}.{f.name}")
    return out
