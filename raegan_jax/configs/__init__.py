"""Presets as code: each a function returning a :class:`~raegan_jax.config.Config`.

A preset is one of the report's experiments as written (:mod:`.report`) plus its
departures, each measured and explained in its function's docstring (:mod:`.mnist`,
:mod:`.cifar10`). ``raegan presets`` prints them; :func:`departures` computes them.
"""

from __future__ import annotations

from typing import Any, Mapping

from raegan_jax.config import Config, ConfigError, apply_overrides, diff
from raegan_jax.configs import cifar10, mnist
from raegan_jax.configs.report import RESULTS
from raegan_jax.configs.report import as_written as as_written_

_BUILDERS = {**mnist.PRESETS, **cifar10.PRESETS}
# The report's order (SPEC §5).
NAMES = ("mnist_ae", "cifar10_ae", "cifar10_rae", "mnist_aegan", "cifar10_aegan", "cifar10_raegan")
PRESETS: dict[str, Config] = {name: _BUILDERS[name]() for name in NAMES}


def get_preset(name: str, overrides: Mapping[str, Any] | None = None, *,
               as_written: bool = False) -> Config:
    """Returns a validated preset, optionally with dotted-path overrides.

    Args:
      name: one of :data:`PRESETS` (``mnist_ae``, ``cifar10_raegan``, ...).
      overrides: ``{"model.passes": 3, "train.batch_size": 64, ...}``. Values
        may be Python values or strings (as given on the command line).
      as_written: the report's experiment with the report's settings (none of the
        preset's departures), then ``overrides``.

    Returns:
      The validated :class:`Config`.

    Raises:
      ConfigError: unknown preset, unknown field or a value out of range.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return apply_overrides(as_written_(name) if as_written else PRESETS[name], overrides or {})


def departures(name: str) -> list[tuple[str, Any, Any]]:
    """Every field where preset ``name`` departs from the report's experiment as written:
    ``[(dotted field, the report's value, the preset's value), ...]``."""
    report, preset = as_written_(name), PRESETS[name]
    out = []
    for path in diff(report, preset):
        section, field = path.split(".")
        out.append((path, getattr(getattr(report, section), field),
                    getattr(getattr(preset, section), field)))
    return out


def describe(name: str) -> str:
    """A preset in a few lines: what it trains, the report's number, every departure."""
    cfg = PRESETS[name]
    head = (f"{name}: {cfg.model.family}, {cfg.data.dataset}, passes={cfg.model.passes}, "
            f"epochs={cfg.train.epochs}, train/validation/test={cfg.data.train_examples}/"
            f"{cfg.data.validation_examples}/{cfg.data.test_examples}, "
            f"loss={cfg.train.recon_loss}; report: {RESULTS[name]}")
    rows = [f"    {path}: {_show(a)} -> {_show(b)}" for path, a, b in departures(name)]
    return "\n".join([head, "  departs from the report in:" if rows else "  as the report",
                      *rows])


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)


__all__ = ["NAMES", "PRESETS", "departures", "describe", "get_preset"]
