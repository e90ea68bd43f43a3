"""Why ``train.steps_per_dispatch=8`` ends elsewhere than 1, and what it costs on this backend.

From one fresh ``cifar10_ae`` state (the preset: batch 16) on the real training images in
sweep 0's order, trains ``--steps`` steps twice, as the loop does: one step per call
(``steps_per_dispatch=1``) and ``--k`` steps per call (one compiled program of k steps,
unrolled on CPU). Both program forms are also run twice each from the same state, to show
whether each is deterministic. Logs every k steps the largest parameter difference between
the two forms (absolute, and relative to the parameters' scale) and the train loss of each,
then times both forms' steps interleaved (``block_until_ready``, medians, compile apart).

Usage:
  python experiments/probes/dispatch.py --steps 256 --k 8 --out experiments/results/dispatch_cpu.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import numpy as np

from raegan_jax import data as data_lib
from raegan_jax.configs import get_preset
from raegan_jax.parallel import make_mesh
from raegan_jax.programs import epoch_permutation, make_multi_step, sweep_batches
from raegan_jax.state import create_train_state


def flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(params)])


def run(steps: int, k: int, repeats: int) -> dict:
    cfg = get_preset("cifar10_ae", {"data.train_examples": 0})
    ds = data_lib.load(cfg)
    bs, mesh = cfg.train.batch_size, make_mesh(batch_size=cfg.train.batch_size)
    spe = len(ds.train.images) // bs
    perm = np.asarray(epoch_permutation(cfg.train.seed, 0, len(ds.train.images)))
    batches = sweep_batches(ds.train.images, perm, spe, bs, mesh)
    programs = {n: make_multi_step(cfg, n, steps_per_epoch=spe, mesh=mesh) for n in (1, k)}
    fresh = lambda: create_train_state(cfg, jax.random.key(cfg.train.seed))  # noqa: E731
    compile_s = {n: p.compile(fresh(), batches) for n, p in programs.items()}

    states = {(n, rep): fresh() for n in (1, k) for rep in (0, 1)}
    losses = {n: [] for n in (1, k)}
    trace = []
    for done in range(k, steps + 1, k):
        for (n, rep), st in list(states.items()):
            for _ in range(k // n):
                st, sums = programs[n](st, batches)
                if rep == 0:
                    losses[n].append(float(sums["recon_loss"][0]) / int(sums["count"]))
            states[(n, rep)] = st
        p1, pk = flat(states[(1, 0)].ae_params), flat(states[(k, 0)].ae_params)
        trace.append({"step": done, "max_abs_diff": float(np.abs(p1 - pk).max()),
                      "rel_diff": float(np.linalg.norm(p1 - pk) / np.linalg.norm(p1)),
                      "repeat_diff_1": float(np.abs(p1 - flat(states[(1, 1)].ae_params)).max()),
                      "repeat_diff_k": float(np.abs(pk - flat(states[(k, 1)].ae_params)).max()),
                      "loss_1": losses[1][-1], "loss_k": float(np.mean(losses[k][-1:]))})
        print(json.dumps(trace[-1]), flush=True)

    # Speed: both forms interleaved, each timed over k steps.
    st = {1: states[(1, 0)], k: states[(k, 0)]}
    times = {1: [], k: []}
    for _ in range(repeats):
        for n in (1, k):
            t = time.perf_counter()
            for _ in range(k // n):
                st[n], sums = programs[n](st[n], batches)
            jax.block_until_ready((st[n], sums))
            times[n].append((time.perf_counter() - t) / k)
    speed = {f"ms_per_step_{n}": 1e3 * statistics.median(times[n]) for n in (1, k)}
    print(json.dumps(speed))
    return {"preset": "cifar10_ae", "batch": bs, "k": k, "steps": steps, "trace": trace,
            "compile_s": {str(n): c for n, c in compile_s.items()}, **speed,
            "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=pathlib.Path)
    a = ap.parse_args()
    out = run(a.steps, a.k, a.repeats)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2))
