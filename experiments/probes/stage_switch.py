"""What happens to a trained AE when its training switches to the recursion.

Starts ``cifar10_rae`` (3 passes, cycle objective, the preset's Adam 1e-3 and
batch 32) from the last state of a trained ``cifar10_ae`` run, once with the
AE run's Adam moments carried over (what a run whose AE stage ends does unless
the moments are reset) and once with fresh moments, and logs per step: the
train loss, the update's global norm relative to
the parameters' norm, then the live AE's val BCE per pass at a few steps.

Usage:
  python experiments/probes/stage_switch.py --from /work/runs/ema_ae/seed0 \
      --steps 252 --out experiments/results/stage_switch_seed0.json
"""
from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from raegan_jax import data as data_lib
from raegan_jax.configs import get_preset
from raegan_jax.parallel import make_mesh
from raegan_jax.programs import Evaluator, epoch_permutation, make_multi_step, sweep_batches
from raegan_jax.state import create_train_state
from raegan_jax.runs import load_run


def run(src: str, steps: int, evals: list[int]) -> dict:
    cfg = get_preset("cifar10_rae", {"train.ae_stage_epochs": 0, "train.ae_ema": 0.0})
    src_state = load_run(src).state
    ds = data_lib.load(cfg)
    mesh = make_mesh(batch_size=cfg.train.batch_size)
    spe = len(ds.train.images) // cfg.train.batch_size
    program = make_multi_step(cfg, 1, steps_per_epoch=spe, mesh=mesh)
    evaluate = Evaluator(cfg, mesh, ds.val.images)  # the split the run itself evaluated
    perm = np.asarray(epoch_permutation(cfg.train.seed, 0, len(ds.train.images)))
    batches = sweep_batches(ds.train.images, perm, spe, cfg.train.batch_size, mesh)
    out = {}
    for moments in ("carried", "fresh"):
        state = create_train_state(cfg, jax.random.key(cfg.train.seed))
        params = jax.device_get(src_state.ae_params)
        state = state.replace(ae_params=params)
        if moments == "carried":
            state = state.replace(ae_opt_state=jax.device_get(src_state.ae_opt_state))
        log = {"loss": [], "update_ratio": [], "val": {}}
        for k in range(steps + 1):
            if k in evals:
                v = evaluate(state)
                log["val"][k] = [round(float(x), 5) for x in np.asarray(v["recon_loss"])]
                print(moments, "step", k, "val", log["val"][k], flush=True)
            if k == steps:
                break
            before = jax.tree.map(jnp.copy, state.ae_params)
            state, s = program(state, batches)
            upd = optax.global_norm(jax.tree.map(lambda a, b: a - b, state.ae_params, before))
            log["loss"].append(float(s["loss"]))
            log["update_ratio"].append(float(upd / optax.global_norm(before)))
        out[moments] = log
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src", required=True, help="a trained cifar10_ae workdir")
    p.add_argument("--steps", type=int, default=252)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    evals = sorted({0, 10, 25, 50, 100, a.steps})
    res = run(a.src, a.steps, evals)
    for m, log in res.items():
        r = np.array(log["update_ratio"])
        print(f"{m}: update/param norm, steps 1-10 median {np.median(r[:10]):.2e}, "
              f"11-100 {np.median(r[10:100]):.2e}, 101+ {np.median(r[100:]):.2e}; "
              f"train loss first 10 {np.mean(log['loss'][:10]):.4f}, last 50 {np.mean(log['loss'][-50:]):.4f}")
    pathlib.Path(a.out).write_text(json.dumps({"from": a.src, "steps": a.steps, **res}, indent=1))


if __name__ == "__main__":
    main()
