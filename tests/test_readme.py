"""The README's Python example runs as written and computes what it says."""

import re

import jax
import numpy as np

from conftest import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The library"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its workdir "runs/my_run" lands here
    ns: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), ns)  # noqa: S102
    ae, state, x, outs = ns["ae"], ns["state"], ns["x"], ns["outs"]
    # AE applied 1, 2 and 3 times: the public output is images, fed straight back.
    v = {"params": state.ae_params}
    apply = jax.jit(ae.apply)  # one compile, not one per op
    once = apply(v, x)
    assert float(once.min()) >= 0.0 and float(once.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(once), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outs[2]), np.asarray(apply(v, apply(v, once))),
                               rtol=1e-4, atol=1e-5)
    assert int(state.step) == ns["spe"]  # one sweep of the library's own loop
    assert len(ns["metrics"]["recon_loss"]) == 3 and np.all(np.isfinite(ns["metrics"]["recon_loss"]))
    # what train_and_evaluate returns is what the run wrote: one finite loss per pass
    import json
    written = json.loads((tmp_path / "runs" / "my_run" / "summary.json").read_text())
    assert written["val_recon_loss"] == ns["summary"]["val_recon_loss"]
    assert len(written["val_recon_loss"]) == 3 and np.all(np.isfinite(written["val_recon_loss"]))
