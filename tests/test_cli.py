"""Bad input on the command line: one clear line, exit code 2, no traceback."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from raegan_jax.cli import _parse_sets, build_parser
from raegan_jax.config import ConfigError
from raegan_jax.configs import PRESETS, get_preset


def raegan(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "raegan_jax.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["--preset", "mnist_vae"], "unknown preset 'mnist_vae'"),
    (["--set", "model.pases=3"], "unknown config field 'model.pases'"),
    (["--set", "model.passes=0"], "model.passes must be >= 1"),
    (["--set", "gan.threshold=2"], "gan.threshold must be in (0, 1)"),
    (["--set", "train.batch_size=abc"], "train.batch_size: cannot use 'abc'"),
    (["--set", "nonsense"], "--set expects key=value"),
    # one --set with several values: the second is read (argparse used to reject it)
    (["--set", "train.epochs=3", "gan.threshold=2"], "gan.threshold must be in (0, 1)"),
    (["--data-dir", "/nonexistent/raegan"], "--data-dir /nonexistent/raegan is not a directory"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, needle):
    res = raegan("train", "--workdir", str(tmp_path / "w"), *args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_missing_cifar_data_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = raegan("train", "--preset", "cifar10_ae", "--workdir", str(tmp_path / "w"),
                 "--data-dir", str(empty))
    assert res.returncode == 2 and "no cifar10 data found" in res.stderr and str(empty) in res.stderr
    assert "Traceback" not in res.stderr


def test_presets_list_every_departure_from_the_report():
    from raegan_jax.configs import departures
    res = raegan("presets")
    assert res.returncode == 0
    blocks = dict(zip(PRESETS, res.stdout.split("\n\n")))
    for name, block in blocks.items():
        assert block.startswith(f"{name}: ")
        lines = block.splitlines()
        for path, _, _ in departures(name):
            assert sum(l.strip().startswith(f"{path}: ") for l in lines) == 1, (name, path)
    assert "train.batch_size: 128 -> 16" in blocks["cifar10_ae"]
    assert "gan.stage_policy: phases -> alternate" in blocks["cifar10_raegan"]


def _readme_set_spans() -> list[str]:
    text = (REPO / "README.md").read_text()
    spans = re.findall(r"`([^`]*--set [^`]*)`", text)
    return [" ".join(s.split()) for s in spans if "section.field" not in s]


def test_every_set_in_the_readme_is_a_valid_override():
    """Each `--set ...` the README tells a user to type parses and some preset accepts it."""
    spans = _readme_set_spans()
    assert len(spans) >= 2
    for span in spans:
        for command in (c for c in span.split("&&") if "--set" in c):  # chained commands, each
            tokens = shlex.split(command)
            tokens = tokens[tokens.index("--set"):]
            args = build_parser().parse_args(["train", "--workdir", "w", *tokens])
            sets = _parse_sets(args.sets)
            assert len(sets) == command.count("="), span  # every key=value read, none dropped
            accepted = []
            for name in PRESETS:
                try:
                    get_preset(name, sets)
                    accepted.append(name)
                except ConfigError:
                    pass
            assert accepted, f"no preset accepts the README's {command!r}"


def test_as_written_trains_the_reports_recipe_and_set_still_applies(tmp_path):
    """`raegan train --as-written` runs the report's experiment without the preset's
    departures (config.json shows the report's values), with --set on top."""
    import json
    res = raegan("train", "--preset", "mnist_ae", "--as-written", "--workdir", str(tmp_path / "w"),
                 "--no-progress", "--set", "train.epochs=1", "data.train_examples=64",
                 "data.test_examples=32", "train.batch_size=32", "model.conv_widths=4,8,8",
                 "model.dense_widths=16")
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    # mnist_ae's three departures are gone: the same images every epoch, no warm-up, no average
    assert (cfg["data"]["resample_train"], cfg["train"]["warmup_steps"], cfg["train"]["ae_ema"]) == (
        False, 0, 0.0)
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["ae_lr"] == 5e-3


def _package_imports(path) -> set[str]:
    """The package's modules ``path`` imports (those under ``if TYPE_CHECKING:`` left out)."""
    import ast
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING"
                   for b in node.body for n in ast.walk(b)}
    mods = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        if node.module == "raegan_jax":
            mods.update(a.name for a in node.names)
        elif node.module.startswith("raegan_jax."):
            mods.add(node.module.split(".")[1])
    return mods - {path.stem if path.parent.name == "raegan_jax" else path.parent.name}


def test_every_module_has_its_home_in_the_readme_and_few_imports():
    """One home per idea: each module is named in the README's table of homes, and none but
    the CLI (which dispatches to train, eval and bench) imports more than 9 of the others."""
    readme = (REPO / "README.md").read_text()
    package = REPO / "raegan_jax"
    for path in package.glob("*.py"):
        if path.name not in ("__init__.py", "__main__.py", "_env.py"):
            assert f"`{path.name}`" in readme, f"{path.name} has no home in the README's table"
    fan_in = {p.relative_to(package).as_posix(): _package_imports(p) for p in package.rglob("*.py")}
    assert max(len(m) for m in fan_in.values()) > 3  # it counts what it should
    heavy = {p: sorted(m) for p, m in fan_in.items() if len(m) > 9 and p != "cli.py"}
    assert not heavy, heavy
