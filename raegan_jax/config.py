"""Typed, frozen configuration: the schema, value coercion and validation.

A :class:`Config` has four sections (``model``, ``data``, ``train``, ``gan``),
each a frozen dataclass. Overrides are dotted paths (``"model.passes"``) applied
with :func:`apply_overrides`, which validates every value before anything is
compiled. The presets are in :mod:`raegan_jax.configs`.

Fields no preset sets, and what keeps each (every research knob here is read by a
study spec in ``experiments/specs/`` or a probe, reproducibly):

- implementation choices that compute the same function: ``model.unroll``,
  ``model.batch_chunks``, ``model.decoder_impl``, ``gan.stage_impl``,
  ``train.steps_per_dispatch``, ``train.seeds_impl``; ``train.seeds`` (many seeds in one program);
- logging and keeping: ``train.eval_every_epochs``, ``checkpoint_every_epochs``,
  ``keep_checkpoints``, ``keep_epochs``, ``num_figure_images``, ``diagnostics``;
- warm starts (``raegan_jax.runs``): ``train.init_from``, ``init_from_d``,
  ``init_from_state``, ``ae_stage_from``;
- the SPEC's options: ``gan.adv_loss`` (minimax), ``train.rae_objective``
  (``sum``/``last``), ``data.source``, ``data.subset``, ``model.init``;
- research knobs, each with the study that needs it: ``train.lr_schedule`` and
  ``decay_steps`` (mnist_gap.json, data_steps_cifar_ae_cpu.json),
  ``cooldown_fraction`` (cooldown_cifar_ae_cpu.json), ``grad_clip_norm``
  (remedies.json), ``d_b1`` and ``d_eps`` (``experiments/probes/d_jitter.py``,
  study_cifar_cpu.json), ``gan.threshold``, ``hysteresis`` (balance.json),
  ``adv_weight_mode``, ``adaptive_scope``, ``adaptive_max``, ``adaptive_eps`` (VQGAN's
  adaptive weight: balance*.json), ``pass_weighting`` (study_cifar_cpu.json),
  ``colour_weight`` (game_levers_cpu.json), ``d_ema`` (d_ema_cifar_cpu.json).
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
    # The last N training images (file order, every seed alike), held out of training:
    # the loop evaluates on them and choices are made on them; the test split is read
    # once, at the end. 0 = none: the test split stands in (as in the report).
    validation_examples: int = 0
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
    # (experiments/probes/d_jitter.py measures the move against the spread of D's logits).
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
    # stage does (runs.ae_stage_mismatch), so the run continues bit for bit as if it
    # had trained the stage itself; its records of those epochs lack their evaluations.
    # experiments/run_report.sh trains the 120-epoch AE stage once (cifar10_rae's) for
    # cifar10_aegan and cifar10_raegan this way. Read only when the workdir holds no
    # checkpoint of its own.
    ae_stage_from: str = ""
    # Log per-layer gradient norms, dead-ReLU fractions and output statistics
    # (raegan_jax/diagnostics.py); costs one extra AE forward/backward per step.
    diagnostics: bool = False
    seed: int = 0
    # Many seeds in one program (raegan_jax/seeds.py): these seeds train side by side,
    # one compiled step over a train state with a leading seed axis; seed k's records,
    # figures, summary and final checkpoint go to <workdir>/seed<k>, a table over them
    # to <workdir>/summary.json. Seed k ends as the single run with train.seed=k does.
    # () = one run of train.seed.
    seeds: tuple[int, ...] = ()
    # How the seeds share the program: "vmap" (one batched program: on an accelerator
    # many small steps fill the chip), "unroll" (the single step written once per seed:
    # XLA:CPU runs vmap's grouped convolutions several times slower), "auto" = "unroll"
    # on CPU, "vmap" elsewhere.
    seeds_impl: str = "auto"
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
        if path in REPLACED:
            raise ConfigError(f"{path} is gone: {REPLACED[path]}")
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
    _check(d.validation_examples >= 0, "data.validation_examples",
           f"must be >= 0, got {d.validation_examples}")
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
    if t.seeds:
        _check(len(set(t.seeds)) == len(t.seeds) and min(t.seeds) >= 0, "train.seeds",
               f"must be distinct seeds >= 0, got {t.seeds}")
        _check(t.seed == 0, "train.seed",
               f"({t.seed}) and train.seeds ({t.seeds}) both name the seed; set one")
        _check(not t.init_from, "train.seeds",
               "cannot yet start from another run's parameters (train.init_from): train the "
               "seeds one by one (train.ae_stage_from takes a many-seed run of the same seeds)")
    _check(t.seeds_impl in ("auto", "vmap", "unroll"), "train.seeds_impl",
           f"must be 'auto', 'vmap' or 'unroll', got {t.seeds_impl!r}")
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


# Fields that are gone, and what does their work now.
REPLACED = {"gan.ae_pretrain_epochs": "train.ae_stage_epochs trains the AE first, for every "
                                      "family (experiments/notes/2026-12-07-one-ae-first-field.md)"}


def from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuilds a :class:`Config` from :meth:`Config.to_dict` output (e.g. config.json).

    A run saved before a field in :data:`REPLACED` went reads as its replacement: an
    earlier ``gan.ae_pretrain_epochs=N`` as ``train.ae_stage_epochs=N`` (the same
    epochs of the AE alone; its Adam now restarts when they end)."""
    overrides = {f"{s}.{k}": v for s in _SECTIONS for k, v in d.get(s, {}).items()}
    pre = overrides.pop("gan.ae_pretrain_epochs", 0)
    if pre and not overrides.get("train.ae_stage_epochs"):
        overrides["train.ae_stage_epochs"] = pre
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
