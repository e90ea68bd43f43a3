"""The Colab notebook's code runs (tiny, on CPU), so it cannot rot."""

import json

from conftest import REPO, run_python

NOTEBOOK = REPO / "experiments" / "colab_quickstart.ipynb"


def notebook_code() -> str:
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"
             and "colab-only" not in c.get("metadata", {}).get("tags", [])]
    lines = []
    for c in cells:
        src = "".join(c["source"])
        lines += [l for l in src.splitlines() if not l.lstrip().startswith(("!", "%"))]
    return "\n".join(lines)


def test_notebook_runs_on_cpu(tmp_path):
    code = notebook_code()
    assert "train_and_evaluate" in code and "bench_steps" in code
    prelude = (f"import os; os.environ['RAEGAN_NOTEBOOK_TEST'] = '1'; "
               f"os.environ['RAEGAN_NOTEBOOK_WORKDIR'] = {str(tmp_path)!r}\n")
    proc = run_python(prelude + code, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "mnist_aegan"
    assert (work / "summary.json").exists() and (work / "reconstructions.png").exists()
    assert "| jax | mnist | ae |" in proc.stdout
