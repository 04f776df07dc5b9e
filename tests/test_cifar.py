"""CIFAR-10/100 from the binary archives: the record format, where the data is found, the checked, resumable download
(from a test HTTP server on 127.0.0.1), and every way a local copy can be broken. Synthetic files in the official
layout only; no test needs the network or the real dataset (record counts are shrunk, except where one test parses a
full-size batch)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import assert_one_line_error, run_cli

from robustclip.data import cifar, download
from robustclip.data import datasets as data
from robustclip.errors import DataError

SMALL = {"train": 6, "test": 5}  # records per member file


@pytest.fixture(autouse=True)
def _small_layouts(monkeypatch):
    """Shrunk layouts (6 records per train file, 5 in the test file), no waits between retries, fresh caches."""
    for name in cifar.NAMES:
        monkeypatch.setitem(cifar.LAYOUTS, name, cifar.with_counts(name, SMALL))
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()


def _records(lay: cifar.Layout, n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records in the official format: (bytes, images uint8 (n,3,32,32), fine labels (n,))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    fine = rng.integers(0, lay.classes, size=n, dtype=np.uint8)
    heads = [fine[:, None]] if lay.label_bytes == 1 else [(fine // 5)[:, None], fine[:, None]]
    rec = np.concatenate([*heads, images.reshape(n, cifar.PIXELS)], axis=1)
    assert rec.shape == (n, lay.record)
    return rec.tobytes(), images, fine


def _bins(name: str, seed: int = 0) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    lay = cifar.LAYOUTS[name]
    out = {}
    for i, members in enumerate(lay.splits.values()):
        for j, (f, n) in enumerate(members):
            out[f] = _records(lay, n, seed * 100 + i * 10 + j)
    return out


def _write_folder(folder: Path, name: str, seed: int = 0) -> dict[str, Any]:
    bins = _bins(name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f, (raw, _, _) in bins.items():
        (folder / f).write_bytes(raw)
    return bins


def _tarball(name: str, bins: dict[str, Any], *, skip: str | None = None) -> bytes:
    """A ``.tar.gz`` in the official layout: ``<folder>/`` with the ``.bin`` members and a text file."""
    lay = cifar.LAYOUTS[name]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        d = tarfile.TarInfo(lay.folder)
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        members = {f: raw for f, (raw, _, _) in bins.items() if f != skip}
        members["batches.meta.txt" if name == "cifar10" else "fine_label_names.txt"] = b"airplane\n"
        for f, raw in members.items():
            info = tarfile.TarInfo(f"{lay.folder}/{f}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _expected(name: str, bins: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    files = [f for f, _ in cifar.LAYOUTS[name].splits[split]]
    x = np.concatenate([bins[f][1] for f in files]).astype(np.float32) / 255
    y = np.concatenate([bins[f][2] for f in files]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- the record format


@pytest.mark.parametrize("name", cifar.NAMES)
def test_official_records_load_as_planar_rgb_in_unit_range(tmp_path, name):
    lay = cifar.LAYOUTS[name]
    bins = _write_folder(tmp_path / name / lay.folder, name)
    for split, n in (("train", lay.count("train")), ("test", lay.count("test"))):
        s = data.load(name, split, data_dir=tmp_path, download=False)
        x, y = _expected(name, bins, split)
        assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.float32
        assert s.y.shape == (n,) and s.y.dtype == torch.int64
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
        assert torch.equal(s.x, x) and torch.equal(s.y, y)
        assert s.dataset == name and s.split == split
    assert data.REGISTRY[name].classes == lay.classes and data.REGISTRY[name].shape == (3, 32, 32)


def test_bytes_of_one_record_land_where_the_format_says():
    lay = cifar.LAYOUTS["cifar100"]
    rec = bytearray(lay.record)
    rec[0], rec[1] = 19, 97  # coarse, fine
    rec[2] = 10  # red (0, 0)
    rec[2 + 31] = 11  # red (0, 31)
    rec[2 + 32] = 12  # red (1, 0)
    rec[2 + 1024] = 20  # green (0, 0)
    rec[2 + 2048 + 1023] = 30  # blue (31, 31)
    images, labels = cifar.parse_records(bytes(rec), "one", lay, 1)
    assert labels.tolist() == [97]  # the fine label is the class
    assert images[0, 0, 0, 0] == 10 and images[0, 0, 0, 31] == 11 and images[0, 0, 1, 0] == 12
    assert images[0, 1, 0, 0] == 20 and images[0, 2, 31, 31] == 30 and int(images.sum()) == 83


def test_a_full_size_batch_parses():
    lay = cifar.with_counts("cifar10", {})  # the official counts
    raw, images, fine = _records(lay, 10_000, seed=3)
    got_images, got_labels = cifar.parse_records(raw, "test_batch.bin", lay, lay.count("test"))
    assert got_images.shape == (10_000, 3, 32, 32) and np.array_equal(got_images, images)
    assert np.array_equal(got_labels, fine)
    assert lay.count("train") == 50_000 and cifar.LAYOUTS["cifar100"].record == 3074


def test_bins_directly_in_the_dataset_folder_and_extracted_folder_beats_tarball(tmp_path):
    bins = _write_folder(tmp_path / "cifar10", "cifar10", seed=1)
    assert torch.equal(data.load("cifar10", "test", data_dir=tmp_path, download=False).y,
                       _expected("cifar10", bins, "test")[1])
    other = tmp_path / "other" / "cifar10"
    other.mkdir(parents=True)
    bins2 = _write_folder(other / "cifar-10-batches-bin", "cifar10", seed=2)
    (other / "cifar-10-binary.tar.gz").write_bytes(b"not read: the extracted folder comes first")
    assert torch.equal(data.load("cifar10", "train", data_dir=other.parent, download=False).x,
                       _expected("cifar10", bins2, "train")[0])


@pytest.mark.parametrize("name", cifar.NAMES)
def test_tarball_is_read_by_member_name_without_writing(tmp_path, name):
    lay = cifar.LAYOUTS[name]
    bins = _bins(name, seed=4)
    folder = tmp_path / name
    folder.mkdir()
    (folder / lay.archive).write_bytes(_tarball(name, bins))
    before = _listing(tmp_path)
    s = data.load(name, "train", data_dir=tmp_path, download=False)
    assert torch.equal(s.x, _expected(name, bins, "train")[0])
    assert _listing(tmp_path) == before  # nothing extracted next to the user's tarball


# --------------------------------------------------------------------------- broken local copies


def _broken_folder(tmp_path: Path, name: str = "cifar10") -> Path:
    folder = tmp_path / name / cifar.LAYOUTS[name].folder
    _write_folder(folder, name)
    return folder


@pytest.mark.parametrize(("damage", "words"), [
    (lambda raw, rec: raw[:-1], ["not a whole number of 3,073-byte CIFAR-10 records"]),
    (lambda raw, rec: raw + bytes(rec), ["holds 6 records, expected 5"]),
    (lambda raw, rec: raw[:-rec], ["holds 4 records, expected 5"]),
    (lambda raw, rec: b"", ["holds 0 records, expected 5"]),
    (lambda raw, rec: bytes([10]) + raw[1:], ["has label 10, outside 0..9"]),
])
def test_broken_record_file_is_one_line(tmp_path, damage, words):
    folder = _broken_folder(tmp_path)
    f = folder / "test_batch.bin"
    f.write_bytes(damage(f.read_bytes(), 3073))
    with pytest.raises(DataError) as info:
        data.load("cifar10", "test", data_dir=tmp_path, download=False)
    for w in words:
        assert w in str(info.value)
    assert "test_batch.bin" in str(info.value)
    rc, out, err = run_cli(["data", "--check", "--dataset", "cifar10", "--data-dir", tmp_path])
    assert rc == 2 and "BROKEN" in out and words[0] in out, out + err


def test_train_on_a_broken_file_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    folder = _broken_folder(tmp_path)
    (folder / "data_batch_2.bin").write_bytes((folder / "data_batch_2.bin").read_bytes()[:-100])
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["train", "--dataset", "cifar10", "--data-dir", tmp_path, "--epochs", "1",
                          "--out", "m.safetensors"])
    assert_one_line_error(rc, err, "data_batch_2.bin is 18,338 bytes, not a whole number of 3,073-byte")
    assert not (tmp_path / "m.safetensors").exists()


def test_cifar100_coarse_label_out_of_range(tmp_path):
    folder = _broken_folder(tmp_path, "cifar100")
    raw = bytearray((folder / "test.bin").read_bytes())
    raw[0] = 20
    (folder / "test.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="coarse label 20, outside 0..19"):
        data.load("cifar100", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing-member", "python-version"])
def test_broken_tarball_is_one_line(tmp_path, damage):
    name = "cifar10"
    lay = cifar.LAYOUTS[name]
    blob = _tarball(name, _bins(name), skip="test_batch.bin" if damage == "missing-member" else None)
    if damage == "truncated":
        blob = blob[: len(blob) * 2 // 3]
    elif damage == "garbage":
        blob = b"\x1f\x8b" + bytes(range(256)) * 50
    elif damage == "python-version":  # the pickled version's folder: never read
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"\x80\x04N."))
        blob = buf.getvalue()
    (tmp_path / name).mkdir()
    (tmp_path / name / lay.archive).write_bytes(blob)
    before = _listing(tmp_path)
    rc, out, err = run_cli(["data", "--check", "--dataset", name, "--data-dir", tmp_path])
    assert rc == 2 and "BROKEN" in out and "Traceback" not in out + err
    assert _listing(tmp_path) == before
    with pytest.raises(DataError) as info:
        data.load(name, "test", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / name / lay.archive) in msg
    assert ("corrupt or truncated" in msg) if damage in ("truncated", "garbage") else ("has no" in msg)


def test_incomplete_folder_is_not_found_and_names_what_to_put_there(tmp_path):
    folder = _broken_folder(tmp_path)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError) as info:
        data.load("cifar10", "test", data_dir=tmp_path, download=False)
    assert "cifar10 data not found" in str(info.value)
    assert "cifar-10-binary.tar.gz or its extracted cifar-10-batches-bin/" in str(info.value)


# --------------------------------------------------------------------------- data --check


def test_data_check_reports_structure_and_whether_content_is_official(tmp_path, monkeypatch):
    bins = _write_folder(tmp_path / "cifar100" / "cifar-100-binary", "cifar100")
    rc, out, err = run_cli(["data", "--check", "--dataset", "cifar100", "--data-dir", tmp_path])
    assert rc == 2 and "train 6, test 5" in out and "content MISMATCH (structure valid" in out
    official = {f: hashlib.md5(raw).hexdigest() for f, (raw, _, _) in bins.items()}
    lay = cifar.LAYOUTS["cifar100"]
    monkeypatch.setitem(cifar.LAYOUTS, "cifar100", cifar.with_counts("cifar100", SMALL, member_md5=official))
    assert lay.member_md5 != official
    rc, out, err = run_cli(["data", "--check", "--dataset", "cifar100", "--data-dir", tmp_path])
    assert rc == 0 and "content OK (MD5 matches the official files)" in out, out + err


def test_data_check_on_a_tarball_compares_its_md5(tmp_path, monkeypatch):
    blob = _tarball("cifar10", _bins("cifar10"))
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(blob)
    rc, out, _ = run_cli(["data", "--check", "--dataset", "cifar10", "--data-dir", tmp_path])
    assert rc == 2 and "MISMATCH" in out and "cifar-10-binary.tar.gz" in out
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10",
                        cifar.with_counts("cifar10", SMALL, archive_md5=hashlib.md5(blob).hexdigest()))
    rc, out, _ = run_cli(["data", "--check", "--dataset", "cifar10", "--data-dir", tmp_path])
    assert rc == 0 and "content OK" in out


def test_data_check_all_treats_missing_cifar_as_optional(tmp_path, data_dir):
    for name in ("mnist", "fashion-mnist"):  # the real MNIST data, and no CIFAR (whatever the shared folder holds)
        (tmp_path / name).symlink_to(data_dir / name)
    rc, out, err = run_cli(["data", "--check", "--data-dir", tmp_path])
    assert rc == 0, out + err
    assert "cifar10        not found (optional)" in out


# --------------------------------------------------------------------------- download from a local server


class _Server:
    """A 127.0.0.1 HTTP server for one file, honouring ``Range: bytes=N-``; it can cut its first answer short."""

    def __init__(self, files: dict[str, bytes], *, cut_first: int | None = None) -> None:
        self.files = files
        self.cut_first = cut_first
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                owner.requests.append((self.path, rng))
                blob = owner.files.get(self.path)
                if blob is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                if start >= len(blob):
                    self.send_error(416)
                    return
                body = blob[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_first is not None and len(owner.requests) == 1:
                    body = body[: owner.cut_first]  # then the connection closes: a broken transfer
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Iterator[Path]:
    c = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(c))
    monkeypatch.setenv("ROBUSTCLIP_NO_DOWNLOAD", "0")
    yield c


def _serve(monkeypatch, name: str, blob: bytes, url: str, *, md5: str | None = None,
           urls: tuple[str, ...] = ()) -> None:
    """Point ``name``'s layout at the test server (and, as the real one, at the published digest of ``blob``)."""
    lay = cifar.LAYOUTS[name]
    monkeypatch.setitem(cifar.LAYOUTS, name, cifar.with_counts(
        name, SMALL, archive_md5=md5 or hashlib.md5(blob).hexdigest(), archive_bytes=len(blob),
        urls=(*urls, f"{url}/{lay.archive}")))


@pytest.mark.parametrize("name", cifar.NAMES)
def test_download_resumes_after_a_broken_transfer_checks_and_extracts(tmp_path, cache, monkeypatch, name):
    lay = cifar.LAYOUTS[name]
    bins = _bins(name, seed=7)
    blob = _tarball(name, bins)
    empty = tmp_path / "empty"
    empty.mkdir()
    with _Server({f"/{lay.archive}": blob}, cut_first=len(blob) // 3) as srv:
        _serve(monkeypatch, name, blob, srv.url)
        s = data.load(name, "test", data_dir=empty)  # downloads are on (ROBUSTCLIP_NO_DOWNLOAD=0)
    assert torch.equal(s.x, _expected(name, bins, "test")[0]) and torch.equal(s.y, _expected(name, bins, "test")[1])
    assert s.source.startswith("download:")
    assert srv.requests == [(f"/{lay.archive}", None), (f"/{lay.archive}", f"bytes={len(blob) // 3}-")]
    assert _listing(cache) == [name, f"{name}/{lay.folder}", *sorted(f"{name}/{lay.folder}/{f}" for f in lay.files())]
    data._load_cached.cache_clear()
    with _Server({}) as srv2:  # found in the cache now: no request at all
        _serve(monkeypatch, name, blob, srv2.url)
        assert torch.equal(data.load(name, "train", data_dir=empty).x, _expected(name, bins, "train")[0])
    assert srv2.requests == []


def test_download_continues_a_partial_file_left_by_an_earlier_run(tmp_path, cache, monkeypatch):
    blob = _tarball("cifar10", _bins("cifar10"))
    part = cache / "cifar10" / "cifar-10-binary.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(blob[:1000])
    with _Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        _serve(monkeypatch, "cifar10", blob, srv.url)
        data.load("cifar10", "test", data_dir=tmp_path)
    assert srv.requests == [("/cifar-10-binary.tar.gz", "bytes=1000-")]
    assert not part.exists()


def test_download_tries_the_next_mirror_and_a_stale_partial_file_is_restarted(tmp_path, cache, monkeypatch):
    blob = _tarball("cifar10", _bins("cifar10"))
    part = cache / "cifar10" / "cifar-10-binary.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)  # not a prefix of the file: the MD5 fails, the next attempt starts from zero
    with _Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        _serve(monkeypatch, "cifar10", blob, srv.url, urls=(f"{srv.url}/missing/cifar-10-binary.tar.gz",))
        data.load("cifar10", "test", data_dir=tmp_path)
    assert srv.requests == [("/missing/cifar-10-binary.tar.gz", "bytes=500-"),
                            ("/cifar-10-binary.tar.gz", "bytes=500-"), ("/cifar-10-binary.tar.gz", None)]


def test_download_with_a_wrong_checksum_keeps_nothing(tmp_path, cache, monkeypatch):
    blob = _tarball("cifar10", _bins("cifar10"))
    with _Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        _serve(monkeypatch, "cifar10", blob, srv.url, md5="0" * 32)
        rc, _, err = run_cli(["data", "--check", "--dataset", "cifar10", "--download", "--data-dir", tmp_path])
    assert rc == 2 and f"MD5 {hashlib.md5(blob).hexdigest()} does not match the published {'0' * 32}" in err + _
    assert len(srv.requests) == download.RETRIES
    assert _listing(cache) == ["cifar10"]


@pytest.mark.parametrize("damage", ["truncated", "bad-records"])
def test_downloaded_archive_that_cannot_be_extracted_leaves_nothing(tmp_path, cache, monkeypatch, damage):
    bins = _bins("cifar10")
    if damage == "bad-records":
        raw, images, fine = bins["data_batch_2.bin"]
        bins["data_batch_2.bin"] = (raw[:-7], images, fine)
    blob = _tarball("cifar10", bins)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    with _Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        _serve(monkeypatch, "cifar10", blob, srv.url)  # the test publishes the damaged file's own digest
        with pytest.raises(DataError) as info:
            data.load("cifar10", "test", data_dir=tmp_path)
    assert ("corrupt or truncated" if damage == "truncated" else "not a whole number of 3,073-byte") in str(info.value)
    assert _listing(cache) == ["cifar10"]  # no archive, no partial extraction, no temporary folder


def test_server_sending_more_than_the_published_size_is_cut_off(tmp_path, cache, monkeypatch):
    blob = _tarball("cifar10", _bins("cifar10"))
    with _Server({"/cifar-10-binary.tar.gz": blob + bytes(5000)}) as srv:
        _serve(monkeypatch, "cifar10", blob, srv.url)
        with pytest.raises(DataError, match="more than the"):
            data.load("cifar10", "test", data_dir=tmp_path)
    assert _listing(cache) == ["cifar10"]


def test_no_download_is_respected(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("ROBUSTCLIP_NO_DOWNLOAD", "1")
    with _Server({}) as srv:
        _serve(monkeypatch, "cifar10", b"", srv.url)
        with pytest.raises(DataError, match="turned off by ROBUSTCLIP_NO_DOWNLOAD"):
            data.load("cifar10", "test", data_dir=tmp_path)
    assert srv.requests == []


def test_mnist_downloads_through_the_same_checked_downloader(tmp_path, cache, monkeypatch):
    import gzip

    stems = [stem for pair in data._FILES.values() for stem in pair]
    raw = {s: f"payload of {s}".encode() for s in stems}
    gz = {s: gzip.compress(raw[s]) for s in stems}
    with _Server({f"/{s}.gz": gz[s] for s in stems}, cut_first=5) as srv:
        monkeypatch.setitem(data._MIRRORS, "mnist", (f"{srv.url}/",))
        monkeypatch.setitem(data._GZ_MD5, "mnist", {s: hashlib.md5(gz[s]).hexdigest() for s in stems})
        monkeypatch.setitem(data.RAW_SHA256, "mnist", {s: hashlib.sha256(raw[s]).hexdigest() for s in stems})
        data.fetch("mnist", cache / "mnist", progress=False)
        assert (f"/{stems[0]}.gz", "bytes=5-") in srv.requests  # the first transfer broke and was resumed
        assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(f"{s}.gz" for s in stems)
        (cache / "mnist" / f"{stems[0]}.gz").unlink()
        monkeypatch.setitem(data.RAW_SHA256, "mnist", {s: "0" * 64 for s in stems})
        with pytest.raises(DataError, match="content SHA-256 does not match"):
            data.fetch("mnist", cache / "mnist", progress=False)
    assert not (cache / "mnist" / f"{stems[0]}.gz").exists()
    assert not [p for p in (cache / "mnist").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- the commands accept CIFAR


TINY_SUITE = """\
name = "tiny"
n = 5
batch_size = 5
seed = 0

[eps]
Linf = [0.01]

[[attack]]
type = "clean"

[[attack]]
type = "fgsm"
norm = "Linf"
"""


@pytest.mark.parametrize("name", cifar.NAMES)
def test_train_evaluate_and_sweep_accept_cifar(tmp_path, monkeypatch, name):
    from robustclip.sweeps import planning

    _write_folder(tmp_path / name / cifar.LAYOUTS[name].folder, name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY_SUITE, encoding="utf-8")
    rc, _, err = run_cli(["train", "--dataset", name, "--data-dir", tmp_path, "--epochs", "1", "--batch-size", "10",
                          "--out", "m.safetensors"])
    assert rc == 0, err
    rc, _, err = run_cli(["evaluate", "m.safetensors", "--suite", "tiny.toml", "--data-dir", tmp_path,
                          "--out", "ev", "--quiet"])
    assert rc == 0, err
    assert (tmp_path / "ev" / "results.csv").is_file()
    common = ["--suite", "tiny.toml", "--baseline", "b.json", "--data-dir", tmp_path, "--dataset", name,
              "--lipschitz", "off"]
    rc, out, err = run_cli(["check", "m.safetensors", *common, "--update-baseline"])
    assert rc == 0, out + err
    rc, out, err = run_cli(["check", "m.safetensors", *common])
    assert rc == 0, out + err
    runs = planning.plan({"name": "x", "dataset": name, "method": [{"reg": "none"}], "epochs": 1})
    assert runs and runs[0].train["dataset"] == name
    rc, out, _ = run_cli(["evaluate", "--help"])
    assert rc == 0 and "FILE|DIR" in out and "cifar10" in out


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(blocker))
    monkeypatch.setenv("ROBUSTCLIP_NO_DOWNLOAD", "0")
    with _Server({}) as srv:
        _serve(monkeypatch, "cifar10", b"", srv.url)
        rc, out, err = run_cli(["data", "--check", "--dataset", "cifar10", "--download", "--data-dir", tmp_path])
    assert rc == 2 and "download (cannot write" in out and "Traceback" not in out + err
    assert srv.requests == []


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 4), cut=st.integers(0, 3 * 3074), cifar100=st.booleans(), seed=st.integers(0, 2**16))
def test_parse_records_accepts_exactly_whole_records_of_the_expected_count(n, cut, cifar100, seed):
    lay = cifar.LAYOUTS["cifar100" if cifar100 else "cifar10"]
    raw, images, fine = _records(lay, n, seed)
    images_got, labels_got = cifar.parse_records(raw, "f", lay, n)
    assert np.array_equal(images_got, images) and np.array_equal(labels_got, fine)
    damaged = raw[: len(raw) - cut] if 0 < cut <= len(raw) else raw + bytes(lay.record)
    with pytest.raises(DataError):
        cifar.parse_records(damaged, "f", lay, n)
