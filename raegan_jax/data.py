"""Input pipelines through tensorflow-datasets.

Two ways in, one format out (uint8 arrays [N, H, W, C] that the training loop
keeps whole on device):

* **local** — the real raw files (MNIST IDX files, the CIFAR-10 ``.npz`` in
  Keras layout, or the official ``cifar-10-batches-py`` folder) become a tfds
  dataset through this module's builders, :class:`RaeganMnist` and
  :class:`RaeganCifar10`. They prepare ArrayRecord files in seconds and
  need no TensorFlow and no network; tfds' ``data_source`` reads them back.
* **tfds** — the standard ``mnist`` / ``cifar10`` builders, downloaded by tfds
  where the network allows (Colab). Preparing them needs TensorFlow.

``data.source = "auto"`` uses local files when it finds them, an already
prepared standard dataset otherwise, and fails fast (no download retries)
saying where it looked.

Subsets: ``data.subset = "first"`` takes the first N images of a split in file
order; ``"sample"`` takes a seeded random N (``train.seed``), kept in file
order.

Validation: ``data.validation_examples = N`` holds the **last N training images** (file
order; the same for every seed and preset) out of training. The loop evaluates on them
(``val/…``) and every choice is made on them; the test split is read once, at the end
(``test/…``). With N = 0 there is no validation split and the test split stands in for it,
as in the report (whose "val" is its test split); the run says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import io
import hashlib
import os
import pathlib
import pickle
import sys
from typing import Iterator

import filelock
import numpy as np

from raegan_jax.config import IMAGE_SHAPES, Config

PACKAGE_DATA = pathlib.Path(__file__).resolve().parent / "datasets"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV_DATA_DIR = "RAEGAN_DATA_DIR"
ENV_CACHE_DIR = "RAEGAN_TFDS_DIR"

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_NPZ = "cifar10_subset.npz"
CIFAR_PY_DIR = "cifar-10-batches-py"


class DataError(RuntimeError):
    """Missing or unreadable data. The message says where it looked and what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split held in host memory."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What the training loop needs.

    Attributes:
      train, test: the splits, already subset as the config asks.
      available: (train, test) sizes of the full splits on disk.
      source: a short description of where the images came from.
      note: a loud message when fewer images exist than the config asked for.
      validation: the last ``data.validation_examples`` images of the training split
        (never in ``train``), or None without a validation split.
    """

    train: Split
    test: Split
    available: tuple[int, int]
    source: str
    note: str = ""
    validation: Split | None = None

    @property
    def val(self) -> Split:
        """The split choices are made on: the validation split, or the test split
        standing in for it where there is none."""
        return self.test if self.validation is None else self.validation

    @property
    def val_split(self) -> str:
        """Which split :attr:`val` is: ``"validation"`` or ``"test"``."""
        return "test" if self.validation is None else "validation"

    def split(self, name: str) -> Split:
        """The split ``name``: ``"val"`` (as :attr:`val`) or ``"test"``."""
        if name not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {name!r}")
        return self.val if name == "val" else self.test


# --------------------------------------------------------------------------- raw files

def read_idx(path: pathlib.Path) -> np.ndarray:
    """Reads a (gzipped) IDX file into a numpy array (uint8 images or labels)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte data
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {np.prod(dims)} values, found {data.size}")
    return data.reshape(dims)


def _mnist_split(raw_dir: pathlib.Path, split: str) -> Split:
    img_file, lbl_file = MNIST_FILES[split]
    images = read_idx(raw_dir / img_file)[..., None]
    labels = read_idx(raw_dir / lbl_file).astype(np.int64)
    return Split(images, labels)


def _cifar_split(raw: pathlib.Path, split: str) -> Split:
    if raw.is_file():  # Keras-layout npz
        with np.load(raw) as z:
            return Split(np.asarray(z[f"x_{split}"], np.uint8),
                         np.asarray(z[f"y_{split}"]).reshape(-1).astype(np.int64))
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        with open(raw / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[b"labels"], np.int64))
    return Split(np.concatenate(xs), np.concatenate(ys))


def _candidates(data_dir: str | os.PathLike | None) -> list[pathlib.Path]:
    if data_dir:
        return [pathlib.Path(data_dir)]
    out = []
    if os.environ.get(ENV_DATA_DIR):
        out.append(pathlib.Path(os.environ[ENV_DATA_DIR]))
    out += [PACKAGE_DATA, REPO_ROOT.parent / "shared" / "data", pathlib.Path.cwd() / "data"]
    return out


def find_raw(dataset: str, data_dir: str | os.PathLike | None = None) -> tuple[pathlib.Path | None, list[str]]:
    """Finds the raw files of ``dataset``.

    Looks in ``data_dir`` (if given) or, in order, ``$RAEGAN_DATA_DIR``, the
    MNIST files shipped in the package, ``../shared/data`` beside the
    repository and ``./data``; in each, both ``<dir>/<dataset>/`` and ``<dir>``.

    Returns:
      (path or None, the places looked at). For MNIST the path is a folder
      holding the four IDX files; for CIFAR-10 the ``.npz`` file or the
      ``cifar-10-batches-py`` folder.
    """
    looked = []
    for base in _candidates(data_dir):
        for d in (base / dataset, base):
            looked.append(str(d))
            if dataset == "mnist":
                if all((d / f).is_file() for pair in MNIST_FILES.values() for f in pair):
                    return d, looked
            else:
                if (d / CIFAR_NPZ).is_file():
                    return d / CIFAR_NPZ, looked
                if (d / CIFAR_PY_DIR / "test_batch").is_file():
                    return d / CIFAR_PY_DIR, looked
                if (d / "test_batch").is_file():
                    return d, looked
    return None, looked


# --------------------------------------------------------------------------- tfds builders

@functools.lru_cache(maxsize=None)
def _builders():
    """Defines the tfds builders once, lazily (importing tfds costs ~1 s)."""
    import tensorflow_datasets as tfds

    class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Reads raw files from the manual dir; raw uint8 tensors (no TF needed)."""

        # 1.1.0: records in file order (disable_shuffling), so "first N" is the file's first N.
        VERSION = tfds.core.Version("1.1.0")
        MANUAL_DOWNLOAD_INSTRUCTIONS = "Point data.data_dir / --data-dir at the raw files."
        SHAPE: tuple[int, int, int] = (0, 0, 0)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=self.__doc__,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }),
                supervised_keys=("image", "label"),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            raw = pathlib.Path(dl_manager.manual_dir)
            return {s: self._generate_examples(raw, s) for s in ("train", "test")}

        def _read(self, raw: pathlib.Path, split: str) -> Split:
            raise NotImplementedError

        def _generate_examples(self, raw, split) -> Iterator[tuple[int, dict]]:
            data = self._read(raw, split)
            for i, (img, lbl) in enumerate(zip(data.images, data.labels)):
                yield i, {"image": img, "label": int(lbl)}

    class RaeganMnist(_LocalBuilder):
        """MNIST from its four IDX files (manual dir)."""

        SHAPE = IMAGE_SHAPES["mnist"]

        def _read(self, raw, split):
            return _mnist_split(raw, split)

    class RaeganCifar10(_LocalBuilder):
        """CIFAR-10 from a Keras-layout .npz or the official python batches (manual dir)."""

        SHAPE = IMAGE_SHAPES["cifar10"]

        def _read(self, raw, split):
            # The manual dir holds either the npz or the batches folder.
            target = raw / CIFAR_NPZ if (raw / CIFAR_NPZ).is_file() else raw
            return _cifar_split(target, split)

    return {"mnist": RaeganMnist, "cifar10": RaeganCifar10}


def _cache_dir(raw: pathlib.Path) -> pathlib.Path:
    """Where the prepared ArrayRecord files of ``raw`` go: keyed by the raw
    files' path, sizes and times, so other raw files never reuse a stale build."""
    files = [raw] if raw.is_file() else sorted(p for p in raw.iterdir() if p.is_file())
    h = hashlib.sha1()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
    base = pathlib.Path(os.environ.get(ENV_CACHE_DIR) or pathlib.Path.home() / ".cache" / "raegan_jax" / "tfds")
    return base / h.hexdigest()[:12]


def prepare_local(dataset: str, raw: pathlib.Path):
    """Prepares (once) and returns the tfds builder over local raw files."""
    import tensorflow_datasets as tfds

    cls = _builders()[dataset]
    manual = raw.parent if raw.is_file() else raw
    cache = _cache_dir(raw)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Why the lock: runs started together (a sweep's --jobs, a cluster's array) would
    # each build the same folder and the second rename would fail; the first builds,
    # the others wait and find it prepared.
    # tfds logs a warning for a not-yet-prepared folder and prints "Downloading and
    # preparing" although nothing is downloaded: keep both out of the user's output.
    with filelock.FileLock(f"{cache}.lock"), _quiet_tfds():
        builder = cls(data_dir=str(cache), file_format="array_record")
        if builder.is_prepared():
            return builder
        print(f"preparing tfds dataset {builder.name} (ArrayRecord) from {raw} in "
              f"{builder.data_dir}, once", file=sys.stderr)
        tfds.disable_progress_bar()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual), try_download_gcs=False))
    return builder


@contextlib.contextmanager
def _quiet_tfds():
    from absl import logging as absl_logging
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl_logging.set_verbosity(level)


def images_used(asked: int, available: int) -> int:
    """How many of ``available`` images a run uses when its config asks for ``asked``.

    The one rule for ``data.train_examples`` / ``data.test_examples``: 0 (or less) means
    every image; asking for more than exist uses what exists (and :func:`load` says so).
    """
    return available if asked <= 0 else min(asked, available)


def train_used(cfg: Config, available: int) -> int:
    """How many training images ``cfg``'s run trains on (each epoch, when resampling)
    of ``available`` in the training split: :func:`images_used` of what the
    validation split leaves."""
    return images_used(cfg.data.train_examples, training_pool(available, cfg.data.validation_examples))


def training_pool(available: int, validation: int) -> int:
    """How many training images remain to train on (the first ones in file order)
    when the last ``validation`` are held out.

    Raises:
      DataError: the validation split would leave no image to train on.
    """
    if validation >= available:
        raise DataError(f"data.validation_examples ({validation}) must be below the "
                        f"{available} images of the training split")
    return available - validation


def _read_source(source, keys: np.ndarray) -> Split:
    """Reads the records ``keys`` (ascending indices) of a tfds data source into memory."""
    images, labels = [], []
    for start in range(0, len(keys), 4096):
        chunk = [int(k) for k in keys[start:start + 4096]]
        try:
            items = source.__getitems__(chunk)  # batched reads: ~4x faster than one by one
        except TypeError:  # data sources without a working batched read (tfds mocks)
            items = [source[k] for k in chunk]
        images.append(np.stack([np.asarray(it["image"], np.uint8) for it in items]))
        labels.append(np.asarray([int(it["label"]) for it in items], np.int64))
    if not images:
        raise DataError("the dataset split is empty")
    return Split(np.concatenate(images), np.concatenate(labels))


def subset_indices(available: int, n: int, how: str, seed: int) -> np.ndarray:
    """The ascending record indices of the ``n`` images (0 = all) a run uses of ``available``.

    ``first`` takes the first ``n`` in file order; ``sample`` draws ``n`` without
    replacement, seeded. Chosen before anything is read, so only those records are
    decoded (the MNIST presets use 3,000 of 60,000).
    """
    n = images_used(n, available)
    if n == available or how == "first":
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(available, n, replace=False))


def _sources(cfg: Config, data_dir) -> tuple[dict, str]:
    """The tfds data sources of the train and test splits (nothing read yet) and their origin."""
    d = cfg.data
    data_dir = data_dir or d.data_dir or None
    if data_dir and not pathlib.Path(data_dir).exists():
        raise DataError(f"--data-dir {data_dir} does not exist")
    raw, looked = (None, []) if d.source == "tfds" else find_raw(d.dataset, data_dir)
    if raw is not None:
        builder = prepare_local(d.dataset, raw)
        source = f"local files {raw} (tfds builder {builder.name}, ArrayRecord)"
    elif d.source == "local":
        raise DataError(_missing_message(d.dataset, looked))
    else:
        builder, source = _standard_builder(d.dataset, data_dir, allow_download=d.source == "tfds",
                                            looked=looked)
    return {s: builder.as_data_source(split=s) for s in ("train", "test")}, source


def split_sizes(cfg: Config, data_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """The (train, test) images on disk for ``cfg``'s dataset, without reading them.

    Raises:
      DataError: as :func:`load`.
    """
    sources, _ = _sources(cfg, data_dir)
    return len(sources["train"]), len(sources["test"])


def load(cfg: Config, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads the train, validation and test images the config asks for.

    Args:
      cfg: the config (``data.dataset``, ``data.source``, sizes, subset).
      data_dir: overrides ``data.data_dir``: a folder of raw files (local)
        or a tfds data dir (tfds).

    Returns:
      A :class:`Dataset` with uint8 images.

    Raises:
      DataError: nothing found, saying where it looked and what to do.
    """
    d = cfg.data
    sources, source = _sources(cfg, data_dir)
    available = (len(sources["train"]), len(sources["test"]))
    pool = training_pool(available[0], d.validation_examples)
    train = _read_source(sources["train"], subset_indices(pool, d.train_examples,
                                                          d.subset, cfg.train.seed))
    validation = None
    if d.validation_examples:
        validation = _read_source(sources["train"], np.arange(pool, available[0]))
    test = _read_source(sources["test"], subset_indices(available[1], d.test_examples,
                                                        d.subset, cfg.train.seed + 1))
    expected = IMAGE_SHAPES[d.dataset]
    if train.images.shape[1:] != expected:
        raise DataError(f"{source}: images are {train.images.shape[1:]}, expected {expected}")
    notes = []
    for name, want, have in (("train", d.train_examples, pool),
                             ("test", d.test_examples, available[1])):
        if want > have:
            notes.append(f"{name}: asked for {want} images, only {have} exist; using {have}")
    return Dataset(
        train=train, test=test, available=available, source=source,
        note="; ".join(notes), validation=validation)


def _standard_builder(dataset: str, data_dir, allow_download: bool, looked: list[str]):
    import tensorflow_datasets as tfds

    with _quiet_tfds():
        builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        if not allow_download:
            raise DataError(_missing_message(dataset, looked + [f"tfds data dir {builder.data_dir}"]))
        builder.download_and_prepare()
    return builder, f"tfds standard '{dataset}' ({builder.data_dir})"


def _missing_message(dataset: str, looked: list[str]) -> str:
    what = ("the four MNIST IDX files (train-images-idx3-ubyte.gz, ...)" if dataset == "mnist"
            else f"{CIFAR_NPZ} or the {CIFAR_PY_DIR} folder")
    return (f"no {dataset} data found; looked for {what} in: {', '.join(looked)}. "
            f"Pass --data-dir DIR (or set ${ENV_DATA_DIR}) pointing at them, or set "
            f"data.source=tfds to let tensorflow-datasets download '{dataset}' (needs network "
            f"and TensorFlow to prepare).")


load_data = load  # the name the package exports (``rj.load_data(cfg)``)


# What the data on disk allows (the report's orchestration plans with it).
# The split sizes a preset's run sees when its data is not on this machine: the
# complete MNIST, and the offline CIFAR-10 subset of ../shared/data.
FALLBACK_SPLITS = {"mnist": (60000, 10000), "cifar10": (8068, 1017)}


def available_splits(configs, data_dir=None, log=print) -> dict[str, tuple[int, int]]:
    """Dataset -> (train, test) images on disk, for the datasets of ``configs``
    (:data:`FALLBACK_SPLITS`, said through ``log``, where there is no data)."""
    sizes = {}
    for cfg in configs:
        if cfg.data.dataset not in sizes:
            try:
                sizes[cfg.data.dataset] = split_sizes(cfg, data_dir)
            except DataError as e:  # no data here: the standard sizes
                log(f"{cfg.data.dataset}: {e}; taking {FALLBACK_SPLITS[cfg.data.dataset]} images")
                sizes[cfg.data.dataset] = FALLBACK_SPLITS[cfg.data.dataset]
    return sizes
