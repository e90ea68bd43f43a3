"""Train-step throughput benchmarks (``raegan bench``; also ``benchmarks/run.py``).

What is timed is the jitted train step of a family on random images of the
dataset's shape: compile time (ahead-of-time lower + compile) apart from the
steady state; each repeat is one step ended by ``block_until_ready``; numbers
are medians over repeats. GAN families get one row per stage: ``recon`` (the
AE learns reconstruction only), ``ae`` (the AE learns against a frozen D) and
``d`` (D learns against a frozen AE), since a training run mixes them and
their costs differ; each stage is timed twice, as the program specialised to
it (``jax``: what a ``phases`` or pretraining sweep runs) and as the one
program whose on-device flag picks the stage (``jax one-program``: what
``threshold`` and ``alternate`` run). With ``--torch`` the PyTorch implementation in
``benchmarks/torch_impl.py`` runs the same model and step on the same batch,
its repeats interleaved with JAX's in one process, and the ratio is printed.
``--seeds N`` times N seeds in one program against one; ``--report`` and ``--loop``
(:mod:`raegan_jax.bench_runs`) measure what whole runs cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from raegan_jax import seeds as seeds_lib
from raegan_jax.config import Config
from raegan_jax.configs import PRESETS, get_preset
from raegan_jax.parallel import replicated
from raegan_jax.programs import make_eval_step, make_multi_step, make_train_step, sweep_batches
from raegan_jax.stages import STAGE_AE, STAGE_NAMES
from raegan_jax.state import create_train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
# The benchmarks step one batch over and over; the cycle schedule needs a sweep
# length, and which pass a row trains on does not change the cost.
BENCH_STEPS_PER_EPOCH = 64


def bench_config(dataset: str, family: str, passes: int, batch_size: int,
                 overrides: dict | None = None) -> Config:
    """The config a benchmark row times: the dataset's preset with this family."""
    base = {"mnist": {"ae": "mnist_ae", "rae": "mnist_ae", "aegan": "mnist_aegan", "raegan": "mnist_aegan"},
            "cifar10": {"ae": "cifar10_ae", "rae": "cifar10_rae", "aegan": "cifar10_aegan",
                        "raegan": "cifar10_raegan"}}[dataset][family]
    over = {"model.family": family, "model.passes": passes, "train.batch_size": batch_size,
            "data.train_examples": 0, "data.resample_train": False,
            "gan.stage_policy": "phases"}  # phases: the stage stays put
    over.update(overrides or {})
    return get_preset(base, over)


def _images(cfg: Config, batch: int, seed: int = 0) -> np.ndarray:
    shape = (28, 28, 1) if cfg.data.dataset == "mnist" else (32, 32, 3)
    return np.random.default_rng(seed).uniform(0, 1, (batch, *shape)).astype(np.float32)


STAGES = {name: stage for stage, name in STAGE_NAMES.items()}


class JaxRunner:
    """One jitted train step, compiled ahead of time, stepping its own state in one stage.

    Args:
      cfg: the benchmark's config.
      stage: "ae", "d" or "recon" (GAN families), "-" otherwise.
      one_program: time the one program whose on-device flag picks the stage,
        instead of the program specialised to ``stage``.
    """

    def __init__(self, cfg: Config, stage: str = "ae", one_program: bool = False):
        self.cfg = cfg
        fixed = STAGES.get(stage) if cfg.is_gan and not one_program else None
        step = make_train_step(cfg, steps_per_epoch=BENCH_STEPS_PER_EPOCH, stage=fixed)
        state = create_train_state(cfg, jax.random.key(0)).replace(
            stage=jnp.int32(STAGES.get(stage, STAGE_AE)))
        self.state = jax.device_put(state, replicated(step.mesh))
        self.x = jax.device_put(_images(cfg, cfg.train.batch_size),
                                jax.sharding.NamedSharding(step.mesh, jax.sharding.PartitionSpec("data")))
        t = time.perf_counter()
        self.compiled = step.jitted.lower(self.state, self.x).compile()
        self.compile_s = time.perf_counter() - t
        mem = self.compiled.memory_analysis()
        self.xla_bytes = None if mem is None else int(
            mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes)

    def once(self) -> float:
        t = time.perf_counter()
        self.state, m = self.compiled(self.state, self.x)
        jax.block_until_ready((self.state, m))
        return time.perf_counter() - t


class TorchRunner:
    """The PyTorch eager (or torch.compile) step on the same batch."""

    def __init__(self, cfg: Config, compile: bool = False, stage: str = "ae"):
        sys.path.insert(0, str(REPO / "benchmarks"))
        import torch
        from torch_impl import TorchTrainer  # noqa: E402  (benchmarks/, not installed)
        self.torch = torch
        # The same kind of device as JAX's: a GPU run compares GPU with GPU.
        self.device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
        self.trainer = TorchTrainer(cfg.data.dataset, cfg.model.family, cfg.model.passes,
                                    cfg.train.recon_loss, cfg.train.rae_objective, cfg.gan.adv_weight,
                                    cfg.train.ae_lr, cfg.train.d_lr,
                                    steps_per_epoch=BENCH_STEPS_PER_EPOCH, compile=compile,
                                    device=self.device)
        self.x = torch.from_numpy(_images(cfg, cfg.train.batch_size).transpose(0, 3, 1, 2).copy()
                                  ).to(self.device)
        self.step = {"d": self.trainer.d_step, "recon": self.trainer.recon_step}.get(
            stage, self.trainer.ae_step)
        t = time.perf_counter()
        self.once()  # first call (torch.compile compiles here)
        self.compile_s = time.perf_counter() - t

    def once(self) -> float:
        t = time.perf_counter()
        self.step(self.x)
        if self.device == "cuda":  # CUDA runs asynchronously: wait for the step's kernels
            self.torch.cuda.synchronize()
        return time.perf_counter() - t


def interleaved(runners: dict[str, object], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Times the runners' steps in turn (A, B, A, B, ...) so they share machine conditions."""
    for _ in range(warmup):
        for r in runners.values():
            r.once()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, r in runners.items():
            times[k].append(r.once())
    return times


def result_row(kind: str, cfg: Config, times: list[float], compile_s: float, extra: dict | None = None,
         stage: str = "") -> dict:
    med = statistics.median(times)
    q = np.percentile(times, [25, 75])
    return {"impl": kind, "dataset": cfg.data.dataset, "family": cfg.model.family,
            "stage": stage or ("ae" if cfg.model.family in ("aegan", "raegan") else "-"),
            "passes": cfg.model.passes, "batch": cfg.train.batch_size,
            "ms_per_step": 1e3 * med, "ms_p25": 1e3 * q[0], "ms_p75": 1e3 * q[1],
            "images_per_sec": cfg.train.batch_size / med, "compile_s": compile_s,
            "repeats": len(times), **(extra or {})}


def bench_steps(datasets, families, batches, passes_list, repeats, warmup, torch_modes=(),
                overrides=None, log: Callable[[str], None] = print) -> list[dict]:
    """Times every (dataset, family, batch, passes) combination; see module docstring."""
    rows = []
    for dataset in datasets:
        for family in families:
            for batch in batches:
                # the single-pass families run once, at passes=1
                for passes, stage in [(p, s) for p in (passes_list if family in ("rae", "raegan") else [1])
                                      for s in (("recon", "d", "ae") if family in ("aegan", "raegan")
                                                else ("-",))]:
                    cfg = bench_config(dataset, family, passes, batch, overrides)
                    runners: dict[str, object] = {"jax": JaxRunner(cfg, stage)}
                    if cfg.is_gan:
                        runners["jax one-program"] = JaxRunner(cfg, stage, one_program=True)
                    for mode in torch_modes:
                        runners[mode] = TorchRunner(cfg, compile=mode == "torch.compile", stage=stage)
                    times = interleaved(runners, repeats, warmup)
                    jr = result_row("jax", cfg, times["jax"], runners["jax"].compile_s,
                              {"xla_memory_bytes": runners["jax"].xla_bytes}, stage)
                    rows.append(jr)
                    msg = (f"{dataset:8s} {family:7s} {stage:5s} B={batch:<5d} passes={passes} "
                           f"jax {jr['ms_per_step']:8.1f} ms ({jr['images_per_sec']:8.0f} img/s, "
                           f"compile {jr['compile_s']:.1f}s)")
                    if "jax one-program" in runners:
                        r1 = runners["jax one-program"]
                        o = result_row("jax one-program", cfg, times["jax one-program"], r1.compile_s,
                                 {"xla_memory_bytes": r1.xla_bytes}, stage)
                        o["jax_speedup"] = o["ms_per_step"] / jr["ms_per_step"]
                        rows.append(o)
                        msg += f" | one-program {o['ms_per_step']:8.1f} ms"
                    for mode in torch_modes:
                        tr = result_row(mode, cfg, times[mode], runners[mode].compile_s, stage=stage)
                        tr["jax_speedup"] = tr["ms_per_step"] / jr["ms_per_step"]
                        rows.append(tr)
                        msg += f" | {mode} {tr['ms_per_step']:8.1f} ms -> jax x{tr['jax_speedup']:.2f}"
                    log(msg)
    return rows


def bench_multi_step(dataset: str, family: str, passes: int, batch: int, n: int, repeats: int,
                     overrides=None, log: Callable[[str], None] = print) -> list[dict]:
    """One step per call (host-fed and device-fed) vs ``n`` steps in one ``lax.scan`` call."""
    cfg = bench_config(dataset, family, passes, batch, overrides)
    data = (np.random.default_rng(0).uniform(0, 255, (n * batch, *_images(cfg, 1).shape[1:]))
            ).astype(np.uint8)
    spe = n
    rows = []
    for label, k in (("device-fed, 1 step/call", 1), (f"device-fed, {n} steps/call", n)):
        fn = make_multi_step(cfg, k, steps_per_epoch=spe)
        batches = sweep_batches(data, np.arange(n * batch), spe, batch, fn.mesh)
        state = create_train_state(cfg, jax.random.key(0))
        t = time.perf_counter()
        state, s = fn(state, batches)
        jax.block_until_ready(s)
        compile_s = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(n // k):
                state, s = fn(state, batches)
            jax.block_until_ready((state, s))
            times.append((time.perf_counter() - t) / n)
        rows.append(result_row(label, cfg, times, compile_s))
    step = make_train_step(cfg, steps_per_epoch=spe)
    state = create_train_state(cfg, jax.random.key(0))
    batches = [data[i * batch:(i + 1) * batch] for i in range(n)]
    state, m = step(state, batches[0])
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for xb in batches:
            state, m = step(state, xb)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t) / n)
    rows.insert(0, result_row("host-fed, 1 step/call", cfg, times, 0.0))
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["speedup_vs_host_fed"] = base / r["ms_per_step"]
        log(f"{dataset} {family} B={batch} {r['impl']:28s} {r['ms_per_step']:8.2f} ms/step "
            f"x{r['speedup_vs_host_fed']:.2f}")
    return rows


class SweepRunner:
    """The loop's program (:func:`make_multi_step`, one step a call) for ``cfg``, a many-seed
    ``cfg`` included: each :meth:`once` is one step of every seed, on device-resident batches."""

    def __init__(self, cfg: Config, steps: int = 8, stage: int | None = None):
        self.seeds = len(cfg.train.seeds) or 1
        fn = make_multi_step(cfg, 1, steps_per_epoch=steps, stage=stage)
        shape = _images(cfg, 1).shape[1:]
        data = np.random.default_rng(0).integers(0, 256, (steps * cfg.train.batch_size, *shape),
                                                 dtype=np.uint8)
        order = np.arange(len(data))
        self.batches = sweep_batches(data, np.stack([order] * self.seeds) if cfg.train.seeds
                                     else order, steps, cfg.train.batch_size, fn.mesh)
        self.state = seeds_lib.initial_state(cfg, create_train_state)
        self.fn = fn
        self.compile_s = fn.compile(self.state, self.batches)

    def once(self) -> float:
        t = time.perf_counter()
        self.state, m = self.fn(self.state, self.batches)
        jax.block_until_ready((self.state, m))
        return time.perf_counter() - t


def bench_seeds(datasets, families, batch: int, passes: int, n_seeds: int, repeats: int,
                warmup: int, overrides=None, impls=("unroll", "vmap"),
                log: Callable[[str], None] = print) -> list[dict]:
    """Images a second, summed over the seeds, of ``n_seeds`` seeds in one program (each of
    ``impls``) against one seed's program (what ``n_seeds`` single runs one after another
    reach), the loop's own program, their steps interleaved. GAN families play
    ``alternate`` (a D and an AE update every step)."""
    rows = []
    for dataset in datasets:
        for family in families:
            over = {**({"gan.stage_policy": "alternate"} if family in ("aegan", "raegan") else {}),
                    **(overrides or {})}
            cfg = bench_config(dataset, family, passes if family in ("rae", "raegan") else 1, batch, over)
            runners = {"1 seed": SweepRunner(cfg)}
            for impl in impls:
                many = dataclasses.replace(cfg, train=dataclasses.replace(
                    cfg.train, seeds=tuple(range(n_seeds)), seeds_impl=impl))
                runners[f"{n_seeds} seeds, {impl}"] = SweepRunner(many)
            times = interleaved(runners, repeats, warmup)
            base = None
            msg = f"{dataset:8s} {family:7s} B={batch}"
            for name, r in runners.items():
                row = result_row(name, cfg, times[name], r.compile_s, {"seeds": r.seeds})
                row["images_per_sec"] *= r.seeds  # summed over the seeds
                base = base or row["images_per_sec"]
                row["speedup_vs_one_seed"] = row["images_per_sec"] / base
                rows.append(row)
                msg += f" | {name} {row['images_per_sec']:7.0f} img/s x{row['speedup_vs_one_seed']:.2f}"
            log(msg)
    return rows


def bench_adaptive(datasets, families, batch: int, passes: int, repeats: int, warmup: int,
                   overrides=None, log: Callable[[str], None] = print) -> list[dict]:
    """The AE-stage step with a fixed adversarial weight vs the adaptive λ (shared, per pass),
    interleaved: what measuring λ at the decoder's last layer costs."""
    rows = []
    for dataset in datasets:
        for family in [f for f in families if f in ("aegan", "raegan")]:
            p = passes if family == "raegan" else 1
            modes = {"fixed": {}, "adaptive shared": {"gan.adv_weight_mode": "adaptive",
                                                      "gan.adaptive_scope": "shared"}}
            if p > 1:
                modes["adaptive per_pass"] = {"gan.adv_weight_mode": "adaptive",
                                              "gan.adaptive_scope": "per_pass"}
            cfgs = {k: bench_config(dataset, family, p, batch, {**(overrides or {}), **v})
                    for k, v in modes.items()}
            runners = {k: JaxRunner(c, "ae") for k, c in cfgs.items()}
            times = interleaved(runners, repeats, warmup)
            base = statistics.median(times["fixed"])
            for k, r in runners.items():
                row = result_row(f"jax {k}", cfgs[k], times[k], r.compile_s, stage="ae")
                row["cost_vs_fixed"] = row["ms_per_step"] / (1e3 * base)
                rows.append(row)
                log(f"{dataset:8s} {family:7s} ae B={batch} passes={p} {k:18s} "
                    f"{row['ms_per_step']:8.1f} ms  x{row['cost_vs_fixed']:.2f} of fixed")
    return rows


class EvalRunner:
    """The jitted eval step on one test batch (a run evaluates every epoch)."""

    def __init__(self, cfg: Config):
        self.state = create_train_state(cfg, jax.random.key(0))
        self.x = _images(cfg, cfg.train.batch_size)
        self.w = np.ones(cfg.train.batch_size, np.float32)
        step = make_eval_step(cfg)
        t = time.perf_counter()
        jax.block_until_ready(step(self.state, self.x, self.w))
        self.compile_s = time.perf_counter() - t
        self.step = step

    def once(self) -> float:
        t = time.perf_counter()
        jax.block_until_ready(self.step(self.state, self.x, self.w))
        return time.perf_counter() - t


def environment() -> dict:
    """Device, library versions and machine: written next to every result."""
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
           "device_count": jax.device_count(), "jax": jax.__version__,
           "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
           "flax": _version("flax"), "optax": _version("optax"), "python": platform.python_version(),
           "cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def markdown(rows: list[dict], env: dict) -> str:
    """A markdown table of the rows, headed by the environment."""
    head = (f"{env['date']} · {env['device_count']} x {env['device_kind']} ({env['backend']}) · "
            f"jax {env['jax']} · flax {env['flax']}" + (f" · torch {env['torch']}" if "torch" in env else ""))
    cols = ["impl", "preset", "dataset", "family", "stage", "passes", "batch", "seeds", "calls",
            "ms_per_step", "images_per_sec", "step_images_per_sec", "loop_efficiency", "compile_s",
            "minutes", "jax_speedup", "speedup_vs_host_fed", "speedup_vs_one_seed", "cost_vs_fixed",
            "xla_memory_bytes"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.0f}" if c.endswith("images_per_sec") else f"{v:.2f}"
            if c == "xla_memory_bytes" and isinstance(v, int):
                v = f"{v / 2**20:.1f} MiB"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``raegan bench``: see ``raegan bench --help``."""
    p = argparse.ArgumentParser(prog="raegan bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--families", default="ae,rae,aegan,raegan")
    p.add_argument("--batch-sizes", default="128", help="comma list, e.g. 32,128,512,1024")
    p.add_argument("--passes", default="3", help="comma list for the recursive families, e.g. 1,2,4,8")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--torch", action="store_true", help="interleave the PyTorch eager step")
    p.add_argument("--torch-compile", action="store_true", help="also torch.compile")
    p.add_argument("--multi-step", type=int, default=0, metavar="N",
                   help="also time N steps per dispatch vs one (first dataset/family/batch)")
    p.add_argument("--seeds", type=int, default=0, metavar="N",
                   help="only time N seeds in one program (unrolled and vmapped) against one seed's "
                        "(images/s summed over the seeds; first batch size and passes)")
    p.add_argument("--loop", nargs="?", const=",".join(PRESETS), default=None, metavar="PRESETS",
                   help="only the loop's images/s in a short real run of each preset (default: "
                        "all) against its programs' alone")
    p.add_argument("--loop-epochs", type=int, default=3)
    p.add_argument("--adaptive", action="store_true",
                   help="only time the AE step with the fixed vs the adaptive adversarial weight")
    p.add_argument("--report", nargs="?", const=",".join(PRESETS), default=None, metavar="PRESETS",
                   help="estimate each preset's whole run on this machine (default: all presets): "
                        "its programs timed, times the calls its schedule makes")
    p.add_argument("--no-chain", dest="chain", action="store_false",
                   help="--report: cost every preset's AE stage itself, as a run alone trains it "
                        "(default: as experiments/run_report.sh chains them)")
    p.add_argument("--set", dest="sets", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="", help="write NAME.json and NAME.md (default: print only)")
    args = p.parse_args(argv)
    from raegan_jax.bench_runs import bench_loop, bench_report
    overrides = dict(s.split("=", 1) for s in args.sets)
    split = lambda s: [v for v in s.split(",") if v]
    torch_modes = (["torch"] if args.torch else []) + (["torch.compile"] if args.torch_compile else [])
    env = environment()
    print(json.dumps(env))
    if args.report is not None:
        unknown = [n for n in split(args.report) if n not in PRESETS]
        if unknown:
            p.error(f"--report: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
        rows = bench_report(split(args.report), args.repeats, args.warmup, overrides,
                            chained=args.chain)
    elif args.loop is not None:
        rows = bench_loop(split(args.loop), args.loop_epochs, args.repeats, args.warmup, overrides)
    elif args.seeds:
        rows = bench_seeds(split(args.datasets), split(args.families), int(split(args.batch_sizes)[0]),
                           int(split(args.passes)[0]), args.seeds, args.repeats, args.warmup, overrides)
    elif args.adaptive:
        rows = bench_adaptive(split(args.datasets), split(args.families), int(split(args.batch_sizes)[0]),
                              int(split(args.passes)[0]), args.repeats, args.warmup, overrides)
    else:
        rows = bench_steps(split(args.datasets), split(args.families),
                           [int(b) for b in split(args.batch_sizes)],
                           [int(v) for v in split(args.passes)], args.repeats, args.warmup,
                           torch_modes, overrides)
    if args.multi_step:
        fam = split(args.families)[0]
        rows += bench_multi_step(split(args.datasets)[0], fam, int(split(args.passes)[0]) if fam in ("rae", "raegan") else 1,
                                 int(split(args.batch_sizes)[0]), args.multi_step, args.repeats, overrides)
    md = markdown(rows, env)
    print(md)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({"environment": env, "argv": argv or sys.argv[1:],
                                                        "rows": rows}, indent=2))
        out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
