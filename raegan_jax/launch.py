"""Runs many ``raegan train`` commands a few at a time: the experiments' one orchestrator.

``experiments/run_report.py`` (the report's six presets, AE stages shared) and
``experiments/sweep.py`` (a study's runs over seeds) both describe their runs as
:class:`Job` values and hand them to :func:`run_jobs`: ``workers`` threads each take the
first job, in the order given, that may start now (its :attr:`Job.ready` says so, e.g.
once the run it starts from has trained far enough), run it as a subprocess with its
output in :attr:`Job.log`, and take the next. SIGINT/SIGTERM to the orchestrator are
passed on to the running commands (each saves a checkpoint and stops; the same command
later resumes them) and no further job starts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

# ``raegan …`` runs as this interpreter's CLI: right even where the venv is not activated
# (its scripts folder not on PATH, e.g. ``PYTHON=/path/to/venv/bin/python``). The environment
# variable RAEGAN (a command, e.g. a wrapper script) replaces it.
RAEGAN = shlex.split(os.environ.get("RAEGAN", "")) or [sys.executable, "-m", "raegan_jax"]


def resolve(cmd: list[str]) -> list[str]:
    """``cmd`` with a leading ``raegan`` replaced by :data:`RAEGAN`."""
    return RAEGAN + cmd[1:] if cmd[:1] == ["raegan"] else cmd


# What a command is wrapped in on worker i (e.g. ``taskset -c …`` to pin it to CPUs).
Wrap = Callable[[int, list[str]], list[str]]


@dataclasses.dataclass
class Job:
    """One command to run.

    Attributes:
      name: how the job is named in the output and in :func:`run_jobs`'s result.
      command: builds the command when the job starts (it may read another run's
        records then); a ``FileNotFoundError`` it raises fails the job with its message.
      log: the file the command's output is appended to.
      ready: whether the job may start, given the names of the jobs ended so far.
    """

    name: str
    command: Callable[[], list[str]]
    log: pathlib.Path
    ready: Callable[[set[str]], bool] = lambda ended: True


@dataclasses.dataclass
class Outcome:
    """What became of the jobs: those that failed (non-zero exit or no command), and
    those never started (stopped by a signal first)."""

    failed: list[str]
    not_run: list[str]


def run_jobs(jobs: list[Job], workers: int, *, poll_s: float = 2.0, wrap: Wrap | None = None,
             on_start: Callable[[Job, list[str]], None] = lambda job, cmd: None,
             on_end: Callable[[Job, int | str, float], None] = lambda job, rc, seconds: None
             ) -> Outcome:
    """Runs ``jobs``, ``workers`` at a time, each as soon as it is ready, in the order given.

    Args:
      jobs: the jobs, in the order workers prefer them.
      workers: how many commands run at once.
      poll_s: how often a worker with no ready job looks again (seconds).
      wrap: wraps worker i's commands (e.g. CPU pinning).
      on_start: called with each job and its command as it starts.
      on_end: called with each job, its exit code (or the message of the error that kept
        it from starting: a ``FileNotFoundError`` of its ``command``, a command that
        cannot be run) and its wall seconds.

    Returns:
      The :class:`Outcome`.
    """
    todo, ended, failed = list(jobs), set(), []
    procs: dict[str, subprocess.Popen] = {}
    lock, stopping = threading.Lock(), threading.Event()

    def take() -> Job | None:
        while not stopping.is_set():
            with lock:
                if not todo:
                    return None
                for job in todo:
                    if job.ready(ended):
                        todo.remove(job)
                        return job
            time.sleep(poll_s)
        return None

    def worker(i: int) -> None:
        while (job := take()) is not None:
            t = time.time()
            try:
                cmd = job.command()
            except FileNotFoundError as e:  # e.g. a branch whose source did not get there
                rc: int | str = str(e)
            else:
                wrapped = functools.partial(wrap, i) if wrap else (lambda c: c)
                on_start(job, wrapped(cmd))
                cmd = wrapped(resolve(cmd))
                try:
                    with open(job.log, "a") as log, lock:
                        # Its own session: a terminal's Ctrl-C reaches it once, through forward().
                        procs[job.name] = subprocess.Popen(
                            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                except OSError as e:  # the command or the log cannot be opened: this job fails
                    rc = f"cannot start {cmd[0]}: {e}"
                else:
                    rc = procs[job.name].wait()
            with lock:
                ended.add(job.name)
                if rc:
                    failed.append(job.name)
            on_end(job, rc, time.time() - t)

    def forward(signum, frame):  # the runs checkpoint mid-epoch and stop; rerun resumes
        stopping.set()
        with lock:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return Outcome(failed, [job.name for job in jobs if job.name not in ended])
