"""Shared fixtures. The main test process runs on one CPU device; multi-device
tests start a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def key():
    return jax.random.key(0)


def run_python(code: str, devices: int = 8, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with ``devices`` CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout)
