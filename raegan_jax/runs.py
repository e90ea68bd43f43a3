"""How runs relate: what may differ between them, resuming, warm starts, and the run loader.

A run starts in one of four ways, all decided here (:func:`start`): it resumes its own
newest intact checkpoint; or it branches from another run's checkpoint under new settings
(``train.init_from_state``); or it takes another run's checkpoint for its AE stage
(``train.ae_stage_from``); or it starts its AE (and D) from another run's parameters
(``train.init_from``). Each relation allows some config fields to differ and no others:
those lists are below, in one place. :func:`load_run` is the one way to read a run's
config and state back (``raegan eval``-style scripts, the experiments, the warm starts).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp

from raegan_jax import seeds as seeds_lib
from raegan_jax.checkpoint import Checkpointer, CheckpointError, load_checkpoint
from raegan_jax.config import Config, ConfigError, diff, from_dict
from raegan_jax.data import train_used
from raegan_jax.parallel import is_main, log, put_replicated, to_host
from raegan_jax.stages import STAGE_RECON, ae_stage_config
from raegan_jax.state import TrainState, carry_opt_state, create_train_state
from raegan_jax.workdir import WorkdirError, decode_sums, read_config, read_records, write_records

# ---------------------------------------------------------------------------------------
# What may differ between runs: the one list.

# Fields that may change when a run is continued: more epochs, other logging, and
# implementation choices that compute the same function with the same parameters.
RESUMABLE = {"train.epochs", "train.eval_every_epochs", "train.checkpoint_every_epochs",
             "train.keep_checkpoints", "train.num_figure_images", "train.steps_per_dispatch",
             "data.data_dir", "model.decoder_impl", "gan.stage_impl", "model.unroll",
             "model.batch_chunks", "train.diagnostics", "train.init_from", "train.init_from_d",
             "train.init_from_state", "train.ae_stage_from", "train.keep_epochs",
             "train.seeds_impl"}


# What a branch's source must share with it (train.init_from_state): the fields that
# decide the state's shapes, the images and their order.
BRANCH_SHARES = ("model.", "data.", "train.batch_size", "train.seed")


# Fields in which a plain-AE run may differ from a run's AE stage and still train the
# AE alike (train.ae_stage_from): the run's length, D's and the game's settings, the
# recursion's objective, what the run evaluates, logs and keeps.
STAGE_FREE = ("preset", "train.epochs", "train.ae_stage_epochs", "train.d_lr", "train.d_b1",
              "train.d_eps", "train.rae_objective", "model.disc_widths", "data.test_examples", "gan.")


def check_config(cfg: Config, workdir: pathlib.Path) -> bool:
    """Returns True if ``workdir`` holds a run of ``cfg`` (to resume), False if it holds none.

    Raises:
      WorkdirError: the workdir holds a run of another preset or of settings
        that change what is computed (fields outside :data:`RESUMABLE`).
    """
    try:
        old = read_config(workdir)
    except ValueError as e:
        raise WorkdirError(f"{workdir / 'config.json'} is unreadable ({e}); use another --workdir"
                           ) from e
    if old is None:
        return False
    problem = config_mismatch(old, cfg)
    if problem:
        raise WorkdirError(f"workdir {workdir} holds a run of {problem}; use another --workdir")
    return True


def config_mismatch(old: Config, cfg: Config) -> str | None:
    """What makes a run of ``old`` impossible to continue as ``cfg`` (None if nothing)."""
    if old.preset != cfg.preset:
        return f"preset '{old.preset}', not '{cfg.preset}'"
    changed = [f for f in diff(old, cfg) if f not in RESUMABLE
               or (f == "train.epochs" and (old.train.schedule_spans_run or cfg.train.schedule_spans_run))]
    if changed == ["train.epochs"]:
        return (f"{old.train.epochs} epochs, not {cfg.train.epochs}: its learning-rate schedule "
                f"ends with the run (train.lr_schedule / train.cooldown_fraction)")
    return f"other settings ({', '.join(changed)})" if changed else None


def ae_stage_mismatch(src: Config, cfg: Config, n_train: int) -> list[str]:
    """Where a run ``src`` trains the AE otherwise than ``cfg``'s AE stage does.

    Args:
      src: the source run's config: a plain AE (family ``ae``), or a run whose own AE
        stage lasts at least as long as ``cfg``'s.
      cfg: the run whose AE stage it should stand in for.
      n_train: the training images ``cfg`` loaded (``data.train_examples`` may
        differ where both ask for at least every image there is).

    Returns:
      The dotted fields that differ where they must not; empty if the source's
      first ``train.ae_stage_epochs`` epochs are the stage, update for update.
    """
    if src.model.family != "ae":
        if src.train.ae_stage_epochs < cfg.train.ae_stage_epochs:
            return [f"train.ae_stage_epochs (the source's AE stage ends at epoch "
                    f"{src.train.ae_stage_epochs}, before {cfg.train.ae_stage_epochs})"]
        src = ae_stage_config(src)  # its stage's epochs train this plain AE
    want = ae_stage_config(cfg)
    out = []
    for f in diff(src, want):
        if f in RESUMABLE or f.startswith(STAGE_FREE):
            continue
        if f == "train.ae_ema" and cfg.train.ae_ema == 0:
            continue  # a weight average beside the AE changes no update; this run drops it
        if f == "train.cooldown_fraction" and _cools_after(src, cfg, n_train):
            continue  # the source's cool-down starts after the stage has ended
        if f == "data.train_examples":
            took_all = cfg.data.train_examples == 0 or cfg.data.train_examples > n_train
            if not cfg.data.resample_train and took_all and (
                    src.data.train_examples == 0 or src.data.train_examples >= n_train):
                continue  # both asked for at least the n_train images there are
        out.append(f)
    if cfg.train.schedule_spans_run and src.train.epochs != cfg.train.epochs:
        out.append("train.epochs (the learning-rate schedule spans the whole run)")
    return out


def _cools_after(src: Config, cfg: Config, n_train: int) -> bool:
    """True if ``src``'s cool-down (``train.cooldown_fraction``) begins at or after the
    last update of ``cfg``'s AE stage: its stage's updates are those of a constant rate."""
    spe = n_train // cfg.train.batch_size
    return src.train.cooldown_start(spe) >= cfg.train.ae_stage_epochs * spe


def ae_stage_chain(configs, available: dict[str, tuple[int, int]]) -> dict[str, str]:
    """Which presets, run in this order, can take their AE stage from an earlier preset's
    run (``train.ae_stage_from``), as ``experiments/run_report.sh`` chains them.

    Args:
      configs: the runs' configs (named by ``preset``), in the order they run.
      available: dataset -> (train, test) images on disk (:func:`~raegan_jax.data.split_sizes`);
        whether two presets train on the same images depends on it.

    Returns:
      ``{preset: source preset}`` for each preset whose AE stage is, update for update,
      the first ``train.ae_stage_epochs`` epochs of the source's run
      (:func:`~raegan_jax.runs.ae_stage_mismatch` finds nothing). A source is an
      earlier plain AE or an earlier preset that trains its own AE stage, at least as
      long (a plain AE first); a chained preset is no source (its stage is not its own).
    """
    chain, sources = {}, []
    for cfg in configs:
        name = cfg.preset
        if cfg.model.family != "ae" and not cfg.train.ae_stage_epochs:
            continue
        if cfg.train.ae_stage_epochs:
            n = train_used(cfg, available[cfg.data.dataset][0])
            src = [c for c in sources if c.data.dataset == cfg.data.dataset
                   and _ae_epochs(c) >= cfg.train.ae_stage_epochs
                   and not ae_stage_mismatch(c, cfg, n)]
            if src:
                chain[name] = min(src, key=lambda c: c.model.family != "ae").preset
                continue
        sources.append(cfg)
    return chain


def _ae_epochs(cfg: Config) -> int:
    """How many epochs from the start a run of ``cfg`` trains the plain AE."""
    return cfg.train.epochs if cfg.model.family == "ae" else cfg.train.ae_stage_epochs


# ---------------------------------------------------------------------------------------
# Loading a run, and starting one.

@dataclasses.dataclass(frozen=True)
class Run:
    """A run read back from its workdir or one of its checkpoints (:func:`load_run`).

    Attributes:
      config: the run's config, as it trained.
      state: its train state at that checkpoint (on the host).
      meta: the checkpoint's metadata: ``epoch`` completed, ``step``, ...
      checkpoint: the checkpoint folder read, ``<workdir>/checkpoints/<step>``.
    """

    config: Config
    state: TrainState
    meta: dict
    checkpoint: pathlib.Path

    @property
    def workdir(self) -> pathlib.Path:
        return self.checkpoint.parent.parent

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    def records(self) -> list[dict]:
        """The run's per-epoch records (``metrics.jsonl``)."""
        return read_records(self.workdir)


def _like(config: dict) -> TrainState:
    """A state of the structure a run of ``config`` saves (restored into): a many-seed
    run's has a leading seed axis."""
    return seeds_lib.initial_state(from_dict(config), create_train_state)


def load_run(path: str | pathlib.Path, epoch: int | None = None, what: str = "run") -> Run:
    """Reads a run's config and train state: the one loader every script and warm start uses.

    Args:
      path: a workdir (its newest checkpoint), its ``checkpoints`` folder, or one
        checkpoint folder ``.../checkpoints/<step>``.
      epoch: read the workdir's checkpoint that ends this epoch instead of its newest.
      what: names the setting or script in errors (``train.init_from``, ...).

    Raises:
      CheckpointError: naming the path, if no readable checkpoint (of that epoch) is there.
    """
    meta, state, folder = load_checkpoint(path, _like, epoch=epoch, what=what)
    return Run(from_dict(meta["config"]), state, meta, folder)


def checkpointer(cfg: Config, workdir: pathlib.Path, spe: int) -> Checkpointer:
    """The run's checkpoints: its newest ``train.keep_checkpoints``, and the ends of the
    epochs ``train.keep_epochs`` names (another run's ``train.ae_stage_from`` reads them)."""
    return Checkpointer(workdir / "checkpoints", max_to_keep=cfg.train.keep_checkpoints,
                        keep_steps=tuple(e * spe for e in cfg.train.keep_epochs))


def start(cfg: Config, ckpt: Checkpointer, mesh, spe: int, n_train: int
          ) -> tuple[TrainState, int, dict | None]:
    """The state a run starts from: its newest intact checkpoint, or in a new run a fresh
    state with ``train.init_from_state``, ``train.ae_stage_from`` or ``train.init_from``
    applied.

    Returns:
      ``(state, epochs completed, partial)``: ``partial`` describes an epoch
      a signal interrupted (its finished sweeps' and current sweep's metric
      sums, seconds spent), or None.
    """
    state = put_replicated(seeds_lib.initial_state(cfg, create_train_state), mesh)

    def check_meta(path: pathlib.Path, meta: dict) -> None:
        try:
            problem = config_mismatch(from_dict(meta["config"]), cfg)
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"checkpoint {path} has no readable config ({e})") from e
        if problem:
            raise CheckpointError(f"checkpoint {path} belongs to a run of {problem}")

    found = ckpt.restore_newest(state, check_meta, log=log)
    if found is None:
        if cfg.train.init_from_state:
            state, epoch = branch_from(cfg, state, mesh, workdir=ckpt.directory.parent)
            return state, epoch, None
        if cfg.train.ae_stage_from:
            state = ae_stage_from(cfg, state, mesh, ckpt.directory.parent, spe, n_train)
            return state, cfg.train.ae_stage_epochs, None
        if cfg.train.init_from:
            state = init_from(cfg, state, mesh)
        return state, 0, None
    step, state, meta = found
    partial = meta.get("partial")
    where = f"epoch {meta['epoch'] + 1}, mid-epoch" if partial else f"epoch {meta['epoch']}"
    log(f"resuming from checkpoint {ckpt.path(step)} ({where}, step {seeds_lib.step_of(state)})")
    if partial:
        partial = {"sweeps": [(n, decode_sums(s)) for n, s in partial["sweeps"]],
                   "current": None if partial["current"] is None else decode_sums(partial["current"]),
                   "seconds": partial["seconds"]}
    return state, meta["epoch"], partial


def init_from(cfg: Config, state: TrainState, mesh) -> TrainState:
    """Starts ``state`` from the parameters of another run (``train.init_from``).

    The source may be a workdir (its newest checkpoint) or one checkpoint
    folder. Its AE (and with ``train.init_from_d`` its D) must have this
    model's dataset and shapes; optimizer states stay fresh.
    """
    run = load_run(cfg.train.init_from, what="train.init_from")
    src_cfg, src = run.config, run.state
    if src_cfg.data.dataset != cfg.data.dataset:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: a {src_cfg.data.dataset} "
                          f"model cannot start a {cfg.data.dataset} run")
    parts = ["ae_params"] + (["d_params"] if cfg.train.init_from_d else [])
    for part in parts:
        mine, theirs = getattr(state, part), getattr(src, part)
        if theirs is None:
            raise ConfigError(f"train.init_from {cfg.train.init_from} holds no discriminator "
                              f"(family {src_cfg.model.family!r})")
        shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)  # noqa: E731
        if jax.tree.structure(mine) != jax.tree.structure(theirs) or shapes(mine) != shapes(theirs):
            raise ConfigError(f"train.init_from {cfg.train.init_from}: its {part} have other "
                              f"layers or shapes than this model's")
    state = state.replace(**{p: put_replicated(jax.device_get(getattr(src, p)), mesh) for p in parts})
    if state.ae_ema is not None:  # the average starts where the AE starts
        state = state.replace(ae_ema=put_replicated(jax.device_get(src.ae_params), mesh))
    if state.d_ema is not None and cfg.train.init_from_d:  # D's, where D starts
        state = state.replace(d_ema=put_replicated(jax.device_get(src.d_params), mesh))
    log(f"initialised {' and '.join(p[:-7].upper() for p in parts)} from {cfg.train.init_from}")
    return state


def branch_from(cfg: Config, state: TrainState, mesh, workdir: pathlib.Path
                 ) -> tuple[TrainState, int]:
    """Continues another run's checkpoint under ``cfg`` (``train.init_from_state``).

    Returns:
      ``(state, epochs the source completed)``; the source's metric records of
      those epochs are copied into ``workdir/metrics.jsonl``.

    Raises:
      ConfigError: naming the fields in which the source differs from ``cfg`` where
        it must not (:data:`BRANCH_SHARES`), or a mid-epoch checkpoint.
    """
    src = cfg.train.init_from
    run = load_run(src, what="train.init_from")
    meta, src_state, folder = run.meta, run.state, run.checkpoint
    differ = [f for f in diff(run.config, cfg)
              if f.startswith(BRANCH_SHARES) and f not in RESUMABLE]
    if differ:
        raise ConfigError(f"train.init_from {src}: a branch must share the source's model, data, "
                          f"batch size and seed; these differ: {', '.join(differ)}")
    if meta.get("partial"):
        raise ConfigError(f"train.init_from {src}: checkpoint {folder} was saved mid-epoch; "
                          f"a branch starts from the end of an epoch")
    # A changed learning-rate schedule (e.g. a cool-down) changes the optax state's parts.
    src_state = src_state.replace(
        ae_opt_state=carry_opt_state(src_state.ae_opt_state, state.ae_opt_state),
        d_opt_state=carry_opt_state(src_state.d_opt_state, state.d_opt_state))
    if jax.tree.structure(src_state) != jax.tree.structure(state):
        raise ConfigError(f"train.init_from {src}: its train state has other parts than this "
                          f"config's (a weight average or a controller on one side only)")
    epoch = int(meta["epoch"])
    if epoch >= cfg.train.epochs:
        raise ConfigError(f"train.init_from {src}: the source completed {epoch} epochs; "
                          f"train.epochs ({cfg.train.epochs}) leaves nothing to train")
    copy_records(folder.parent.parent, workdir, epoch)
    log(f"branching from {folder} (epoch {epoch}, step {int(to_host(src_state.step))})")
    return put_replicated(jax.device_get(src_state), mesh), epoch


def ae_stage_from(cfg: Config, state: TrainState, mesh, workdir: pathlib.Path, spe: int,
                   n_train: int) -> TrainState:
    """Stands another run's checkpoint in for this run's AE stage (``train.ae_stage_from``).

    The AE stage trains only the AE (its parameters, Adam state and weight
    average) with the plain AE's step; everything else in the state stays as
    initialised. So the state at the stage's end is the fresh ``state`` with the
    source's AE parts and step count, and the flag the stage leaves
    (reconstruction). The source's records of those epochs are copied into
    ``metrics.jsonl`` without their evaluations (those evaluated the source's model).

    Args:
      cfg: this run's config; ``state``: its fresh train state.
      workdir: this run's workdir; ``spe``, ``n_train``: its steps per epoch and
        training images.

    Returns:
      The state at the end of epoch ``train.ae_stage_epochs``.

    Raises:
      ConfigError: the source trains the AE otherwise than this stage would
        (naming the fields), or stopped at another step.
      CheckpointError: it has no checkpoint at the end of that epoch.
    """
    src, k = cfg.train.ae_stage_from, cfg.train.ae_stage_epochs
    run = load_run(src, epoch=k, what="train.ae_stage_from")
    src_cfg, src_state, folder = run.config, run.state, run.checkpoint
    differ = ae_stage_mismatch(src_cfg, cfg, n_train)
    if differ:
        raise ConfigError(f"train.ae_stage_from {src}: that run trains the AE otherwise than "
                          f"this run's AE stage would; these differ: {', '.join(differ)}")
    if seeds_lib.step_of(src_state) != k * spe:
        raise ConfigError(f"train.ae_stage_from {src}: its epoch {k} ended at step "
                          f"{seeds_lib.step_of(src_state)}, this run's would at {k * spe} "
                          f"(other training images?)")
    # A weight average of this run's is the source's (ae_stage_mismatch: the same decay).
    # A source that cools down after the stage has a schedule's count in its optax state.
    state = state.replace(
        step=src_state.step, stage=jnp.full_like(state.stage, STAGE_RECON),
        ae_params=src_state.ae_params,
        ae_opt_state=carry_opt_state(src_state.ae_opt_state, state.ae_opt_state),
        ae_ema=src_state.ae_ema if state.ae_ema is not None else None)
    # A many-seed source's records are its seeds' (a many-seed run of the same seeds: the
    # seeds are compared above), each copied into this run's folder of that seed.
    for (_, mine), (_, theirs) in zip(seeds_lib.members(cfg, workdir),
                                      seeds_lib.members(src_cfg, folder.parent.parent)):
        copy_records(theirs, mine, k, keep=lambda key: not key.startswith("val/"))
    log(f"AE stage (epochs 1-{k}) taken from {folder} (step {k * spe})")
    return put_replicated(jax.device_get(state), mesh)


def copy_records(src: pathlib.Path, workdir: pathlib.Path, epoch: int,
                  keep=lambda key: True) -> None:
    """Starts ``workdir/metrics.jsonl`` with the records of epochs 1..``epoch`` of the run
    in ``src`` (a workdir), their fields that ``keep`` accepts, each marked ``copied_from``
    that run (its speed is not this run's)."""
    if is_main() and (src / "metrics.jsonl").exists():  # the source may still be training
        recs = [{**{k: v for k, v in r.items() if keep(k)}, "copied_from": str(src)}
                for r in read_records(src) if r["epoch"] <= epoch]
        write_records(workdir, recs)

