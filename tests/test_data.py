import numpy as np
import pytest
import tensorflow_datasets as tfds

import raegan_jax as rj
from raegan_jax import data
from raegan_jax.data import DataError, read_idx
from conftest import write_idx


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(Exception):
        read_idx(tmp_path / "bad.gz")


def test_shipped_mnist_is_the_real_dataset():
    raw, _ = data.find_raw("mnist")
    assert raw is not None
    labels = read_idx(raw / "train-labels-idx1-ubyte.gz")
    images = read_idx(raw / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (60000,) and images.shape == (10000, 28, 28)
    assert labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the famous first digits


def test_local_mnist_through_tfds_builder(tiny_mnist):
    cfg = rj.get_preset("mnist_ae", {"data.train_examples": 100, "data.test_examples": 30,
                                     "train.batch_size": 10, "data.validation_examples": 50})
    ds = data.load(cfg, tiny_mnist)
    assert ds.train.images.shape == (100, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (30, 28, 28, 1)
    assert ds.available == (256, 64) and "raegan_mnist" in ds.source and ds.note == ""
    raw = read_idx(tiny_mnist / "mnist" / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.train.images[..., 0], raw[:100])  # "first": file order
    # The validation split: the last 50 training images, never among those trained on.
    np.testing.assert_array_equal(ds.validation.images[..., 0], raw[-50:])
    assert ds.val is ds.validation and ds.val_split == "validation" and ds.split("test") is ds.test


def test_the_validation_split_is_held_out_of_every_draw(tiny_mnist):
    """Whatever the seed, subset rule or resampling, no validation image is trained on; the
    validation images are the same for every seed; without one the test split stands in."""
    raw = read_idx(tiny_mnist / "mnist" / "train-images-idx3-ubyte.gz")
    held = {raw[i].tobytes() for i in range(256 - 60, 256)}
    vals = []
    for seed, how in ((0, "sample"), (1, "sample"), (2, "first")):
        cfg = rj.get_preset("mnist_ae", {"data.train_examples": 150, "data.test_examples": 30,
                                         "train.batch_size": 10, "data.validation_examples": 60,
                                         "data.subset": how, "train.seed": seed,
                                         "data.resample_train": False})
        ds = data.load(cfg, tiny_mnist)
        assert len(ds.train.images) == 150
        assert not held & {im.tobytes() for im in ds.train.images[..., 0]}
        vals.append(ds.validation.images)
    np.testing.assert_array_equal(vals[0], vals[1])
    # Resampling loads the whole pool the epochs draw from: all but the validation split.
    pool = data.load(rj.get_preset("mnist_ae", {"data.train_examples": 0, "train.batch_size": 10,
                                                "data.validation_examples": 60,
                                                "data.resample_train": False}), tiny_mnist)
    assert len(pool.train.images) == 196 and data.train_used(
        rj.get_preset("mnist_ae", {"data.validation_examples": 60, "data.train_examples": 0,
                                   "data.resample_train": False}), 256) == 196
    none = data.load(rj.get_preset("mnist_ae", {"data.validation_examples": 0, "train.batch_size": 10,
                                                "data.train_examples": 100,
                                                "data.resample_train": False}), tiny_mnist)
    assert none.validation is None and none.val is none.test and none.val_split == "test"
    with pytest.raises(data.DataError, match="data.validation_examples .256. must be below the 256"):
        data.load(rj.get_preset("mnist_ae", {"data.validation_examples": 256}), tiny_mnist)


def _prepare_after(barrier, raw):
    barrier.wait()  # both processes start building at once
    return data.prepare_local("mnist", raw).info.splits["train"].num_examples


def test_runs_started_together_prepare_the_dataset_once(tiny_mnist, tmp_path, monkeypatch):
    # A sweep's --jobs start several runs over a cache nobody has prepared yet.
    import concurrent.futures as cf
    import multiprocessing as mp
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        barrier = manager.Barrier(2)
        got = [f.result() for f in [pool.submit(_prepare_after, barrier, tiny_mnist / "mnist")
                                    for _ in range(2)]]
    assert got == [256, 256]


def test_seeded_sample_subset_is_deterministic(tiny_mnist):
    over = {"data.train_examples": 50, "data.subset": "sample", "train.batch_size": 10,
            "data.validation_examples": 0}
    a = data.load(rj.get_preset("mnist_ae", over), tiny_mnist)
    b = data.load(rj.get_preset("mnist_ae", over), tiny_mnist)
    c = data.load(rj.get_preset("mnist_ae", {**over, "train.seed": 1}), tiny_mnist)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.train.images, c.train.images)
    # The seeded draw over the whole split (as numpy draws it), in file order; only those read.
    idx = np.sort(np.random.default_rng(0).choice(256, 50, replace=False))
    np.testing.assert_array_equal(data.subset_indices(256, 50, "sample", 0), idx)
    raw = read_idx(tiny_mnist / "mnist" / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(a.train.images[..., 0], raw[idx])
    labels = read_idx(tiny_mnist / "mnist" / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(a.train.labels, labels[idx])
    assert data.subset_indices(256, 0, "sample", 0).tolist() == list(range(256))  # 0: all
    assert data.subset_indices(256, 300, "sample", 0).tolist() == list(range(256))
    assert data.subset_indices(256, 5, "first", 0).tolist() == list(range(5))


def test_cifar_npz_and_fewer_images_than_asked(tiny_cifar):
    cfg = rj.get_preset("cifar10_ae", {"data.validation_examples": 16})  # asks for 10000 / 2000
    ds = data.load(cfg, tiny_cifar)
    assert ds.train.images.shape == (80, 32, 32, 3) and ds.test.images.shape == (40, 32, 32, 3)
    assert "asked for 10000 images, only 80 exist" in ds.note  # besides the validation split
    assert "asked for 2000 images, only 40 exist" in ds.note
    # The sizes alone, without reading the images, and the one rule for how many are used.
    assert data.split_sizes(cfg, tiny_cifar) == ds.available == (96, 40)
    assert [data.images_used(n, 96) for n in (0, -1, 50, 96, 10000)] == [96, 96, 50, 96, 96]
    small = data.load(rj.get_preset("cifar10_ae", {"data.train_examples": 50,
                                                   "data.validation_examples": 16}), tiny_cifar)
    assert len(small.train.images) == data.images_used(50, 96) and small.note.startswith("test")


def test_missing_data_fails_fast_saying_where_it_looked(tmp_path):
    cfg = rj.get_preset("cifar10_ae", {"data.source": "local"})
    with pytest.raises(DataError, match=str(tmp_path).replace("/", ".") + ".*--data-dir"):
        data.load(cfg, tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        data.load(cfg, tmp_path / "nope")
    # auto: no local files and no prepared standard dataset -> no download attempt.
    with pytest.raises(DataError, match="no cifar10 data found"):
        data.load(rj.get_preset("cifar10_ae"), tmp_path)


def test_standard_tfds_builder_path_with_mock_data(tmp_path):
    cfg = rj.get_preset("mnist_ae", {"data.source": "tfds", "data.train_examples": 20, "train.batch_size": 4,
                                     "data.test_examples": 10, "data.validation_examples": 4})
    with tfds.testing.mock_data(num_examples=24):
        ds = data.load(cfg, tmp_path)
    assert ds.train.images.shape == (20, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.validation.images.shape == (4, 28, 28, 1)
    assert "tfds standard 'mnist'" in ds.source
