"""Nothing lost: preemption, the workdir lock, several processes (issue: beyond one process)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import raegan_jax as rj
from raegan_jax.checkpoint import Checkpointer
from raegan_jax.train import train_and_evaluate
from raegan_jax.workdir import WorkdirError, WorkdirLock, read_history, read_records
from conftest import REPO, TINY, xla_flags
from test_train import cfg_for, final_state, read_metrics, strip_timing


def assert_same_states(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if tol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_mid_sweep_saves_and_the_rerun_ends_exactly(tmp_path, tiny_mnist, monkeypatch):
    """SIGTERM in the middle of the phases' D sweep: the step in flight finishes, a checkpoint
    is saved at that step, and the rerun ends with the parameters and per-sweep metrics of an
    uninterrupted run."""
    cfg = cfg_for("mnist_aegan", **{"gan.stage_policy": "phases", "train.epochs": 2})
    train_and_evaluate(cfg, tmp_path / "ref", data_dir=str(tiny_mnist), progress=False)

    import raegan_jax.train as tr
    real_add, calls = tr._add_sums, []

    def add_sums_then_signal(a, b):
        calls.append(1)
        # 4 steps per sweep, one per dispatch: calls 1-3 end the recon sweep's steps 2-4,
        # call 5 follows the D sweep's 3rd step; its 4th is the one the signal prevents.
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_add(a, b)

    monkeypatch.setattr(tr, "_add_sums", add_sums_then_signal)
    with pytest.raises(rj.Preempted, match=r"stopped by SIGTERM at step 7 \(epoch 1\)") as e:
        train_and_evaluate(cfg, tmp_path / "p", data_dir=str(tiny_mnist), progress=False)
    assert e.value.signum == signal.SIGTERM
    assert e.value.checkpoint == (tmp_path / "p" / "checkpoints" / "7").resolve()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    assert not (tmp_path / "p" / "metrics.jsonl").exists()  # no epoch was completed
    monkeypatch.setattr(tr, "_add_sums", real_add)

    summary = train_and_evaluate(cfg, tmp_path / "p", data_dir=str(tiny_mnist), progress=False)
    assert summary["steps"] == 24
    assert_same_states(final_state(cfg, tmp_path / "ref"), final_state(cfg, tmp_path / "p"))
    ref, resumed = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "p")
    assert strip_timing(ref) == strip_timing(resumed)
    assert ref[0]["train/d_sweep/steps"] == 4  # the interrupted sweep is counted whole


def raegan_cmd(workdir, *sets, preset="mnist_ae", data=None):
    sets = [f"--set={k}={v}" for k, v in {**TINY, **dict(s.split("=", 1) for s in sets)}.items()]
    return [sys.executable, "-m", "raegan_jax.cli", "train", "--preset", preset, "--workdir",
            str(workdir), "--no-progress", *(["--data-dir", str(data)] if data else []), *sets]


def wait_for_checkpoint(workdir: pathlib.Path, proc, timeout=300):
    ck = workdir / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ck.exists() and any(p.name.isdigit() for p in ck.iterdir()):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared (exit {proc.poll()})")


def test_a_second_run_is_refused_and_sigterm_stops_the_first_cleanly(tmp_path, tiny_mnist):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    w = tmp_path / "w"
    proc = subprocess.Popen(raegan_cmd(w, "train.epochs=100000", data=tiny_mnist), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(w, proc)
        metrics_before = (w / "metrics.jsonl").read_text()
        cfg = rj.get_preset("mnist_ae", {**TINY, "train.epochs": 100000})
        with pytest.raises(WorkdirError, match=f"workdir {w} is in use by another run "
                                               f"\\(PID {proc.pid}\\)"):
            train_and_evaluate(cfg, w, data_dir=str(tiny_mnist), progress=False)
        # The refused run wrote nothing: the holder's log only grew by its own epochs.
        assert (w / "metrics.jsonl").read_text().startswith(metrics_before)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("raegan: stopped by SIGTERM at step ") and "rerun the same command" in last
    assert "Traceback" not in err and "Event loop is closed" not in err
    step = int(last.split("at step ")[1].split()[0])
    ckpt = Checkpointer(w / "checkpoints", create=False)
    assert ckpt.latest_step() == step
    epoch = ckpt.read_meta(step)["epoch"]
    ckpt.close()
    # The lock of the stopped run is gone; the rerun resumes at that step.
    res = subprocess.run(raegan_cmd(w, f"train.epochs={epoch + 1}", data=tiny_mnist), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"step {step})" in res.stdout and "resuming from checkpoint" in res.stdout
    assert [r["epoch"] for r in read_metrics(w)] == list(range(1, epoch + 2))


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    lock = WorkdirLock(tmp_path)
    with pytest.raises(WorkdirError, match=f"PID {os.getpid()}"):
        WorkdirLock(tmp_path)
    WorkdirLock(tmp_path, process_index=1).release()  # another process's lock file
    lock.release()
    WorkdirLock(tmp_path).release()
    # A holder killed with -9 leaves the file but not the lock.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from raegan_jax.workdir import WorkdirLock;"
                               "l = WorkdirLock(sys.argv[2]); print('held', flush=True); time.sleep(600)",
                               str(REPO), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"PID {holder.pid}"):
        WorkdirLock(tmp_path)
    holder.kill()
    holder.wait()
    WorkdirLock(tmp_path).release()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(workdir, n, sets, data, kill_after_checkpoint=False):
    """``raegan train`` as ``n`` processes of one JAX system on localhost (1 CPU device each)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": xla_flags(1)}
    port = free_port()
    procs = [subprocess.Popen(raegan_cmd(workdir, *sets, preset="mnist_aegan", data=data)
                              + ["--coordinator-address", f"127.0.0.1:{port}",
                                 "--num-processes", str(n), "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        if kill_after_checkpoint:
            wait_for_checkpoint(workdir, procs[0])
            for p in procs:
                p.send_signal(signal.SIGKILL)
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return procs, outs


def test_records_being_written_are_read_up_to_the_last_complete_line(tmp_path):
    """A run reading a source that still trains (train.ae_stage_from) may meet a record half
    written, as may a rerun after a kill mid-write: only complete lines count, and the
    resumed run drops the partial one before it appends."""
    lines = [json.dumps({"epoch": e, "steps": 3}) for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + lines[2][:9].replace("3", "4"))
    assert [r["epoch"] for r in read_records(tmp_path)] == [1, 2, 3]
    assert [r["epoch"] for r in read_history(tmp_path, 2, rewrite=False)] == [1, 2]
    assert [r["epoch"] for r in read_history(tmp_path, 3, rewrite=True)] == [1, 2, 3]
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines) + "\n"
    assert read_records(tmp_path / "nothing_here") == []


def test_two_processes_train_what_one_process_trains_and_resume_after_kill(tmp_path, tiny_mnist):
    """Two processes (one device each, each feeding its own half of every batch), both killed
    (-9) after a checkpoint and restarted, end where one uninterrupted process ends with the
    same global batch: the same parameters and per-epoch metrics (float tolerance: the two
    processes sum their halves' gradients in another order)."""
    sets = ["train.epochs=5"]
    k = tmp_path / "killed"
    procs, _ = run_processes(k, 2, sets, tiny_mnist, kill_after_checkpoint=True)
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    assert str(5 * 4) not in [p.name for p in (k / "checkpoints").iterdir()], "finished before the kill"
    procs, outs = run_processes(k, 2, sets, tiny_mnist)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "resuming from checkpoint" in outs[0][0]
    assert "summary:" in outs[0][0] and "epoch 5/5" in outs[0][0]
    assert "epoch" not in outs[1][0] and "summary" not in outs[1][0]  # process 0 alone logs
    summary = json.loads((k / "summary.json").read_text())
    assert summary["device"].startswith("2 x")
    # The same global batch in this process, on its one device, never interrupted.
    cfg = rj.get_preset("mnist_aegan", {**TINY, "train.epochs": 5})
    train_and_evaluate(cfg, tmp_path / "one", data_dir=str(tiny_mnist), progress=False)
    assert_same_states(final_state(cfg, tmp_path / "one"), final_state(cfg, k), rtol=1e-5, atol=1e-5)
    m_two, m_one = strip_timing(read_metrics(k)), strip_timing(read_metrics(tmp_path / "one"))
    assert [r["epoch"] for r in m_two] == [1, 2, 3, 4, 5]
    assert [sorted(r) for r in m_two] == [sorted(r) for r in m_one]
    for r2, r1 in zip(m_two, m_one):
        for key in r1:
            np.testing.assert_allclose(np.asarray(r2[key], float), np.asarray(r1[key], float),
                                       rtol=1e-5, atol=1e-5, err_msg=key)


def test_a_lone_process_stays_alone():
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")}
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from raegan_jax.parallel import initialize_distributed;"
            "print(initialize_distributed()); import jax; print(jax.process_count())")
    res = subprocess.run([sys.executable, "-c", code, str(REPO)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.split() == ["False", "1"], res.stderr[-2000:]


FAILED_WRITE = r"""
import json, pathlib, resource, signal, sys
import jax, jax.numpy as jnp, numpy as np
from raegan_jax.checkpoint import Checkpointer, CheckpointWriteError
root = pathlib.Path(sys.argv[1])
state = {"w": jnp.arange(200_000, dtype=jnp.float32), "b": jnp.ones(3)}
ckpt = Checkpointer(root)
ckpt.save(1, state, {"epoch": 1})
# Every file this process writes from now on stops at 64 KiB (EFBIG, as a full disk stops
# it): checkpoint 2's arrays cannot be written.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))
try:
    ckpt.save(2, jax.tree.map(lambda x: x + 1, state), {"epoch": 2})
except CheckpointWriteError as e:
    print("ERROR", e)
print("LEFT", sorted(p.name for p in root.iterdir()))
print("LATEST", ckpt.latest_step())
back = ckpt.restore(ckpt.latest_step(), state)
print("RESTORED", bool(np.array_equal(back["w"], state["w"])))
"""


def test_a_failed_checkpoint_write_is_one_line_and_loses_nothing(tmp_path):
    """A checkpoint whose write fails partway (a full disk; here a file-size limit) ends in
    one line naming it, the newest intact checkpoint and that the same command resumes from
    it; its half-written files are gone and the newest intact one still restores. None of
    Orbax's ~100 tracebacks of the failed writes reaches the terminal."""
    proc = subprocess.run([sys.executable, "-c", FAILED_WRITE, str(tmp_path / "ckpt")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu",
                               "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(l.split(" ", 1) for l in proc.stdout.splitlines())
    assert out["ERROR"].startswith(f"could not write checkpoint {tmp_path / 'ckpt' / '2'}: ")
    assert (f"the newest intact checkpoint is {tmp_path / 'ckpt' / '1'}; free space and rerun "
            f"the same command to resume from it") in out["ERROR"]
    assert out["LEFT"] == "['1']"  # no "2", no "2.orbax-checkpoint-tmp…"
    assert out["LATEST"] == "1" and out["RESTORED"] == "True"
    assert "Traceback" not in proc.stderr and "never retrieved" not in proc.stderr, proc.stderr
