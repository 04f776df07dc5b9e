"""Datasets: real MNIST / Fashion-MNIST, the search order, corrupt files, the regression data."""

from __future__ import annotations

import gzip
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from robustclip.data import datasets as data
from robustclip.data import idx as idx_mod
from robustclip.errors import DataError, RobustclipError

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_STEMS = [stem for pair in STEMS.values() for stem in pair]


@pytest.fixture(scope="module")
def fashion_train(data_dir):
    return data.load("fashion-mnist", "train", data_dir=data_dir)


@pytest.fixture(scope="module")
def fashion_test(data_dir):
    return data.load("fashion-mnist", "test", data_dir=data_dir)


# --------------------------------------------------------------------------- IDX helpers


def idx_images(images: np.ndarray, *, magic: int = 2051, dims: tuple[int, ...] | None = None) -> bytes:
    dims = tuple(images.shape) if dims is None else dims
    return struct.pack(">i", magic) + struct.pack(f">{len(dims)}i", *dims) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, *, magic: int = 2049, count: int | None = None) -> bytes:
    count = len(labels) if count is None else count
    return struct.pack(">ii", magic, count) + labels.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def small_real(data_dir):
    """The first 40 MNIST test images and labels, as uint8 arrays, read straight from the IDX file."""
    root = data_dir / "mnist"
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        raw_img = fh.read(16 + 40 * 784)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        raw_lab = fh.read(8 + 40)
    images = np.frombuffer(raw_img, dtype=np.uint8, offset=16).reshape(40, 28, 28).copy()
    labels = np.frombuffer(raw_lab, dtype=np.uint8, offset=8).copy()
    return images, labels


def write_dataset(folder: Path, images: np.ndarray, labels: np.ndarray, *, compress: bool = True,
                  n_train: int | None = None, n_test: int | None = None) -> Path:
    """A complete dataset folder (train and test) from small arrays; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    n_train = len(images) if n_train is None else n_train
    n_test = len(images) // 2 if n_test is None else n_test
    blobs = {
        STEMS["train"][0]: idx_images(images[:n_train]),
        STEMS["train"][1]: idx_labels(labels[:n_train]),
        STEMS["test"][0]: idx_images(images[:n_test]),
        STEMS["test"][1]: idx_labels(labels[:n_test]),
    }
    for stem, blob in blobs.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob, compresslevel=1, mtime=0))
        else:
            (folder / stem).write_bytes(blob)
    return folder


def set_file(folder: Path, stem: str, blob: bytes, *, compress: bool) -> Path:
    """Replace one file of a dataset folder (whichever form it had) with ``blob``."""
    for old in (folder / stem, folder / f"{stem}.gz"):
        if old.exists():
            old.unlink()
    path = folder / (f"{stem}.gz" if compress else stem)
    path.write_bytes(gzip.compress(blob, compresslevel=1, mtime=0) if compress else blob)
    return path


def load_from(root: Path, split: str = "train", name: str = "mnist") -> data.Split:
    return data.load(name, split, data_dir=root, download=False)


# --------------------------------------------------------------------------- real data


@pytest.mark.data
@pytest.mark.parametrize("which", ["mnist_train", "mnist_test", "fashion_train", "fashion_test"])
def test_real_splits_shape_dtype_range(which, request):
    split = request.getfixturevalue(which)
    n = 60000 if which.endswith("train") else 10000
    assert len(split) == n
    assert split.x.shape == (n, 1, 28, 28)
    assert split.x.dtype == torch.float32
    assert split.y.shape == (n,)
    assert split.y.dtype == torch.int64
    assert float(split.x.min()) == 0.0
    assert float(split.x.max()) == 1.0
    assert set(split.y.unique().tolist()) == set(range(10))
    assert split.dataset == ("mnist" if which.startswith("mnist") else "fashion-mnist")
    assert split.split == ("train" if which.endswith("train") else "test")
    assert split.source.startswith("--data-dir:")


def test_real_pixel_values_are_bytes_over_255(mnist_test):
    # Every value is k/255 for an integer k: no normalisation happened in the loader.
    scaled = mnist_test.x[:200] * 255.0
    assert torch.equal(scaled, scaled.round())


def test_real_data_content_statistics(mnist_train, fashion_train, mnist_test):
    # Well-known training-set pixel means: MNIST 0.1307, Fashion-MNIST 0.2860.
    assert float(mnist_train.x.mean()) == pytest.approx(0.1307, abs=5e-4)
    assert float(fashion_train.x.mean()) == pytest.approx(0.2860, abs=5e-4)
    # The first MNIST training label is 5 and the first test label is 7.
    assert int(mnist_train.y[0]) == 5
    assert int(mnist_test.y[0]) == 7
    # Class 1 is the most frequent MNIST training digit (6742 samples).
    assert int((mnist_train.y == 1).sum()) == 6742
    # Fashion-MNIST is balanced: 6000 per class.
    assert torch.bincount(fashion_train.y).tolist() == [6000] * 10


def test_load_caches_the_same_split(data_dir):
    first = data.load("mnist", "test", data_dir=data_dir)
    assert data.load("mnist", "test", data_dir=data_dir) is first


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_verify_reports_ok(name, data_dir):
    report = data.verify(name, data_dir)
    assert report["ok"] is True
    assert report["dataset"] == name
    assert report["origin"] == "--data-dir"
    assert Path(report["folder"]) == data_dir / name
    assert report["splits"] == {"train": {"count": 60000, "expected": 60000},
                                "test": {"count": 10000, "expected": 10000}}
    assert sorted(report["files"]) == sorted(f"{s}.gz" for s in ALL_STEMS)
    assert all(v is True for v in report["files"].values())


def test_verify_via_environment_variable(data_dir):
    # conftest sets ROBUSTCLIP_DATA to the shared data folder.
    report = data.verify("mnist")
    assert report["origin"] == "ROBUSTCLIP_DATA"
    assert report["ok"] is True


def test_verify_flags_content_that_differs_from_the_official_files(tmp_path, small_real):
    images, labels = small_real
    root = tmp_path / "data"
    write_dataset(root / "mnist", images, labels)
    report = data.verify("mnist", root)
    assert report["ok"] is False
    assert not any(report["files"].values())
    assert report["splits"]["train"] == {"count": 40, "expected": 60000}


def test_raw_sha256_table_matches_shared_readme(data_dir):
    readme = (data_dir / "README.md").read_text()
    for name, table in data.RAW_SHA256.items():
        for stem, digest in table.items():
            assert f"| {name}/{stem} | {digest} |" in readme


def test_unknown_dataset_and_split(data_dir):
    with pytest.raises(DataError, match="unknown dataset"):
        data.load("imagenet", "train", data_dir=data_dir)
    with pytest.raises(DataError, match="unknown split"):
        data.load("mnist", "val", data_dir=data_dir)
    with pytest.raises(DataError):
        data.load("mnist", "training", data_dir=data_dir)


def test_subset(mnist_test):
    sub = mnist_test.subset(17)
    assert len(sub) == 17
    assert torch.equal(sub.x, mnist_test.x[:17]) and torch.equal(sub.y, mnist_test.y[:17])
    assert mnist_test.subset(None) is mnist_test
    assert mnist_test.subset(10**6) is mnist_test


# --------------------------------------------------------------------------- train/val split


def _indexed_split(n: int) -> data.Split:
    idx = torch.arange(n)
    return data.Split(idx.float().view(n, 1), idx, "mnist", "train", "test")


def test_train_val_split_sizes_on_real_data(mnist_train):
    train, val = data.train_val_split(mnist_train, seed=0)
    assert (len(train), len(val)) == (54000, 6000)
    assert train.x.shape == (54000, 1, 28, 28) and val.x.shape == (6000, 1, 28, 28)
    assert (train.split, val.split) == ("train", "val")
    assert train.dataset == val.dataset == "mnist"
    assert train.source == val.source == mnist_train.source


def test_train_val_split_reproducible_per_seed(mnist_test):
    a_train, a_val = data.train_val_split(mnist_test, seed=3)
    b_train, b_val = data.train_val_split(mnist_test, seed=3)
    assert torch.equal(a_train.x, b_train.x) and torch.equal(a_train.y, b_train.y)
    assert torch.equal(a_val.x, b_val.x) and torch.equal(a_val.y, b_val.y)
    _, c_val = data.train_val_split(mnist_test, seed=4)
    assert not torch.equal(a_val.x, c_val.x)


def test_train_val_split_disjoint_and_complete():
    whole = _indexed_split(1000)
    train, val = data.train_val_split(whole, seed=7)
    assert (len(train), len(val)) == (900, 100)
    t, v = set(train.y.tolist()), set(val.y.tolist())
    assert len(t) == 900 and len(v) == 100
    assert t.isdisjoint(v)
    assert t | v == set(range(1000))
    # x and y stay paired.
    assert torch.equal(train.x.view(-1).long(), train.y)
    assert torch.equal(val.x.view(-1).long(), val.y)
    # Random, not the first or last 10%.
    assert v != set(range(100)) and v != set(range(900, 1000))


def test_train_val_split_other_fractions():
    whole = _indexed_split(50)
    train, val = data.train_val_split(whole, val_fraction=0.2, seed=0)
    assert (len(train), len(val)) == (40, 10)
    train, val = data.train_val_split(whole, val_fraction=0.0, seed=0)
    assert (len(train), len(val)) == (50, 0)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(DataError):
            data.train_val_split(whole, val_fraction=bad)


# --------------------------------------------------------------------------- search order


def test_small_copy_loads_like_the_real_data(tmp_path, small_real, mnist_test):
    images, labels = small_real
    root = tmp_path / "data"
    write_dataset(root / "mnist", images, labels, n_train=40, n_test=25)
    train = load_from(root, "train")
    test = load_from(root, "test")
    assert train.x.shape == (40, 1, 28, 28) and test.x.shape == (25, 1, 28, 28)
    assert torch.equal(train.x, mnist_test.x[:40]) and torch.equal(train.y, mnist_test.y[:40])
    assert train.source == f"--data-dir:{root / 'mnist'}"


def test_uncompressed_idx_folder_works(tmp_path, small_real, mnist_test):
    images, labels = small_real
    root = tmp_path / "raw"
    write_dataset(root / "mnist", images, labels, compress=False)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(ALL_STEMS)
    split = load_from(root, "train")
    assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
    assert torch.equal(split.x, mnist_test.x[:40])
    assert torch.equal(split.y, mnist_test.y[:40])


def test_explicit_data_dir_beats_environment(tmp_path, monkeypatch, small_real):
    images, labels = small_real
    env_root = tmp_path / "env"
    arg_root = tmp_path / "arg"
    write_dataset(env_root / "mnist", images, labels, n_train=20)
    write_dataset(arg_root / "mnist", images, labels, n_train=30)
    monkeypatch.setenv("ROBUSTCLIP_DATA", str(env_root))

    split = data.load("mnist", "train", data_dir=arg_root, download=False)
    assert len(split) == 30
    assert split.source == f"--data-dir:{arg_root / 'mnist'}"

    split = data.load("mnist", "train", download=False)
    assert len(split) == 20
    assert split.source == f"ROBUSTCLIP_DATA:{env_root / 'mnist'}"

    assert data.locate("mnist", arg_root, download=False) == ("--data-dir", arg_root / "mnist")
    assert data.locate("mnist", download=False) == ("ROBUSTCLIP_DATA", env_root / "mnist")


def test_incomplete_folder_falls_through_to_cache(tmp_path, monkeypatch, small_real):
    images, labels = small_real
    env_root = tmp_path / "env"
    cache = tmp_path / "cache"
    write_dataset(env_root / "mnist", images, labels, n_train=20)
    (env_root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # 3 of 4 files
    write_dataset(cache / "mnist", images, labels, n_train=25)
    monkeypatch.setenv("ROBUSTCLIP_DATA", str(env_root))
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(cache))

    assert data.locate("mnist", download=False) == ("cache", cache / "mnist")
    split = data.load("mnist", "train", download=False)
    assert len(split) == 25
    assert split.source.startswith("cache:")


def test_candidate_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCLIP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(tmp_path / "cache"))
    assert data.candidate_dirs("fashion-mnist") == [
        ("ROBUSTCLIP_DATA", tmp_path / "env" / "fashion-mnist"),
        ("cache", tmp_path / "cache" / "fashion-mnist"),
        ("debian", Path("/usr/share/datasets/fashion-mnist")),
    ]
    # An explicit folder replaces the environment variable, it does not add to it.
    assert data.candidate_dirs("mnist", tmp_path / "arg") == [
        ("--data-dir", tmp_path / "arg" / "mnist"),
        ("cache", tmp_path / "cache" / "mnist"),
        ("debian", Path("/usr/share/datasets/mnist")),
    ]
    monkeypatch.delenv("ROBUSTCLIP_DATA")
    assert [o for o, _ in data.candidate_dirs("mnist")] == ["cache", "debian"]


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ROBUSTCLIP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "robustclip"


def test_missing_everywhere_without_download_lists_what_was_tried(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(cache))
    monkeypatch.setenv("ROBUSTCLIP_NO_DOWNLOAD", "1")

    def no_network(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a download was attempted although downloads are off")

    monkeypatch.setattr(data, "fetch", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)  # what download.py calls
    calls = [
        # downloads turned off by the environment (download=None)
        (lambda: data.load("mnist", "train", data_dir=empty), "download (turned off by ROBUSTCLIP_NO_DOWNLOAD)"),
        (lambda: data.locate("mnist", empty), "download (turned off by ROBUSTCLIP_NO_DOWNLOAD)"),
        # downloads not asked for by the caller
        (lambda: data.locate("mnist", empty, download=False), "download ("),
        (lambda: data.verify("mnist", empty), "download ("),
    ]
    for call, download_note in calls:
        with pytest.raises(DataError) as info:
            call()
        msg = str(info.value)
        assert isinstance(info.value, RobustclipError)
        assert "mnist data not found" in msg
        assert f"--data-dir {empty / 'mnist'}" in msg
        assert f"cache {cache / 'mnist'}" in msg
        assert "debian /usr/share/datasets/mnist" in msg
        assert download_note in msg
        assert "\n" not in msg
        assert info.value.fix  # and names the fix
    assert not cache.exists()  # nothing was created in the cache


def test_missing_everywhere_env_variable_is_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBUSTCLIP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as info:
        data.load("fashion-mnist", "test")
    assert f"ROBUSTCLIP_DATA {tmp_path / 'nowhere' / 'fashion-mnist'}" in str(info.value)


# --------------------------------------------------------------------------- corrupt files


def _assert_names(exc: pytest.ExceptionInfo, *paths: Path) -> None:
    assert isinstance(exc.value, DataError)
    for path in paths:
        assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.fixture
def good_root(tmp_path, small_real):
    """A valid small dataset folder, unique to this test (so the parse cache never hits)."""
    images, labels = small_real
    root = tmp_path / "data"
    write_dataset(root / "mnist", images, labels)
    return root


IMG = STEMS["train"][0]
LAB = STEMS["train"][1]


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_wrong_magic_number(good_root, small_real, compress):
    images, labels = small_real
    folder = good_root / "mnist"
    path = set_file(folder, IMG, idx_images(images, magic=2049), compress=compress)
    with pytest.raises(DataError, match="magic number 2049") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_wrong_magic_number_in_labels(good_root, small_real):
    images, labels = small_real
    path = set_file(good_root / "mnist", LAB, idx_labels(labels, magic=2051), compress=True)
    with pytest.raises(DataError, match="magic") as info:
        load_from(good_root)
    _assert_names(info, path)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_truncated_idx_content(good_root, small_real, compress):
    images, labels = small_real
    blob = idx_images(images)[:-100]
    path = set_file(good_root / "mnist", IMG, blob, compress=compress)
    with pytest.raises(DataError, match="truncated") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_file_shorter_than_header(good_root):
    path = set_file(good_root / "mnist", LAB, b"\x00\x00\x08", compress=False)
    with pytest.raises(DataError, match="truncated") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_empty_file(good_root):
    path = set_file(good_root / "mnist", IMG, b"", compress=False)
    with pytest.raises(DataError) as info:
        load_from(good_root)
    _assert_names(info, path)


def test_truncated_gzip_stream(good_root):
    folder = good_root / "mnist"
    path = folder / f"{IMG}.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as info:
        load_from(good_root)
    _assert_names(info, path)


def test_image_label_count_mismatch(good_root, small_real):
    images, labels = small_real
    lab = set_file(good_root / "mnist", LAB, idx_labels(labels[:39]), compress=True)
    img = good_root / "mnist" / f"{IMG}.gz"
    with pytest.raises(DataError, match="40 images but .* 39 labels") as info:
        load_from(good_root)
    _assert_names(info, img, lab)


@pytest.mark.parametrize("dims", [(40, 27, 28), (20, 28, 56), (40, 28, 27)])
def test_wrong_image_size(good_root, small_real, dims):
    images, _ = small_real
    pixels = images.reshape(-1)[: dims[0] * dims[1] * dims[2]]
    blob = idx_images(pixels, dims=dims)
    path = set_file(good_root / "mnist", IMG, blob, compress=True)
    with pytest.raises(DataError, match=f"{dims[1]}x{dims[2]}, expected 28x28") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_non_gzip_file_named_gz(good_root, small_real):
    images, _ = small_real
    path = good_root / "mnist" / f"{IMG}.gz"
    path.write_bytes(idx_images(images))  # plain IDX bytes under a .gz name
    with pytest.raises(DataError) as info:
        load_from(good_root)
    _assert_names(info, path)


def test_text_file_named_gz(good_root):
    path = good_root / "mnist" / f"{LAB}.gz"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(DataError) as info:
        load_from(good_root)
    _assert_names(info, path)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_extra_trailing_bytes(good_root, small_real, compress):
    images, _ = small_real
    path = set_file(good_root / "mnist", IMG, idx_images(images) + b"\x00" * 7, compress=compress)
    with pytest.raises(DataError, match="7 bytes past the end") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_extra_trailing_bytes_in_labels(good_root, small_real):
    _, labels = small_real
    path = set_file(good_root / "mnist", LAB, idx_labels(labels) + b"\x01", compress=False)
    with pytest.raises(DataError, match="past the end") as info:
        load_from(good_root)
    _assert_names(info, path)


@pytest.mark.parametrize("bad", [10, 255])
def test_labels_out_of_range(good_root, small_real, bad):
    _, labels = small_real
    broken = labels.copy()
    broken[13] = bad
    path = set_file(good_root / "mnist", LAB, idx_labels(broken), compress=True)
    with pytest.raises(DataError, match=f"label {bad}, outside 0..9") as info:
        load_from(good_root)
    _assert_names(info, path)


def test_corruption_in_test_split_is_reported_for_test_files(good_root, small_real):
    images, _ = small_real
    path = set_file(good_root / "mnist", STEMS["test"][0], idx_images(images, magic=1234), compress=True)
    assert len(load_from(good_root, "train")) == 40  # train files are fine
    with pytest.raises(DataError, match="magic number 1234") as info:
        load_from(good_root, "test")
    _assert_names(info, path)


def test_verify_raises_on_a_corrupt_file(good_root, small_real):
    _, labels = small_real
    path = set_file(good_root / "mnist", LAB, idx_labels(labels, magic=7), compress=True)
    with pytest.raises(DataError) as info:
        data.verify("mnist", good_root)
    _assert_names(info, path)


def test_corrupt_deflate_stream(good_root):
    """A .gz whose compressed data is damaged (bit rot, a bad copy) must be a DataError too.

    Bug: data._read_bytes catches OSError/EOFError/BadGzipFile, but a damaged
    deflate stream raises zlib.error, which is none of these, so it escapes raw.
    """
    path = good_root / "mnist" / f"{IMG}.gz"
    blob = bytearray(path.read_bytes())
    # gzip.compress(mtime=0) writes a 10-byte header with no file name; byte 10
    # starts the first deflate block. Block type 3 is reserved: always invalid.
    assert blob[3] == 0  # no optional header fields
    blob[10] |= 0b110
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as info:
        load_from(good_root)
    _assert_names(info, path)


def test_parse_idx_directly():
    good = idx_labels(np.arange(10, dtype=np.uint8))
    out = idx_mod.parse_idx(good, Path("x"), kind="labels")
    assert out.dtype == np.uint8 and out.tolist() == list(range(10))
    imgs = idx_mod.parse_idx(idx_images(np.zeros((2, 28, 28), np.uint8)), Path("y"), kind="images")
    assert imgs.shape == (2, 28, 28)
    with pytest.raises(DataError, match="magic"):
        idx_mod.parse_idx(good, Path("x"), kind="images")


def test_parse_cache_can_be_cleared(good_root):
    first = load_from(good_root)
    assert load_from(good_root) is first
    data._load_cached.cache_clear()
    again = load_from(good_root)
    assert again is not first
    assert torch.equal(again.x, first.x)


# --------------------------------------------------------------------------- regression


def test_regression_shapes_and_dtypes():
    for split, n in (("train", 40), ("val", 40), ("test", 1000)):
        s = data.regression(split)
        assert len(s) == n
        assert s.x.shape == (n, 1) and s.y.shape == (n, 1)
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.float32
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert s.dataset == "regression" and s.split == split


def test_regression_reproducible_and_seeded():
    a, b = data.regression("train"), data.regression("train")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    v1, v2 = data.regression("val"), data.regression("val")
    assert torch.equal(v1.x, v2.x) and torch.equal(v1.y, v2.y)
    assert not torch.equal(a.x, v1.x)  # different seeds
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a.x, torch.rand(40, 1, generator=g))


def test_regression_train_is_noisy_around_the_target():
    s = data.regression("train")
    resid = s.y - data.regression_target(s.x)
    assert not torch.allclose(resid, torch.zeros_like(resid))
    assert 0.1 < float(resid.std()) < 0.45  # noise sd 0.25
    quiet = data.regression("train", noise=0.0)
    assert torch.equal(quiet.y, data.regression_target(quiet.x))


def test_regression_test_split_is_noise_free_grid():
    s = data.regression("test")
    assert torch.equal(s.y, data.regression_target(s.x))
    assert float(s.x[0]) == 0.0 and float(s.x[-1]) == 1.0
    assert bool((s.x[1:] > s.x[:-1]).all())
    small = data.regression("test", n=11)
    assert small.x.shape == (11, 1)
    torch.testing.assert_close(small.x.view(-1), torch.linspace(0, 1, 11))


def test_regression_target_values():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    expected = torch.tensor([0.0, 1.0 - 0.3, 0.0, 0.0])
    torch.testing.assert_close(data.regression_target(x), expected, atol=1e-6, rtol=0)


def test_regression_via_load_and_bad_split():
    assert torch.equal(data.load("regression", "val").y, data.regression("val").y)
    assert len(data.load("regression", "test")) == 1000
    with pytest.raises(DataError):
        data.regression("holdout")
    with pytest.raises(DataError):
        data.load("regression", "holdout")


def test_regression_n_parameter():
    s = data.regression("train", n=7)
    assert s.x.shape == (7, 1)
    assert torch.equal(s.x, data.regression("train", n=7).x)
    assert len(data.regression("val", n=5)) == 5
