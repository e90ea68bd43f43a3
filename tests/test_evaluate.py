"""`raegan eval`: a trained run evaluated after the fact, at its passes and beyond."""

import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from raegan_jax.checkpoint import CheckpointError
from raegan_jax.evaluate import evaluate_run
from raegan_jax.train import train_and_evaluate
from conftest import REPO
from test_train import cfg_for


@pytest.fixture(scope="module")
def raegan_run(tmp_path_factory, tiny_mnist):
    wd = tmp_path_factory.mktemp("eval") / "raegan"
    cfg = cfg_for("mnist_aegan", **{"model.family": "raegan", "model.passes": 2, "train.epochs": 2})
    summary = train_and_evaluate(cfg, wd, data_dir=str(tiny_mnist), progress=False)
    return wd, summary


def test_eval_at_the_trained_passes_is_what_the_run_measured(raegan_run, tiny_mnist):
    """On the test split eval gives the run's test_… numbers, on its validation split its
    val_… (the split the loop evaluated every epoch); the two differ."""
    wd, summary = raegan_run
    assert summary["val_split"] == "validation" and summary["validation_examples"] == 32
    ev = evaluate_run(wd, data_dir=str(tiny_mnist), realism=False)
    assert (ev["passes"], ev["trained_passes"], ev["split"], ev["epoch"]) == (2, 2, "test", 2)
    assert ev["recon_loss"] == summary["test_recon_loss"] and ev["examples"] == 40
    assert ev["psnr"] == summary["test_psnr"] and ev["ssim"] == summary["test_ssim"]
    assert ev["hf_ratio"] == summary["test_hf_ratio"]
    assert ev["d_fake_prob"] == summary["test_d_fake_prob"]
    assert json.loads((wd / "eval_test_passes2" / "eval.json").read_text()) == ev
    val = evaluate_run(wd, data_dir=str(tiny_mnist), split="val", realism=False)
    assert (val["split"], val["examples"]) == ("validation", 32)
    assert val["recon_loss"] == summary["val_recon_loss"] and val["hf_ratio"] == summary["val_hf_ratio"]
    assert val["d_fake_prob"] == summary["d_fake_prob"] and val["d_real_prob"] == summary["d_real_prob"]
    assert val["recon_loss"] != ev["recon_loss"]
    assert (wd / "eval_validation_passes2" / "eval.json").exists()


def test_eval_judges_every_pass(raegan_run, tiny_mnist):
    """The realism measures per pass: the judge's AUC with its interval and per-critic
    values, the game D's AUC, the spectra, and their figures."""
    wd, _ = raegan_run
    ev = evaluate_run(wd, data_dir=str(tiny_mnist))
    assert len(ev["judge_auc"]) == len(ev["game_d_auc"]) == len(ev["spectrum"]["passes"]) == 2
    for a, (lo, hi), seeds in zip(ev["judge_auc"], ev["judge_auc_interval"], ev["judge_auc_seeds"]):
        assert 0 <= lo <= a <= hi <= 1 and len(seeds) == ev["judge_recipe"]["seeds"]
        assert a == pytest.approx(np.mean(seeds))
    assert ev["judge_train_examples"] == 128  # the run's training images, not its validation ones
    assert len(ev["spectrum"]["frequency"]) == 14 and ev["spectrum"]["frequency"][-1] == 0.5
    for name in ("per_pass.png", "spectrum.png"):
        assert matplotlib.image.imread(wd / "eval_test_passes2" / name).std() > 0


def test_eval_beyond_the_trained_passes_applies_the_ae_again(raegan_run, tiny_mnist):
    wd, summary = raegan_run
    ev = evaluate_run(wd, passes=5, data_dir=str(tiny_mnist), realism=False)
    assert ev["passes"] == 5 and len(ev["recon_loss"]) == len(ev["d_fake_acc"]) == 5
    assert len(ev["hf_ratio"]) == 5 and all(r >= 0 for r in ev["hf_ratio"])
    np.testing.assert_allclose(ev["recon_loss"][:2], summary["test_recon_loss"], rtol=1e-6)
    out = wd / "eval_test_passes5"
    grid = matplotlib.image.imread(out / "reconstructions.png")  # originals + 5 passes
    assert grid.shape[0] == round(1.3 * 6 * 100)
    assert matplotlib.image.imread(out / "per_pass.png").std() > 0


def test_a_plain_ae_is_evaluated_recursively(tmp_path, tiny_mnist):
    cfg = cfg_for("mnist_ae", **{"train.epochs": 1})
    summary = train_and_evaluate(cfg, tmp_path / "ae", data_dir=str(tiny_mnist), progress=False)
    ev = evaluate_run(tmp_path / "ae", passes=3, data_dir=str(tiny_mnist), realism=False)
    assert ev["trained_passes"] == 1 and len(ev["recon_loss"]) == 3
    np.testing.assert_allclose(ev["recon_loss"][0], summary["test_recon_loss"][0], rtol=1e-6)
    with pytest.raises(CheckpointError, match="raegan eval"):
        evaluate_run(tmp_path / "nothing_here")


def test_raegan_eval_command(raegan_run, tiny_mnist, tmp_path):
    wd, _ = raegan_run
    run = lambda *a: subprocess.run([sys.executable, "-m", "raegan_jax", "eval", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "PYTHONPATH": str(REPO),
                                         "JAX_PLATFORMS": "cpu"})
    ok = run(str(wd), "--passes", "3", "--data-dir", str(tiny_mnist), "--no-judge", "--split", "val")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.splitlines()[-1])["passes"] == 3
    assert "| pass | loss | PSNR dB |" in ok.stdout and "validation split, 32 images" in ok.stdout
    assert "Traceback" not in ok.stderr and "WARNING" not in ok.stderr, ok.stderr
    bad = run(str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.startswith("raegan: error: raegan eval ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_high_frequency_ratio_is_calibrated_on_real_images(tiny_cifar):
    """Reals against themselves give 1; blurring them lowers it steadily (σ = 0.5, 0.7, 1,
    2 px), noise raises it, a flat image has none (no padding enters the measure)."""
    import dm_pix as pix
    import jax
    from raegan_jax.realism import high_frequency_energies, high_frequency_ratio
    with np.load(tiny_cifar / "cifar10" / "cifar10_subset.npz") as z:
        reals = z["x_test"].astype(np.float32) / 255.0
    assert high_frequency_ratio(reals, reals) == pytest.approx(1.0, abs=1e-6)
    blurred = [high_frequency_ratio(np.asarray(jax.vmap(
        lambda im, s=s: pix.gaussian_blur(im, s, 2 * int(np.ceil(3 * s)) + 1))(reals)), reals)
        for s in (0.5, 0.7, 1.0, 2.0)]
    assert 1 > blurred[0] > blurred[1] > blurred[2] > blurred[3] > 0, blurred
    assert blurred[2] < 0.5  # the calibration: blur at σ = 1 px keeps under half
    noisy = np.clip(reals + np.random.default_rng(0).normal(0, 0.05, reals.shape), 0, 1)
    assert high_frequency_ratio(noisy.astype(np.float32), reals) > 1.2
    assert float(high_frequency_energies(np.full_like(reals, 0.4)).max()) < 1e-10
