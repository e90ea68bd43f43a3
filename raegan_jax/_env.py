"""Process setup that must happen before jax is imported (so: no jax import here)."""

from __future__ import annotations

import os


def cpu_device_flags(environ: dict | None = None, max_devices: int = 8) -> None:
    """Splits the host CPU into one virtual JAX device per core (at most ``max_devices``).

    XLA:CPU keeps only ~1.6 of 2 cores busy on these small convolutions; with
    the batch split over one device per core, each core runs its own shard
    (measured here: CIFAR-10 AE step 83 -> 55 ms at batch 128 on 2 cores).
    Must run before jax is imported; it only affects the CPU backend, so it is
    harmless where an accelerator is used. Leaves an existing
    ``--xla_force_host_platform_device_count`` alone; ``RAEGAN_CPU_DEVICES=N``
    sets the count (1 turns it off).
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = int(env.get("RAEGAN_CPU_DEVICES") or min(os.cpu_count() or 1, max_devices))
    if n > 1:
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
