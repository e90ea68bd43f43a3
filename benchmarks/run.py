"""Runs the benchmark harness (same as `raegan bench`): python benchmarks/run.py --torch ..."""

import sys

from raegan_jax._env import cpu_device_flags

cpu_device_flags()  # RAEGAN_CPU_DEVICES=N: N virtual CPU devices, before jax is imported

from raegan_jax.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
