"""The ``raegan`` command: a thin layer over :func:`raegan_jax.train.train_and_evaluate`.

    raegan train --preset NAME --workdir DIR [--set key=value ...] [--data-dir PATH]
                 [--coordinator-address HOST:PORT --num-processes N --process-id I]
    raegan presets
    raegan bench [...]            (see benchmarks/)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parse_sets(items: list[str]) -> dict[str, str]:
    from raegan_jax.config import ConfigError
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _quiet() -> None:
    """Keeps absl/Orbax/tfds INFO logs out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging
        # Orbax warns at WARNING level about routine things (a read-only checkpoint folder).
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def build_parser() -> argparse.ArgumentParser:
    """The ``raegan`` command's parser (``bench`` parses its own options).

    Returns:
      An ``argparse.ArgumentParser`` with the ``train``, ``eval``, ``presets`` and ``bench``
      subcommands.
    """
    parser = argparse.ArgumentParser(prog="raegan", description="RAE-GAN in JAX/Flax")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and evaluate a preset (resumes if the workdir holds it)")
    t.add_argument("--preset", default="mnist_ae", help="one of `raegan presets` (default mnist_ae)")
    t.add_argument("--workdir", required=True, help="where checkpoints, metrics and figures go")
    # extend + nargs: `--set a=1 b=2` and `--set a=1 --set b=2` both work, as the README writes both.
    t.add_argument("--set", dest="sets", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. --set model.passes=3 train.epochs=10 "
                        "(repeatable)")
    t.add_argument("--as-written", action="store_true",
                   help="the preset's experiment with the report's own settings, none of the "
                        "preset's departures (`raegan presets` lists them); --set still applies")
    t.add_argument("--data-dir", default=None, help="folder of the raw data (default: search)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = t.add_argument_group(
        "several processes (one JAX system; without these, SLURM / Open MPI / a multi-host "
        "TPU slice are detected)")
    d.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                   help="process 0's address and a free port, the same for every process")
    d.add_argument("--num-processes", type=int, default=None, metavar="N")
    d.add_argument("--process-id", type=int, default=None, metavar="I", help="0..N-1")
    e = sub.add_parser("eval", help="evaluate a trained run at passes 1..N, realism judged "
                                    "(writes WORKDIR/eval_<split>_passes<N>/eval.json and figures)")
    e.add_argument("workdir", nargs="+",
                   help="the run's workdir (its newest checkpoint is evaluated); several are "
                        "evaluated in turn, a many-seed run's as its seeds' runs")
    e.add_argument("--passes", type=int, default=None,
                   help="evaluate passes 1..N (default: the passes it trained; more allowed)")
    e.add_argument("--split", choices=("test", "val"), default="test",
                   help="the test split (default) or the run's validation split")
    e.add_argument("--no-judge", action="store_true",
                   help="skip the realism judge (a critic trained per pass) and the spectra")
    e.add_argument("--data-dir", default=None, help="folder of the raw data (default: search)")
    sub.add_parser("presets", help="list the presets")
    sub.add_parser("bench", help="time the jitted train steps; `raegan bench --help`")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``raegan`` command. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if "jax" not in sys.modules:  # opt-in virtual CPU devices (RAEGAN_CPU_DEVICES, see _env.py)
        from raegan_jax._env import cpu_device_flags
        cpu_device_flags()
    if argv[:1] == ["bench"]:  # its own options (argparse.REMAINDER would drop them)
        _quiet()
        from raegan_jax.bench import main as bench_main
        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet()

    from raegan_jax.checkpoint import CheckpointError
    from raegan_jax.config import ConfigError
    from raegan_jax.configs import PRESETS, describe, get_preset
    from raegan_jax.data import DataError

    if args.cmd == "presets":
        print("\n\n".join(describe(name) for name in PRESETS))
        print("\n`--set FIELD=VALUE` with a report value returns a preset to the report's recipe;"
              " the reasons and measurements: help(raegan_jax.configs.<mnist|cifar10>.<preset>)")
        return 0
    if args.cmd == "eval":
        from raegan_jax.evaluate import eval_table, evaluate_run
        from raegan_jax.seeds import run_dirs
        failed = 0
        for run in [r for w in args.workdir for r in run_dirs(w)]:
            try:
                ev = evaluate_run(run, args.passes, args.data_dir, split=args.split,
                                  realism=not args.no_judge,
                                  log=lambda msg: print(msg, file=sys.stderr))
            except (ConfigError, DataError, CheckpointError) as e:
                print(f"raegan: error: {e}", file=sys.stderr)
                failed += 1
                continue
            print(eval_table(ev))
            print(json.dumps({k: ev[k] for k in ("run", "passes", "split", "recon_loss", "psnr",
                                                 "judge_auc") if k in ev}))
        return 2 if failed else 0
    if (args.coordinator_address is None) != (args.num_processes is None) or (
            args.coordinator_address is None) != (args.process_id is None):
        parser.error("--coordinator-address, --num-processes and --process-id go together")
    from raegan_jax.parallel import initialize_distributed
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    from raegan_jax.train import Preempted, TrainingDiverged, WorkdirError, train_and_evaluate
    try:
        if args.data_dir is not None and not os.path.isdir(args.data_dir):
            raise DataError(f"--data-dir {args.data_dir} is not a directory")
        cfg = get_preset(args.preset, _parse_sets(args.sets), as_written=args.as_written)
        train_and_evaluate(cfg, args.workdir, data_dir=args.data_dir, progress=not args.no_progress)
    except (ConfigError, DataError, CheckpointError, WorkdirError, TrainingDiverged) as e:
        print(f"raegan: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"raegan: {e}", file=sys.stderr)
        return 128 + int(e.signum)
    except KeyboardInterrupt:
        print("raegan: interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
