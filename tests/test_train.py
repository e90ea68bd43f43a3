"""The training loop: artifacts, exact resume, bad workdirs and checkpoints, NaN."""

import json
import pathlib

import jax
import numpy as np
import optax
import pytest

import raegan_jax as rj
from raegan_jax.checkpoint import CheckpointError, Checkpointer
from raegan_jax.train import TrainingDiverged, WorkdirError, train_and_evaluate
from conftest import TINY


def cfg_for(preset="mnist_aegan", **extra):
    return rj.get_preset(preset, {**TINY, **extra})


def final_state(cfg, workdir):
    ckpt = Checkpointer(pathlib.Path(workdir) / "checkpoints")
    like = rj.create_train_state(cfg, jax.random.key(0))
    state = ckpt.restore(ckpt.latest_step(), like)
    ckpt.close()
    return state


def strip_timing(recs):
    drop = ("images_per_sec", "epoch_seconds", "compile_seconds")
    return [{k: v for k, v in r.items() if k not in drop} for r in recs]


def read_metrics(workdir):
    return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, tiny_mnist):
    """One epoch of the tiny plain AE (4 steps: checkpoint 4), trained once for the tests
    that read such a run; a test that changes it works on a copy (:func:`copy_run`)."""
    wd = tmp_path_factory.mktemp("ae_run") / "w"
    summary = train_and_evaluate(cfg_for("mnist_ae", **{"train.epochs": 1}), wd,
                                 data_dir=str(tiny_mnist), progress=False)
    return wd, summary


def copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    import shutil
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def test_run_leaves_everything_behind(tmp_path, tiny_mnist):
    cfg = cfg_for("mnist_aegan", **{"model.family": "raegan", "model.passes": 2, "train.epochs": 2})
    summary = train_and_evaluate(cfg, tmp_path / "w", data_dir=str(tiny_mnist), progress=False)
    w = tmp_path / "w"
    for name in ("config.json", "metrics.jsonl", "summary.json", "reconstructions.png",
                 "loss_curves.png", "d_accuracy.png"):
        assert (w / name).is_file(), name
    events = list((w / "tensorboard").glob("events.out.tfevents.*"))
    assert events and b"val/... is the validation split (32 images)" in events[0].read_bytes().replace(
        "…".encode(), b"...")  # TensorBoard says which split val/… is
    # The validation split is evaluated every epoch, the test split once, at the end.
    assert summary["val_split"] == "validation" and summary["test_recon_loss"] != summary["val_recon_loss"]
    # Checkpoints are named by the global step (4 steps per epoch here).
    assert sorted(int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8]
    recs = read_metrics(w)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert len(recs[0]["train/recon_loss"]) == 2 and len(recs[0]["val/d_fake_acc"]) == 2
    assert recs[0]["steps"] == 4 and recs[0]["ae_steps"] + recs[0]["d_steps"] == 4
    saved = json.loads((w / "summary.json").read_text())
    assert saved == summary
    for key in ("preset", "train_examples", "test_examples", "epochs", "val_recon_loss",
                "images_per_sec", "d_real_acc", "d_fake_acc"):
        assert key in saved
    assert (saved["train_examples"], saved["test_examples"], saved["epochs"]) == (128, 40, 2)
    assert len(saved["val_recon_loss"]) == 2 and len(saved["d_fake_acc"]) == 2
    assert len(recs[1]["val/d_fake_prob"]) == len(saved["d_fake_prob"]) == 2
    np.testing.assert_allclose(saved["last_3_epochs"]["d_fake_prob"],  # the mean of epochs 1-2
                               np.mean([r["val/d_fake_prob"] for r in recs], axis=0), rtol=1e-6)
    assert rj.config.from_dict(json.loads((w / "config.json").read_text())) == cfg


@pytest.mark.parametrize("extra", [{}, {"train.ae_ema": 0.9, "gan.d_ema": 0.9,
                                        "train.ae_stage_epochs": 1}],
                         ids=["plain", "weight_averages_after_an_ae_stage"])
def test_resume_continues_to_the_same_parameters(tmp_path, tiny_mnist, extra):
    straight = cfg_for(**{"train.epochs": 3, **extra})
    train_and_evaluate(straight, tmp_path / "a", data_dir=str(tiny_mnist), progress=False)
    # Same run in two goes: the first epoch(s), then "rerun with more epochs" (the second
    # go runs no AE stage: its program is never built).
    first = 1 + extra.get("train.ae_stage_epochs", 0)
    train_and_evaluate(cfg_for(**{"train.epochs": first, **extra}), tmp_path / "b",
                       data_dir=str(tiny_mnist), progress=False)
    train_and_evaluate(straight, tmp_path / "b", data_dir=str(tiny_mnist), progress=False)
    a, b = final_state(straight, tmp_path / "a"), final_state(straight, tmp_path / "b")
    assert (a.ae_ema is None) == (a.d_ema is None) == (not extra)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert strip_timing(read_metrics(tmp_path / "a")) == strip_timing(read_metrics(tmp_path / "b"))


def test_workdir_of_another_preset_is_refused(tmp_path, tiny_mnist, ae_run):
    copy_run(ae_run[0], tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(WorkdirError, match="preset 'mnist_ae'"):
        train_and_evaluate(cfg_for("mnist_aegan"), tmp_path, data_dir=str(tiny_mnist), progress=False)
    with pytest.raises(WorkdirError, match="train.batch_size"):
        train_and_evaluate(cfg_for("mnist_ae", **{"train.batch_size": 16}), tmp_path,
                           data_dir=str(tiny_mnist), progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes(tmp_path, tiny_mnist, capfd):
    """A damaged newest checkpoint (a data file scrambled, truncated or deleted) is named in
    one line, moved aside whole (never deleted), and the run resumes from the one before,
    ending where an uninterrupted run ends, with no traceback from Orbax's threads."""
    import shutil
    straight = cfg_for("mnist_ae", **{"train.epochs": 3})
    train_and_evaluate(straight, tmp_path / "ref", data_dir=str(tiny_mnist), progress=False)
    train_and_evaluate(cfg_for("mnist_ae", **{"train.epochs": 2}), tmp_path / "two",
                       data_dir=str(tiny_mnist), progress=False)
    ref_state, ref_metrics = final_state(straight, tmp_path / "ref"), read_metrics(tmp_path / "ref")
    for damage in ("scramble", "truncate", "delete"):
        w = tmp_path / damage
        shutil.copytree(tmp_path / "two", w)
        (w / ".lock").unlink()
        ck = w / "checkpoints" / "8"
        victim = max((p for p in ck.rglob("*") if p.is_file() and "/d/" in str(p)),
                     key=lambda p: p.stat().st_size)
        if damage == "scramble":
            victim.write_bytes(bytes(reversed(victim.read_bytes())))
        elif damage == "truncate":
            victim.write_bytes(victim.read_bytes()[:10])
        else:
            victim.unlink()
        before = {p.relative_to(ck): p.read_bytes() for p in ck.rglob("*") if p.is_file()}
        capfd.readouterr()
        train_and_evaluate(straight, w, data_dir=str(tiny_mnist), progress=False)
        out, err = capfd.readouterr()
        assert "Traceback" not in out + err and "Event loop is closed" not in out + err, damage
        notes = [l for l in out.splitlines() if "set aside" in l]
        assert len(notes) == 1 and str(ck) in notes[0], out
        assert "resuming from checkpoint" in out and str(w / "checkpoints" / "4") in out
        (aside,) = (w / "checkpoints_set_aside").iterdir()
        assert aside.name.startswith("8-")
        assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == before
        for x, y in zip(jax.tree.leaves(ref_state), jax.tree.leaves(final_state(straight, w))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert strip_timing(ref_metrics) == strip_timing(read_metrics(w)), damage


@pytest.mark.parametrize("fields", [("ctrl",), ("ae_ema", "d_ema")])
def test_a_checkpoint_from_before_a_later_field_resumes(tmp_path, tiny_mnist, fields):
    """Checkpoints written before TrainState.ctrl (or .ae_ema, .d_ema) existed have no such
    fields: they resume (the fields None) and end where an uninterrupted run ends, and
    nothing is set aside."""
    import dataclasses
    import shutil
    # A run without a weight average, as every run was when its field did not exist.
    old = {"train.ae_ema": 0.0}
    straight = cfg_for("mnist_ae", **{"train.epochs": 2, **old})
    train_and_evaluate(straight, tmp_path / "ref", data_dir=str(tiny_mnist), progress=False)
    w = tmp_path / "old"
    train_and_evaluate(cfg_for("mnist_ae", **{"train.epochs": 1, **old}), w, data_dir=str(tiny_mnist),
                       progress=False)
    # Rewrite its checkpoint as the older code wrote it: the state's fields but that one.
    ckpt = Checkpointer(w / "checkpoints")
    step = ckpt.latest_step()
    state, meta = final_state(straight, w), ckpt.read_meta(step)
    shutil.rmtree(ckpt.path(step))
    ckpt.close()
    ckpt = Checkpointer(w / "checkpoints")
    ckpt.save(step, {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                     if f.name not in fields}, meta)
    ckpt.close()
    train_and_evaluate(straight, w, data_dir=str(tiny_mnist), progress=False)
    assert not (w / "checkpoints_set_aside").exists()
    for x, y in zip(jax.tree.leaves(final_state(straight, tmp_path / "ref")),
                    jax.tree.leaves(final_state(straight, w))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert strip_timing(read_metrics(tmp_path / "ref")) == strip_timing(read_metrics(w))


def test_checkpoint_of_another_run_is_still_an_error(tmp_path, tiny_mnist, capfd, ae_run):
    """Another model's checkpoint is not damage: it is refused, and nothing is moved."""
    copy_run(ae_run[0], tmp_path / "a")
    train_and_evaluate(cfg_for("mnist_ae", **{"train.epochs": 1, "model.latent_dim": 7}),
                       tmp_path / "b", data_dir=str(tiny_mnist), progress=False)
    import shutil
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "4")
    shutil.copytree(tmp_path / "b" / "checkpoints" / "4", tmp_path / "a" / "checkpoints" / "4")
    with pytest.raises(CheckpointError, match=r"checkpoints/4 belongs to a run of other settings "
                                              r"\(model.latent_dim\)"):
        train_and_evaluate(cfg_for("mnist_ae", **{"train.epochs": 2}), tmp_path / "a",
                           data_dir=str(tiny_mnist), progress=False)
    assert (tmp_path / "a" / "checkpoints" / "4").is_dir()
    assert not (tmp_path / "a" / "checkpoints_set_aside").exists()
    out, err = capfd.readouterr()  # refused from its metadata: Orbax never read its arrays
    assert "Traceback" not in out + err and "Event loop is closed" not in out + err


def test_checkpoint_of_other_shapes_is_refused(ae_run, monkeypatch):
    ckpt = Checkpointer(ae_run[0] / "checkpoints")
    other = rj.create_train_state(cfg_for("mnist_ae", **{"model.latent_dim": 7}), jax.random.key(0))
    same = rj.create_train_state(cfg_for("mnist_ae"), jax.random.key(1))
    np.testing.assert_array_equal(ckpt.restore(4, same).step, 4)
    # Refused from the arrays' metadata, before Orbax reads any array (a read that fails
    # midway leaves coroutines behind, reported as warnings at garbage collection).
    monkeypatch.setattr(ckpt, "_restore_state", lambda *a: pytest.fail("read the arrays"))
    with pytest.raises(CheckpointError, match="checkpoints/4 holds other shapes"):
        ckpt.restore(4, other)
    ckpt.close()


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_mnist, ae_run):
    copy_run(ae_run[0], tmp_path)  # a good run's checkpoint beside the one that diverges
    # An absurd learning rate blows the loss up in the first epoch of a fresh run: no
    # checkpoint of a diverged state is written, and the good one stays.
    bad = cfg_for("mnist_ae", **{"train.epochs": 2, "train.ae_lr": 1e38})
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf at step \d+ \(epoch 1\)"):
        train_and_evaluate(bad, tmp_path / "bad", data_dir=str(tiny_mnist), progress=False)
    assert not list((tmp_path / "bad" / "checkpoints").iterdir())
    assert (tmp_path / "checkpoints" / "4").exists()


def test_phases_policy_runs_three_sweeps_per_epoch(tmp_path, tiny_mnist):
    cfg = cfg_for("mnist_aegan", **{"gan.stage_policy": "phases", "train.epochs": 1})
    train_and_evaluate(cfg, tmp_path, data_dir=str(tiny_mnist), progress=False)
    rec = read_metrics(tmp_path)[0]
    assert rec["steps"] == 12 and rec["ae_steps"] == 8 and rec["d_steps"] == 4


def test_ae_stage_then_game(tmp_path, tiny_mnist):
    """raegan with train.ae_stage_epochs=1: epoch 1 trains the plain one-pass AE (exactly
    what an `ae` run's first epoch trains; D untouched), epoch 2 plays the game with the
    recursive AE, its Adam moments fresh."""
    cfg = cfg_for("mnist_aegan", **{"model.family": "raegan", "model.passes": 2,
                                    "train.ae_stage_epochs": 1, "train.epochs": 2,
                                    "gan.stage_policy": "alternate"})
    train_and_evaluate(cfg, tmp_path / "raegan", data_dir=str(tiny_mnist), progress=False)
    r1, r2 = read_metrics(tmp_path / "raegan")
    assert len(r1["train/recon_loss"]) == 1 and "ae_steps" not in r1  # the plain AE's step
    assert len(r1["val/recon_loss"]) == 2  # evaluated as the recursive AE it becomes
    assert (r2["ae_steps"], r2["d_steps"]) == (4, 4) and len(r2["train/recon_loss"]) == 2

    ae = cfg_for("mnist_aegan", **{"model.family": "ae", "train.epochs": 1})
    train_and_evaluate(ae, tmp_path / "ae", data_dir=str(tiny_mnist), progress=False)
    ckpt = Checkpointer(tmp_path / "raegan" / "checkpoints")
    like = rj.create_train_state(cfg, jax.random.key(0))
    after = [ckpt.restore(s, like) for s in (4, 8)]
    ckpt.close()
    plain = final_state(ae, tmp_path / "ae")
    for x, y in zip(jax.tree.leaves(after[0].ae_params), jax.tree.leaves(plain.ae_params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    fresh = rj.create_train_state(cfg, jax.random.key(cfg.train.seed))
    for x, y in zip(jax.tree.leaves(after[0].d_params), jax.tree.leaves(fresh.d_params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The AE's Adam restarted when the stage ended: after epoch 2 it counts that epoch's
    # 4 updates, not 8 (its moments hold only their gradients).
    count = lambda st: int(optax.tree_utils.tree_get(st.ae_opt_state, "count"))  # noqa: E731
    assert (count(plain), count(after[0]), count(after[1])) == (4, 4, 4)


def test_many_steps_per_dispatch_equals_one(tmp_path, tiny_mnist):
    one = cfg_for("mnist_aegan", **{"train.epochs": 2})
    three = cfg_for("mnist_aegan", **{"train.epochs": 2, "train.steps_per_dispatch": 3})
    train_and_evaluate(one, tmp_path / "one", data_dir=str(tiny_mnist), progress=False)
    train_and_evaluate(three, tmp_path / "three", data_dir=str(tiny_mnist), progress=False)
    a, b = final_state(one, tmp_path / "one"), final_state(three, tmp_path / "three")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def fake_commands(monkeypatch, fn):
    """The commands raegan_jax.launch starts run ``fn(cmd)`` in-process instead; its
    return value is the exit code."""
    import raegan_jax.launch as launch

    class Done:
        def __init__(self, cmd, **kw):
            self.rc = fn(cmd)

        def wait(self):
            return self.rc

        poll = wait

    monkeypatch.setattr(launch.subprocess, "Popen", Done)


def _experiment_script(name: str):
    """Imports ``experiments/<name>.py`` (a script, not a package module)."""
    import importlib.util
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_val_spread_reproduces_the_runs_val_loss(tiny_mnist, ae_run):
    """experiments/probes/val_spread.py's per-image losses over the first N test images average
    to the val loss the run itself reported, and its draws are summarised consistently."""
    vs = _experiment_script("probes/val_spread")
    wd, summary = ae_run
    _, loss = vs.per_image_loss(wd, str(tiny_mnist))
    assert loss.shape == (64,)  # every test image, not only the run's 40
    np.testing.assert_allclose(loss[:40].mean(), summary["test_recon_loss"][0], rtol=1e-5)
    s = vs.spread(loss, 16, draws=50)
    np.testing.assert_allclose(s["blocks"], loss[:64].reshape(4, 16).mean(axis=1))
    assert s["first_n"] == s["blocks"][0] and s["random_min"] <= s["random_mean"] <= s["random_max"]


def test_sweep_only_selects_every_named_entry_and_names_a_typo(tmp_path, capsys, monkeypatch):
    """``sweep.py run --only a --only b`` runs both entries (argparse would otherwise keep
    the last flag only), and a name the spec lacks stops it with one error before any
    run starts."""
    sweep = _experiment_script("sweep")
    spec = [{"name": n, "preset": "mnist_ae", "seeds": [0, 1]} for n in ("a", "b", "c")]
    picked = lambda only: [(e["name"], s) for e, s in sweep.select(spec, only)]
    assert picked(None) == [(n, s) for n in "abc" for s in (0, 1)]
    assert picked(["a", "c"]) == [("a", 0), ("a", 1), ("c", 0), ("c", 1)]
    assert [(e["name"], s) for e, s in sweep.select(spec, ["a", "c"], [1])] == [("a", 1), ("c", 1)]
    # A named entry brings the runs it starts from, of its own seeds, down the whole chain.
    chain = spec + [{"name": "g", "preset": "mnist_aegan", "ae_stage_from": "b", "seeds": [1, 2]},
                    {"name": "h", "preset": "mnist_aegan", "init_from": "g", "seeds": [2]}]
    assert [(e["name"], s) for e, s in sweep.select(chain, ["h"])] == [("b", 2), ("g", 2), ("h", 2)]
    assert [(e["name"], s) for e, s in sweep.select(chain, ["g", "c"], [1])] == [
        ("b", 1), ("c", 1), ("g", 1)]
    path = _write(tmp_path / "spec.json", spec)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit):
        sweep.main(["run", str(path), "--runs", str(runs), "--only", "a", "--only", "d"])
    assert "no run named d" in capsys.readouterr().err
    assert not runs.exists()
    calls = []
    fake_commands(monkeypatch, lambda cmd: calls.append(cmd) or 0)
    assert sweep.main(["run", str(path), "--runs", str(runs), "--only", "a", "--only", "c"]) == 0
    workdirs = sorted(cmd[cmd.index("--workdir") + 1] for cmd in calls)
    assert workdirs == [str(runs / n / f"seed{s}") for n in "ac" for s in (0, 1)]
    calls.clear()  # --seeds: only those seeds of the named entries
    assert sweep.main(["run", str(path), "--runs", str(tmp_path / "r2"), "--only", "b",
                       "--seeds", "1"]) == 0
    assert [cmd[cmd.index("--workdir") + 1] for cmd in calls] == [str(tmp_path / "r2" / "b" / "seed1")]


def test_sweep_together_trains_each_entrys_seeds_in_one_run(tmp_path, monkeypatch):
    """``sweep.py run --together``: an entry's unfinished seeds are one many-seed run in
    DIR/<name> (its seeds' folders where single runs would put them); an entry that starts
    from another run keeps one run per seed."""
    sweep = _experiment_script("sweep")
    spec = [{"name": "a", "preset": "mnist_ae", "set": {"train.epochs": 3}, "seeds": [0, 1, 2]},
            {"name": "g", "preset": "mnist_aegan", "init_from": "a", "seeds": [1, 2]}]
    runs, calls = tmp_path / "runs", []
    (runs / "a" / "seed1").mkdir(parents=True)
    (runs / "a" / "seed1" / "summary.json").write_text("{}")  # seed 1 finished on its own
    fake_commands(monkeypatch, lambda cmd: calls.append(cmd) or 0)
    assert sweep.main(["run", str(_write(tmp_path / "s.json", spec)), "--runs", str(runs),
                       "--together", "--set", "train.eval_every_epochs=2"]) == 0
    many, single, waited = calls  # g's seed 2 waits for the many-seed run that trains a's seed 2
    assert many[many.index("--workdir") + 1] == str(runs / "a")
    assert "train.seeds=0,2" in many and "train.epochs=3" in many and "train.eval_every_epochs=2" in many
    assert not any(c.startswith("train.seed=") for c in many)
    assert single[single.index("--workdir") + 1] == str(runs / "g" / "seed1")
    assert waited[waited.index("--workdir") + 1] == str(runs / "g" / "seed2")
    assert (runs / "a.log").exists()


def test_sweep_branch_from_names_the_source_epochs_checkpoint_and_waits_for_it(tmp_path, monkeypatch,
                                                                            capsys):
    """A ``branch_from`` entry continues its source's state from the end of the named epoch
    (the checkpoint whose step the source's records add up to), after the source ran; a
    source that never got there fails that seed alone, with the reason."""
    sweep = _experiment_script("sweep")
    spec = [{"name": "stage", "preset": "mnist_aegan", "seeds": [0, 1]},
            {"name": "game", "preset": "mnist_aegan", "branch_from": {"name": "stage", "epoch": 2},
             "seeds": [0, 1]}]
    runs, order = tmp_path / "runs", []

    def fake_run(cmd):
        wd = pathlib.Path(cmd[cmd.index("--workdir") + 1])
        order.append(wd.parent.name)
        if wd.parent.name == "stage" and wd.name == "seed0":  # seed 1 stops before epoch 2
            wd.mkdir(parents=True)
            (wd / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "steps": 4}) + "\n"
                                                      for e in (1, 2, 3)))
            for step in (8, 12):
                (wd / "checkpoints" / str(step)).mkdir(parents=True)
        return 0

    fake_commands(monkeypatch, fake_run)
    assert sweep.run(spec, runs, jobs=2, only=None) == 1
    assert order.index("game") > order.index("stage")
    out = capsys.readouterr().out
    assert "game seed 1: FAILED" in out and "no checkpoint of epoch 2" in out
    cmd = sweep._cmd(spec[1], 0, runs / "game" / "seed0", runs, [])
    assert f"train.init_from={runs / 'stage' / 'seed0' / 'checkpoints' / '8'}" in cmd
    assert "train.init_from_state=true" in cmd
    # an ae_stage_from entry names its source's run of the same seed, and waits for it
    stage = {"name": "aegan", "preset": "mnist_aegan", "ae_stage_from": "stage", "seeds": [1]}
    assert sweep._source(stage) == "stage"
    assert (f"train.ae_stage_from={runs / 'stage' / 'seed1'}"
            in sweep._cmd(stage, 1, runs / "aegan" / "seed1", runs, []))


def test_sweep_seeds_reads_every_seed_finished_or_not(tmp_path, capsys):
    """``sweep.py seeds``: one row per seed with what it has logged, the last-3-epoch means
    of the validation numbers and the game's training measures over the last epochs."""
    sweep = _experiment_script("sweep")
    spec = [{"name": "g", "preset": "mnist_aegan", "seeds": [0, 1, 2]}]
    recs = [{"epoch": e, "steps": 4, "val/recon_loss": [0.1 / e], "val/d_real_acc": 0.1 * e,
             "val/d_fake_acc": [0.5 + 0.1 * e], "train/d_real_acc": 0.2 * e,
             "train/d_fake_acc": [0.9], "train/d_steps": e, "train/stage_switches": 2}
            for e in range(1, 5)]
    for seed, n in ((0, 4), (1, 2)):  # seed 0 finished its 4 epochs, seed 1 is at epoch 2
        wd = tmp_path / "g" / f"seed{seed}"
        wd.mkdir(parents=True)
        (wd / "config.json").write_text(json.dumps({"train": {"epochs": 4}}))
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:n]))
        if n == 4:
            (wd / "summary.json").write_text("{}")
    rows = sweep.per_seed(spec, tmp_path, last=2)
    assert [(r["seed"], r["epoch"], r["finished"]) for r in rows] == [(0, 4, True), (1, 2, False)]
    done = rows[0]
    np.testing.assert_allclose(done["val_recon_loss_last3"], [np.mean([0.1 / 2, 0.1 / 3, 0.1 / 4])])
    np.testing.assert_allclose(done["d_real_acc_last3"], 0.3)  # epochs 2..4
    np.testing.assert_allclose(done["balance_gap"], 0.4)  # |0.9 - 0.5|
    np.testing.assert_allclose(done["balance_gap_last3"], 0.3)  # mean of 0.2, 0.3, 0.4
    np.testing.assert_allclose(done["balance_gap_last"], 0.35)  # epochs 3, 4 (last=2)
    # epochs 3, 4: fakes at 0.8 and 0.9, neither in 0.5 +- 0.1, the second at an extreme
    assert (done["in_band_last"], done["extreme_last"], done["evals_last"]) == (0, 1, 2)
    early = sweep.per_seed(spec, tmp_path, last=4)[1]  # seed 1: epochs 1, 2 (0.6 and 0.7)
    assert (early["in_band_last"], early["extreme_last"], early["evals_last"]) == (1, 0, 2)
    np.testing.assert_allclose(done["train_d_real_acc"], 0.7)
    np.testing.assert_allclose(done["d_steps"], 3.5)
    assert sweep.main(["seeds", str(_write(tmp_path / "spec.json", spec)), "--runs", str(tmp_path),
                       "--last", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[2].startswith("| g | 0 | 4/4 |") and "2/4 (running" in out[3]
    assert "0.35 (0 / 1 of 2)" in out[2]
    # --only picks the rows of the reports too, and names a typo.
    two = _write(tmp_path / "two.json", spec + [{"name": "h", "preset": "mnist_aegan", "seeds": [0]}])
    for only, n_rows in (("g", 2), ("h", 0)):  # h never ran: no rows, and none of g's
        assert sweep.main(["seeds", str(two), "--runs", str(tmp_path), "--last", "2", "--only", only]) == 0
        rows_out = [r for r in capsys.readouterr().out.splitlines()[2:] if r.strip()]
        assert len(rows_out) == n_rows and all(r.startswith(f"| {only} |") for r in rows_out), rows_out
    with pytest.raises(SystemExit):
        sweep.main(["table", str(two), "--runs", str(tmp_path), "--only", "x"])
    assert "no run named x" in capsys.readouterr().err


def test_sweep_table_sets_the_live_networks_beside_their_weight_averages(tmp_path):
    """Under ``train.ae_ema`` (``gan.d_ema``) a run's summary holds the average's and the
    live AE's val loss (D's accuracies and balance gap); ``sweep.py table`` gives both over
    the seeds, and only where the runs kept both."""
    sweep = _experiment_script("sweep")
    spec = [{"name": "ema", "preset": "mnist_ae", "seeds": [0, 1]},
            {"name": "plain", "preset": "mnist_ae", "seeds": [0]}]
    d = lambda real, fake, real_live, fake_live: {  # noqa: E731
        "d_real_acc": real, "d_fake_acc": [fake], "balance_gap": abs(fake - 0.5),
        "d_real_acc_live": real_live, "d_fake_acc_live": [fake_live],
        "balance_gap_live": abs(fake_live - 0.5)}
    for name, seed, summ in (("ema", 0, {"val_recon_loss": [0.010], "val_recon_loss_live": [0.012],
                                         **d(0.5, 0.4, 0.9, 0.0), "d_real_prob": 0.5, "d_fake_prob": [0.4]}),
                             ("ema", 1, {"val_recon_loss": [0.020], "val_recon_loss_live": [0.016],
                                         **d(0.7, 0.6, 0.1, 1.0), "d_real_prob": 0.6, "d_fake_prob": [0.6]}),
                             ("plain", 0, {"val_recon_loss": [0.030]})):
        wd = tmp_path / name / f"seed{seed}"
        wd.mkdir(parents=True)
        (wd / "config.json").write_text(json.dumps({"train": {"epochs": 1, "recon_loss": "mse"}}))
        (wd / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "steps": 4, "train/recon_loss": [0.01]}) + "\n")
        (wd / "summary.json").write_text(json.dumps({**summ, "val_psnr": [20.0], "val_ssim": [0.8],
                                                      "wall_seconds": 1.0, "images_per_sec": 1.0}))
    ema, plain = sweep.summarize(spec, tmp_path)
    np.testing.assert_allclose(ema["val_recon_loss"][0], [0.015])
    np.testing.assert_allclose(ema["val_recon_loss_live"][0], [0.014])
    np.testing.assert_allclose(ema["val_recon_loss_live"][1], [0.002 * 2 ** 0.5])  # sample std
    assert plain["val_recon_loss_live"] is None
    lines = sweep.table([ema, plain]).splitlines()
    assert "0.0150 ± 0.0071 (live AE: 0.0140 ± 0.0028)" in lines[2]
    assert ("0.60 ± 0.14 / 0.50 ± 0.14; mean P(real) 0.55 ± 0.07 / 0.50 ± 0.14 "
            "(live D: 0.50 ± 0.57 / 0.50 ± 0.71)") in lines[2]
    assert "test loss per pass (mean ± sample std)" in lines[0]  # runs without a validation split
    assert "mean P(real)" not in lines[3]  # runs from before it was logged
    assert "0.10 ± 0.00; – (live D: 0.50 ± 0.00; –)" in lines[2]
    assert "live AE" not in lines[3] and "live D" not in lines[3]


def test_make_results_tabulates_the_runs_and_redraws_their_figures(tmp_path, capsys, ae_run):
    """experiments/make_results.py: one row per preset from the runs' summaries, "not run"
    where none is; the reconstructions copied, the history figures redrawn from the records
    (a run's metrics.jsonl alone is enough for them)."""
    mr = _experiment_script("make_results")
    wd, summary = ae_run
    runs = tmp_path / "runs"
    copy_run(wd, runs / "mnist_ae")
    gan = runs / "mnist_aegan"  # records and summary only: no checkpoint, no figure
    gan.mkdir()
    recs = [{"epoch": e, "steps": 4, "train/recon_loss": [0.03], "val/recon_loss": [0.02 / e],
             "val/d_real_acc": 0.5, "val/d_fake_acc": [0.4], "val/d_real_prob": 0.5,
             "val/d_fake_prob": [0.45], "train/d_learns/d_fake_acc": [0.6]} for e in (1, 2)]
    (gan / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    _write(gan / "summary.json", {"train_examples": 128, "test_examples": 40, "epochs": 2,
                                  "val_recon_loss": [0.01], "val_psnr": [20.0], "val_ssim": [0.8],
                                  "d_real_acc": 0.5, "d_fake_acc": [0.4], "wall_seconds": 60.0,
                                  "images_per_sec": 100.0})
    mr.main(runs, tmp_path / "figs")
    rows = {r.split(" |")[0][3:-1]: r for r in capsys.readouterr().out.splitlines()[2:]}
    assert f"| {summary['test_recon_loss'][0]:.4f} |" in rows["mnist_ae"]
    assert "| 0.0100 |" in rows["mnist_aegan"] and "| 0.50 / 0.40 |" in rows["mnist_aegan"]
    assert "not run" in rows["cifar10_raegan"] and len(rows) == 6
    figs = tmp_path / "figs"
    assert {p.name for p in figs.iterdir()} == {"mnist_ae_reconstructions.png", "mnist_ae_loss_curves.png",
                                                "mnist_aegan_loss_curves.png", "mnist_aegan_d_accuracy.png"}
    assert (figs / "mnist_ae_reconstructions.png").read_bytes() == (wd / "reconstructions.png").read_bytes()


def test_make_results_tables_the_judged_runs_over_seeds(tmp_path, capsys):
    """``make_results.py judge``: per preset and pass, means ± sample std over the seeds of
    what ``raegan eval`` wrote (its test-split evaluation with the most passes), and the
    perception–distortion figure."""
    mr = _experiment_script("make_results")
    runs = tmp_path / "runs"
    for seed, auc in ((0, [0.9, 0.95]), (1, [0.7, 0.85])):
        for passes, shift in ((2, 0.0), (1, 0.5)):  # the 2-pass evaluation is the one read
            ev = {"passes": passes, "trained_passes": 1, "recon_loss": [0.01, 0.02][:passes],
                  "psnr": [20.0, 18.0][:passes], "ssim": [0.8, 0.7][:passes],
                  "hf_ratio": [0.5, 0.4][:passes], "judge_auc": [a - shift for a in auc][:passes]}
            out = runs / f"cifar10_ae_seed{seed}" / f"eval_test_passes{passes}"
            out.mkdir(parents=True)
            _write(out / "eval.json", ev)
    mr.judge(runs, tmp_path / "figs")
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2 and rows[0].startswith("| `cifar10_ae` | 2 | 1 (trained) | 0.0100 ± 0.0000 |")
    assert "| 0.8000 ± 0.1414 | – |" in rows[0] and "| 0.9000 ± 0.0707 | – |" in rows[1]
    assert (tmp_path / "figs" / "perception_distortion.png").exists()


def _write(path: pathlib.Path, obj) -> pathlib.Path:
    path.write_text(json.dumps(obj))
    return path


def test_d_separation_reproduces_the_runs_d_accuracies(tmp_path, tiny_mnist, ae_run):
    """experiments/probes/d_separation.py scores the run's own validation images with its D: the
    accuracies at logit 0 are the run's logged ones, and its AUC is the pairwise one."""
    ds = _experiment_script("probes/d_separation")
    rng = np.random.default_rng(0)
    real, fake = rng.normal(1, 1, 50), np.round(rng.normal(0, 1, 40), 1)  # with ties
    pairs = (real[:, None] > fake[None]).mean() + 0.5 * (real[:, None] == fake[None]).mean()
    np.testing.assert_allclose(ds.auc(real, fake), pairs)
    np.testing.assert_allclose(ds.auc(np.round(real, 1), np.round(real, 1)), 0.5)
    # Under gan.d_ema the run's D is its weight average: the script reads that one too.
    cfg = cfg_for("mnist_aegan", **{"model.family": "raegan", "model.passes": 2, "train.epochs": 1,
                                    "gan.d_ema": 0.9})
    summary = train_and_evaluate(cfg, tmp_path / "w", data_dir=str(tiny_mnist), progress=False)
    _, real_l, fake_l, probes = ds.d_scores(tmp_path / "w", str(tiny_mnist), cues=True)
    assert real_l.shape == (32,) and fake_l.shape == (2, 32)  # the run's 32 validation images
    _, real_tr, fake_tr, _ = ds.d_scores(tmp_path / "w", str(tiny_mnist), split="train")
    assert real_tr.shape == (128,) and fake_tr.shape == (2, 128)  # its 128 training images
    assert not np.allclose(real_tr[:32], real_l)
    assert set(probes) == set(ds.cue_images(np.zeros((1, 8, 8, 1), np.float32),
                                            np.zeros((1, 8, 8, 1), np.float32)))
    assert all(p[0].shape == (32,) and np.isfinite(p[1]) for p in probes.values())
    flat = np.full((2, 8, 8, 3), 0.7, np.float32)  # reflect padding: no dark borders
    np.testing.assert_allclose(np.asarray(ds.blur(flat, 1.5)), flat, rtol=1e-5)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (2, 8, 8, 3)))
    cues = ds.cue_images(x, x)  # a perfect fake: every hybrid is the real image itself
    for name in ("fake coarse + real fine", "real coarse + fake fine", "fake mean colour"):
        np.testing.assert_allclose(np.asarray(cues[name]), x, atol=1e-6)
    s = ds.separation(real_l, fake_l)
    np.testing.assert_allclose(s["d_real_acc"], summary["d_real_acc"], atol=1e-6)
    np.testing.assert_allclose(s["d_fake_acc"], summary["d_fake_acc"], atol=1e-6)
    # D's mean P(real), the run's on device against the script's from the logits on the host.
    np.testing.assert_allclose(s["d_real_prob"], summary["d_real_prob"], rtol=1e-5)
    np.testing.assert_allclose(s["d_fake_prob"], summary["d_fake_prob"], rtol=1e-5)
    live_l = ds.d_scores(tmp_path / "w", str(tiny_mnist), live=True)[1:3]
    live = ds.separation(*live_l)
    np.testing.assert_allclose(live["d_real_acc"], summary["d_real_acc_live"], atol=1e-6)
    np.testing.assert_allclose(live["d_fake_acc"], summary["d_fake_acc_live"], atol=1e-6)
    np.testing.assert_allclose(live["d_fake_prob"], summary["d_fake_prob_live"], rtol=1e-5)
    assert live["logit_std_real"] != s["logit_std_real"]  # two Ds
    assert len(s["auc"]) == 2 and all(0.0 <= a <= 1.0 for a in s["auc"])
    with pytest.raises(ValueError, match="no discriminator"):
        ds.d_scores(ae_run[0], str(tiny_mnist))
    # experiments/probes/d_jitter.py: D's further updates from the same checkpoint, at two rates.
    dj = _experiment_script("probes/d_jitter")
    res = dj.jitter(tmp_path / "w", [None, 1e-6], updates=3, probe=40, data_dir=str(tiny_mnist))
    own, slow = res["0.001"], res["1e-06"]  # the run's own train.d_lr, then the one asked for
    assert len(own["mean_logit"]) == len(slow["mean_logit"]) == 4
    np.testing.assert_allclose(own["mean_logit"][0], slow["mean_logit"][0])  # one checkpoint
    np.testing.assert_allclose(  # the live D's logits on the 40 test images and their fakes
        own["mean_logit"][0], np.concatenate([live_l[0], live_l[1].ravel()]).mean(), rtol=1e-5)
    assert own["step"] > 100 * slow["step"] > 0  # Adam's move scales with its rate
    np.testing.assert_allclose(own["ratio"], own["step"] / own["spread"])
    assert 0.0 <= own["in_band"] <= 1.0 and 0.0 <= own["auc_end"] <= 1.0
    assert own["auc_start"] == slow["auc_start"]  # both from the checkpoint
    # D's Adam eps: an eps far above D's gradient turns its normalised steps into small ones.
    res = dj.jitter(tmp_path / "w", [None], updates=3, probe=40, data_dir=str(tiny_mnist),
                    d_eps=[None, 1.0])
    assert set(res) == {"0.001", "0.001 eps=1.0"}
    np.testing.assert_allclose(res["0.001"]["mean_logit"], own["mean_logit"], rtol=1e-6)
    assert res["0.001"]["step"] > 10 * res["0.001 eps=1.0"]["step"]
