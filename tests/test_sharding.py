"""Data parallelism over 8 CPU devices (in a subprocess: XLA_FLAGS must precede jax)."""

import json

from conftest import run_python

CODE = r"""
import json, jax, jax.numpy as jnp, numpy as np
import raegan_jax as rj
from raegan_jax import steps
assert jax.device_count() == 8
over = {"model.conv_widths": "4,8,8", "model.dense_widths": "16", "model.latent_dim": 4,
        "model.disc_widths": "16,8", "train.batch_size": 16, "model.passes": 2,
        "model.batch_chunks": 2, "train.warmup_steps": 0}  # each chunk stays split over the 8 devices
cfg = rj.get_preset("mnist_aegan", {**over, "model.family": "raegan"})
xs = [jax.random.uniform(jax.random.key(i), (16, 28, 28, 1)) for i in range(4)]
out = {}
for name, devs in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    mesh = rj.make_mesh(devs)
    step = rj.make_train_step(cfg, mesh=mesh, steps_per_epoch=4)
    state = rj.create_train_state(cfg, jax.random.key(0))
    for x in xs:
        state, m = step(state, x)
    out[name] = (state, m, step.compiles())
    if name == "eight":
        assert len(state.ae_params["enc_conv0"]["kernel"].sharding.device_set) == 8
a, b = out["one"][0], out["eight"][0]
err = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
errors = {}
try:
    rj.make_train_step(cfg, mesh=rj.make_mesh(), steps_per_epoch=4)(rj.create_train_state(cfg, jax.random.key(0)), xs[0][:12])
except ValueError as e:
    errors["indivisible"] = str(e)
ev = rj.make_eval_step(cfg)(b, xs[0])
auto = rj.make_mesh(batch_size=12)  # CPU: the largest device count dividing the batch
print(json.dumps({"auto_mesh": auto.size, "err": err, "stage_equal": int(a.stage) == int(b.stage),
                  "compiles": out["eight"][2], "errors": errors,
                  "eval_recon": np.asarray(ev["recon_loss"]).tolist()}))
"""


def test_eight_devices_match_one_device():
    proc = run_python(CODE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["err"] < 1e-4, res
    assert res["stage_equal"]
    assert res["compiles"] == 1
    assert "does not divide over 8 devices" in res["errors"]["indivisible"]
    assert len(res["eval_recon"]) == 2
    assert res["auto_mesh"] == 6
