"""Many seeds in one program (``train.seeds``): a train state with a leading seed axis.

A run of ``train.seeds=(s_1, ..., s_S)`` trains S members side by side: every leaf of
its :class:`~raegan_jax.state.TrainState` has a leading axis of S (member k initialised
from ``key(s_k)``, its own stage flag, controller and per-step keys), every sweep feeds
member k the batches of ``epoch_permutation(s_k, sweep)``, and one compiled program
runs all of them. Member k computes what the single run with ``train.seed=s_k``
computes, so its records, figures and summary (``<workdir>/seed<s_k>``) are that
run's (to float tolerance: the programs are compiled together).

How the members share a program (``train.seeds_impl``):

* ``"vmap"``: ``jax.vmap`` over the seed axis, one batched program. On an accelerator
  this fills a chip that one of these small models leaves mostly idle.
* ``"unroll"``: the single step written once per member in one program. ``vmap``
  turns each member's convolutions into grouped convolutions, which XLA:CPU runs
  several times slower than plain ones (the judge's three critics: 136 ms a step
  vmapped against 37 ms unrolled, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax.checkpoint import Checkpointer
from raegan_jax.config import Config
from raegan_jax.parallel import to_host
from raegan_jax.workdir import read_config


def many(cfg: Config) -> bool:
    """True for a many-seed run (its state has a leading seed axis)."""
    return bool(cfg.train.seeds)


def seeds_of(cfg: Config) -> tuple[int, ...]:
    """The seeds a run trains: ``train.seeds``, or the one ``train.seed``."""
    return cfg.train.seeds or (cfg.train.seed,)


def member_config(cfg: Config, seed: int) -> Config:
    """The single run's config that member ``seed`` of a many-seed run equals."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=(),
                                                              seeds_impl="auto"))


def member_dir(workdir: pathlib.Path, seed: int) -> pathlib.Path:
    return workdir / f"seed{seed}"


def run_dirs(path: str | pathlib.Path) -> list[pathlib.Path]:
    """The runs a workdir holds: each seed's folder of a many-seed run, else the workdir."""
    path = pathlib.Path(path)
    cfg = read_config(path)
    return [member_dir(path, s) for s in cfg.train.seeds] if cfg and many(cfg) else [path]


def members(cfg: Config, workdir: pathlib.Path) -> list[tuple[Config, pathlib.Path]]:
    """``(config, workdir)`` of each member: the run itself for a single run."""
    if not many(cfg):
        return [(cfg, workdir)]
    return [(member_config(cfg, s), member_dir(workdir, s)) for s in cfg.train.seeds]


def impl(cfg: Config) -> str:
    """``train.seeds_impl`` resolved for this backend ("vmap" or "unroll")."""
    if cfg.train.seeds_impl != "auto":
        return cfg.train.seeds_impl
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


def stack(trees: list[Any]) -> Any:
    """Pytrees of one structure stacked along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[k], tree)


def member_of(cfg: Config, tree: Any, k: int) -> Any:
    """Member ``k`` of a run's (stacked, for a many-seed run) pytree; the tree itself otherwise."""
    return member(tree, k) if many(cfg) else tree


def step_of(state: Any) -> int:
    """The step count of a (stacked) train state, on the host (the members step together)."""
    return int(np.ravel(to_host(state.step))[0])


def initial_state(cfg: Config, create: Callable[[Config, jax.Array], Any]) -> Any:
    """The fresh train state: ``create(cfg, key(train.seed))``, or the members' stacked."""
    if not many(cfg):
        return create(cfg, jax.random.key(cfg.train.seed))
    return stack([create(member_config(cfg, s), jax.random.key(s)) for s in cfg.train.seeds])


def over_seeds(fn: Callable, cfg: Config) -> Callable:
    """``fn(state, batches)`` for one member, made to run every member of a many-seed run
    (state and batches with a leading seed axis; the outputs stacked), per
    :func:`impl`. ``fn`` itself for a single run."""
    if not many(cfg):
        return fn
    if impl(cfg) == "vmap":
        return jax.vmap(fn)
    n = len(cfg.train.seeds)

    def unrolled(state, batches):
        return stack([fn(member(state, k), batches[k]) for k in range(n)])

    return unrolled


def map_state(cfg: Config, fn: Callable[[Any], Any], state: Any) -> Any:
    """``fn`` (a function of one member's state) applied to every member."""
    return jax.vmap(fn)(state) if many(cfg) else fn(state)


def save_member(cfg: Config, workdir: pathlib.Path, state: Any, step: int) -> None:
    """Saves member ``cfg.train.seed``'s final state as its folder's one checkpoint, so
    the folder is a finished run of ``cfg`` (``raegan eval``, ``train.init_from``)."""
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=1)
    try:
        if step not in ckpt.all_steps():
            ckpt.save(step, state, {"config": cfg.to_dict(), "epoch": cfg.train.epochs, "step": step})
    finally:
        ckpt.close()


# Headline numbers of a member's summary.json that the table over seeds averages.
TABLE_KEYS = ("val_recon_loss", "val_psnr", "val_ssim", "val_hf_ratio", "test_recon_loss",
              "test_psnr", "test_ssim", "test_hf_ratio", "d_real_acc", "d_fake_acc",
              "d_real_prob", "d_fake_prob", "balance_gap", "test_d_real_prob", "test_d_fake_prob")


def table(cfg: Config, summaries: dict[int, dict], compile_s: float, wall: float) -> dict:
    """The many-seed run's ``summary.json``: per headline number the mean over seeds and
    its sample standard deviation (ddof = 1; None for one seed), each seed's value, and
    the run's speed (images a second summed over the seeds)."""
    first = next(iter(summaries.values()))
    out: dict[str, Any] = {"preset": cfg.preset, "family": cfg.model.family,
                           "passes": cfg.model.passes, "seeds": list(summaries),
                           "seeds_impl": impl(cfg), "val_split": first["val_split"]}
    for key in TABLE_KEYS:
        if key not in first:
            continue
        vals = np.asarray([s[key] for s in summaries.values()], np.float64)
        out[key] = vals.mean(axis=0).tolist()
        out[f"{key}_std"] = vals.std(axis=0, ddof=1).tolist() if len(vals) > 1 else None
    out["per_seed"] = {str(s): {k: summ[k] for k in TABLE_KEYS if k in summ}
                       for s, summ in summaries.items()}
    speed = first["images_per_sec"]
    out["images_per_sec"] = None if speed is None else speed * len(summaries)
    out.update(compile_seconds=compile_s, wall_seconds=wall, device=first["device"],
               jax_version=first["jax_version"])
    return out
