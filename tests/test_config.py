import json
import pathlib

import pytest

import raegan_jax as rj
from raegan_jax.config import ConfigError, apply_overrides, diff, from_dict
from raegan_jax.stages import sweeps_before


# The report's experiments (its section per experiment; SPEC §5), written out here from the
# report, not from the package: dataset, family, passes, epochs, train / test images, loss.
REPORT_TABLE = {
    "mnist_ae": ("mnist", "ae", 1, 100, 3000, 600, "mse"),
    "cifar10_ae": ("cifar10", "ae", 1, 200, 10000, 2000, "bce"),
    "cifar10_rae": ("cifar10", "rae", 3, 150, 10000, 2000, "bce"),
    "mnist_aegan": ("mnist", "aegan", 1, 200, 7000, 2000, "mse"),
    "cifar10_aegan": ("cifar10", "aegan", 1, 20, 20000, 2000, "bce"),
    "cifar10_raegan": ("cifar10", "raegan", 3, 20, 20000, 2000, "bce"),
}


def test_the_report_as_written_is_the_reports_table():
    from raegan_jax.configs.report import as_written
    assert tuple(rj.PRESETS) == tuple(REPORT_TABLE)
    for name, row in REPORT_TABLE.items():
        r = as_written(name)
        assert (r.data.dataset, r.model.family, r.model.passes, r.train.epochs,
                r.data.train_examples, r.data.test_examples, r.train.recon_loss) == row, name
        # the settings the report gives (Adam 5e-3 / 1e-3, adversarial weight 1) and the SPEC's
        # where it gives none (batch 128, the threshold rule; `phases` for its CIFAR-10 GANs)
        assert (r.train.ae_lr, r.train.d_lr, r.train.batch_size, r.gan.adv_weight) == (
            5e-3, 1e-3, 128, 1.0)
        assert r.gan.stage_policy == ("phases" if name.startswith("cifar10_") and r.is_gan
                                      else "threshold")
        assert r.train.rae_objective == "cycle" and not r.train.ae_stage_epochs
        assert not r.train.ae_ema and not r.data.resample_train
    # the report's CIFAR-10 schedule: 20 epochs of three sweeps each
    assert sweeps_before(as_written("cifar10_aegan"), 20) == 60


def test_every_departure_is_documented_named_and_one_set_away():
    """A preset differs from the report's experiment only in fields its own function names
    (docstring or source: every departure has its reason there), keeps the report's data
    and model, and `--set` with the report's values gives back the report's recipe."""
    import inspect
    from raegan_jax.configs import _BUILDERS, departures
    from raegan_jax.configs.report import as_written
    for name in rj.PRESETS:
        moved = departures(name)
        assert moved, name  # every preset departs somewhere (each measured)
        source = inspect.getsource(_BUILDERS[name]) + inspect.getsource(
            inspect.getmodule(_BUILDERS[name]))
        for path, report_value, preset_value in moved:
            assert path.split(".")[1] in source, (name, path)
            assert not path.startswith(("model.", "data.dataset", "data.test_examples")), (name, path)
        back = rj.get_preset(name, {path: report for path, report, _ in moved})
        assert diff(back, as_written(name)) == [], name
    # the CIFAR-10 GAN presets differ only in the recursion
    p = rj.PRESETS
    assert diff(p["cifar10_aegan"], p["cifar10_raegan"]) == ["preset", "model.family", "model.passes"]
    assert p["cifar10_ae"].model.disc_widths == (1024, 512, 256)
    assert p["mnist_aegan"].model.disc_widths == (512, 256, 128)


def test_overrides_from_strings_and_values():
    cfg = rj.get_preset("cifar10_raegan", overrides={"train.batch_size": 64, "model.passes": "4",
                                                      "gan.stage_policy": "threshold",
                                                      "gan.threshold": "0.6"})
    assert (cfg.train.batch_size, cfg.model.passes, cfg.gan.stage_policy, cfg.gan.threshold) == (
        64, 4, "threshold", 0.6)
    assert from_dict(cfg.to_dict()) == cfg
    assert diff(cfg, rj.get_preset("cifar10_raegan")) == [
        "model.passes", "train.batch_size", "gan.stage_policy", "gan.threshold"]


def test_switching_dataset_brings_its_architecture():
    cfg = rj.get_preset("mnist_ae", {"data.dataset": "cifar10", "train.recon_loss": "bce"})
    assert cfg.model.conv_widths == (8, 16, 32, 64)


@pytest.mark.parametrize("overrides,needle", [
    ({"model.passes": 0}, "model.passes"),
    ({"model.family": "rae", "model.passes": -2}, "model.passes"),
    ({"model.passes": 3}, "model.passes"),  # the ae family is single-pass
    ({"train.batch_size": 0}, "train.batch_size"),
    ({"train.epochs": 0}, "train.epochs"),
    ({"gan.threshold": 1.0}, "gan.threshold"),
    ({"gan.threshold": 0}, "gan.threshold"),
    ({"gan.stage_policy": "sometimes"}, "gan.stage_policy"),
    ({"train.recon_loss": "l1"}, "train.recon_loss"),
    ({"model.family": "vae"}, "model.family"),
    ({"data.dataset": "svhn"}, "data.dataset"),
    ({"train.batch_size": 5000}, "data.train_examples"),
    ({"model.passes": "three"}, "model.passes"),
    ({"model.unrol": 1}, "model.unrol"),
    ({"passes": 1}, "passes"),
    ({"train.ae_lr": -1}, "train.ae_lr"),
    ({"train.ae_ema": 1.0}, "train.ae_ema"),
    ({"train.ae_ema": -0.5}, "train.ae_ema"),
    ({"gan.d_ema": 1.0}, "gan.d_ema"),
    ({"model.batch_chunks": 3}, "model.batch_chunks"),  # does not divide batch 128
    ({"model.batch_chunks": -1}, "model.batch_chunks"),
    ({"train.ae_stage_epochs": 2}, "train.ae_stage_epochs has no effect for family 'ae'"),
    ({"model.family": "rae", "train.ae_stage_epochs": -1}, "train.ae_stage_epochs"),
    ({"model.family": "rae", "train.epochs": 5, "train.ae_stage_epochs": 5},
     r"train.ae_stage_epochs \(5\) must be below train.epochs \(5\)"),    ({"train.seeds": "0,1,0"}, r"train.seeds must be distinct seeds >= 0, got \(0, 1, 0\)"),
    ({"train.seeds": "0,1", "train.seed": 3}, r"train.seed \(3\) and train.seeds \(\(0, 1\)\) both"),
    ({"train.seeds": "0,1", "train.init_from": "runs/x"}, r"train.seeds cannot yet start from another run's parameters"),
    ({"train.seeds_impl": "pmap"}, "train.seeds_impl"),
])
def test_bad_values_name_the_field(overrides, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        rj.get_preset("mnist_ae", overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'mnist_vae'.*mnist_ae"):
        rj.get_preset("mnist_vae")


def test_config_is_frozen():
    cfg = rj.get_preset("mnist_ae")
    with pytest.raises(Exception):
        cfg.train.epochs = 3  # type: ignore[misc]
    assert apply_overrides(cfg, {}) == cfg


def test_every_experiment_spec_entry_is_a_valid_config():
    """The studies in experiments/specs name presets and overrides that validate, so a
    sweep never starts runs that fail at their first line (or hides a renamed field)."""
    specs = sorted((pathlib.Path(__file__).resolve().parents[1] / "experiments" / "specs").glob("*.json"))
    assert specs
    for path in specs:
        entries = json.loads(path.read_text())
        names = [e["name"] for e in entries]
        assert len(names) == len(set(names)), f"{path.name}: a run name repeats"
        for e in entries:
            rj.get_preset(e["preset"], e.get("set", {}))
            assert all(isinstance(s, int) for s in e.get("seeds", [0])), (path.name, e["name"])


def test_a_tuple_field_takes_one_number_or_a_list():
    """train.keep_epochs from JSON (an int or a list) and from --set (a string) alike."""
    for value in (120, "120", [120], "(40, 120)"):
        want = (40, 120) if "40" in str(value) else (120,)
        assert rj.get_preset("cifar10_ae", {"train.keep_epochs": value}).train.keep_epochs == want
    with pytest.raises(rj.ConfigError, match="train.keep_epochs"):
        rj.get_preset("cifar10_ae", {"train.keep_epochs": "0"})
    with pytest.raises(rj.ConfigError, match="train.keep_epochs"):
        rj.get_preset("cifar10_ae", {"train.keep_epochs": True})


def test_the_replaced_ae_first_field_names_its_replacement_and_old_runs_still_read():
    with pytest.raises(ConfigError, match=r"gan.ae_pretrain_epochs is gone: train.ae_stage_epochs"):
        rj.get_preset("mnist_aegan", {"gan.ae_pretrain_epochs": 20})
    old = rj.get_preset("mnist_aegan", {"train.ae_stage_epochs": 0}).to_dict()
    old["gan"]["ae_pretrain_epochs"] = 20  # a config.json written before the field went
    assert from_dict(old).train.ae_stage_epochs == 20
