"""Readers bound before they allocate or inflate (issue 23, items 7-9): ``.npz`` shapes and deflate bombs, deep
safetensors headers, pickles named ``.safetensors``, unreadable checkpoints, labels checked in their source dtype,
bf16 and other dtypes. Each ends in one line (exit 2 on the command line), fast and in bounded memory."""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from tiny import assert_one_line_error, run_cli

from robustclip.checkpoints import foreign as loading
from robustclip.checkpoints import format as checkpoints
from robustclip.checkpoints.format import CheckpointMeta
from robustclip.core import bounded
from robustclip.data import userdata
from robustclip.errors import CheckpointError, RobustclipError
from robustclip.models import specs as models

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"arch": "fc", "sizes": [784, 16, 10], "activation": "sigmoid"}
X = np.random.default_rng(0).random((6, 1, 28, 28)).astype(np.float32)
Y = np.arange(6) % 3


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes | list[bytes]]) -> Path:
    """An .npz written member by member (a list of chunks is streamed: a bomb never sits in memory whole)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            with zf.open(name, "w", force_zip64=True) as fh:
                for chunk in ([body] if isinstance(body, bytes) else body):
                    fh.write(chunk)
    return path


def _y_member() -> bytes:
    buf = io.BytesIO()
    np.save(buf, Y)
    return buf.getvalue()


def test_npz_declaring_a_huge_shape_is_refused_before_allocating(tmp_path):
    p = _zip(tmp_path / "huge.npz", {"x.npy": _npy_header((10**12, 1)) + bytes(64), "y.npy": _y_member()})
    with pytest.raises(RobustclipError, match=r"declares shape \(1000000000000, 1\)"):
        userdata.load_data_file(p)


def _bomb(tmp_path: Path, declared: tuple[int, ...], inflated_mib: int) -> Path:
    zeros = bytes(1 << 20)
    chunks = [_npy_header(declared)] + [zeros] * inflated_mib
    return _zip(tmp_path / "bomb.npz", {"x.npy": chunks, "y.npy": _y_member()})


def test_deflate_bomb_declaring_a_huge_shape_is_refused_from_its_header(tmp_path):
    p = _bomb(tmp_path, (2**31, 1, 2, 2), 64)  # declares 32 GiB; 64 MiB of zeros compress to about 64 kB
    assert p.stat().st_size < 1 << 20
    with pytest.raises(RobustclipError, match="declares shape"):
        userdata.load_data_file(p)


def test_deflate_bomb_holding_more_than_it_declares_stops_early(tmp_path):
    p = _bomb(tmp_path, (6, 1, 28, 28), 256)  # declares 18 kB, inflates to 256 MiB: read stops after 18 kB
    with pytest.raises(RobustclipError, match="more data than its header declares"):
        userdata.load_data_file(p)


def test_npz_bomb_in_a_real_process_is_one_line_in_bounded_memory(tmp_path):
    """The issue's 8 GiB bomb, through the command line: exit 2, one line, far less memory than the bomb."""
    p = _bomb(tmp_path, (2**30, 2), 16)
    torch.manual_seed(0)
    checkpoints.save(models.build(SMALL), tmp_path / "m.safetensors", CheckpointMeta(dataset="mnist"))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from robustclip.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "evaluate", "m.safetensors", "--data", str(p), "--suite",
                           "ci-quick", "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_line_error(proc.returncode, proc.stderr, "declares shape")
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 < 3 << 30


def test_npz_truncated_member_is_one_line(tmp_path):
    p = _zip(tmp_path / "short.npz", {"x.npy": _npy_header((6, 1, 28, 28)) + bytes(100), "y.npy": _y_member()})
    with pytest.raises(RobustclipError, match="less data than its header declares"):
        userdata.load_data_file(p)


def test_npz_reads_what_numpy_writes_fortran_order_included(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(X[:, 0]), y=Y)
    split = userdata.load_data_file(tmp_path / "f.npz")
    assert torch.equal(split.x, torch.from_numpy(X[:, 0].copy()))
    assert split.y.tolist() == Y.tolist()


@pytest.mark.parametrize("y,words", [
    (np.array([0, 1, 2**64 - 1, 0, 1, 2], dtype=np.uint64), ["18446744073709551615"]),
    (np.array([0, 1, 1e20, 0, 1, 2]), ["1e+20"]),
    (np.array([0, 1, 3.7, 0, 1, 2]), ["not whole numbers"]),
    (np.array([0, 1, np.nan, 0, 1, 2]), ["non-finite"]),
    (np.array([0, 1, np.inf, 0, 1, 2]), ["non-finite"]),
    (np.array([0, -1, 2, 0, 1, 2], dtype=np.int8), ["negative label -1"]),
    (np.array([0, 1, 2**40, 0, 1, 2], dtype=np.int64), ["1099511627776"]),
], ids=["uint64-max", "float-1e20", "float-3.7", "nan", "inf", "int8-negative", "int64-2^40"])
def test_labels_are_checked_in_their_source_dtype(tmp_path, y, words):
    np.savez(tmp_path / "d.npz", x=X, y=y)
    with pytest.raises(RobustclipError, match="|".join(map(__import__("re").escape, words))):
        userdata.load_data_file(tmp_path / "d.npz")


def test_uint64_label_beyond_classes_is_one_line_on_the_command_line(tmp_path, monkeypatch):
    """The issue's crash: 2**64 - 1 as uint64 passed the range checks and turned negative after the cast."""
    np.savez(tmp_path / "d.npz", x=X, y=np.array([0, 1, 2**64 - 1, 0, 1, 2], dtype=np.uint64))
    torch.manual_seed(0)
    checkpoints.save(models.build(SMALL), tmp_path / "m.safetensors", CheckpointMeta(dataset="mnist"))
    rc, _, err = run_cli(["evaluate", tmp_path / "m.safetensors", "--data", tmp_path / "d.npz", "--suite", "ci-quick",
                          "--out", tmp_path / "ev"])
    assert_one_line_error(rc, err, "label")
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float64])
def test_low_precision_safetensors_inputs_are_converted(tmp_path, dtype):
    x = torch.from_numpy(X).to(dtype)
    save_file({"x": x, "y": torch.from_numpy(Y)}, str(tmp_path / "d.safetensors"))
    split = userdata.load_data_file(tmp_path / "d.safetensors")
    assert split.x.dtype == torch.float32 and torch.equal(split.x, x.float())


@pytest.mark.parametrize("ydtype", [torch.uint8, torch.int32, torch.int64, torch.bfloat16, torch.uint64])
def test_safetensors_labels_of_any_integer_or_whole_float_dtype(tmp_path, ydtype):
    save_file({"x": torch.from_numpy(X), "y": torch.from_numpy(Y).to(ydtype)}, str(tmp_path / "d.safetensors"))
    assert userdata.load_data_file(tmp_path / "d.safetensors").y.tolist() == Y.tolist()


def test_safetensors_data_header_nested_deep_or_declaring_huge_shapes_is_refused(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    (tmp_path / "deep.safetensors").write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(RobustclipError, match="nested"):
        userdata.load_data_file(tmp_path / "deep.safetensors")
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**12, 1], "data_offsets": [0, 4]},
                         "y": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}}).encode()
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with pytest.raises(RobustclipError, match="declares shape"):
        userdata.load_data_file(tmp_path / "big.safetensors")
    header = json.dumps({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "c.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(RobustclipError, match="dtype 'C64'"):
        userdata.load_data_file(tmp_path / "c.safetensors")


@pytest.fixture
def factory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "bnets.py").write_text("from robustclip.models import specs\n\n\ndef net():\n"
                                       f"    return specs.build({SMALL!r})\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_checkpoint_header_nested_100000_deep_is_one_line_with_model(factory_dir):
    """``loading.py`` parsed a plain state_dict's header with json.loads: RecursionError, exit 3."""
    deep = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    (factory_dir / "deep.safetensors").write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(CheckpointError, match="nested"):
        loading.load_model(factory_dir / "deep.safetensors", model="bnets:net")
    rc, _, err = run_cli(["evaluate", "deep.safetensors", "--model", "bnets:net", "--dataset", "mnist", "--suite",
                          "ci-quick", "--out", "ev"])
    assert_one_line_error(rc, err, "nested")


def test_deep_robustclip_metadata_in_a_plain_header_is_refused(factory_dir):
    torch.manual_seed(0)
    state = models.build(SMALL).state_dict()
    blob = st_save(state, metadata={"robustclip": "[" * 50_000 + "]" * 50_000})
    (factory_dir / "meta.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError):
        loading.load_model(factory_dir / "meta.safetensors", model="bnets:net")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_pickle_named_safetensors_is_one_line_and_never_unpickled(factory_dir, protocol):
    marker = factory_dir / "ran"
    payload = pickle.dumps(_Boom(str(marker)), protocol=protocol)
    (factory_dir / "x.safetensors").write_bytes(payload)
    for extra in ([], ["--model", "bnets:net"]):
        rc, _, err = run_cli(["evaluate", "x.safetensors", *extra, "--dataset", "mnist", "--suite", "ci-quick",
                              "--out", "ev"])
        assert_one_line_error(rc, err, "x.safetensors")
    assert not marker.exists()


def test_a_torch_save_file_named_safetensors_loads_as_a_state_dict(factory_dir):
    torch.manual_seed(0)
    net = models.build(SMALL)
    torch.save(net.state_dict(), factory_dir / "t.safetensors")
    model, _ = loading.load_model(factory_dir / "t.safetensors", model="bnets:net")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # unpickling this would create the marker file
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch):
    """``deny(path)``: opening ``path`` fails as ``chmod 000`` makes it (root ignores chmod, so open is patched)."""
    import builtins

    real_open = builtins.open
    denied: set[str] = set()

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) in denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)  # zipfile and pathlib open through io.open
    return lambda path: denied.add(os.path.abspath(path))


def test_an_unreadable_checkpoint_is_one_line(factory_dir, unreadable):
    torch.manual_seed(0)
    p = checkpoints.save(models.build(SMALL), factory_dir / "m.safetensors", CheckpointMeta(dataset="mnist"))
    save_file(models.build(SMALL).state_dict(), str(factory_dir / "plain.safetensors"))
    unreadable(p)
    unreadable(factory_dir / "plain.safetensors")
    rc, _, err = run_cli(["evaluate", "m.safetensors", "--suite", "ci-quick", "--out", "ev"])
    assert_one_line_error(rc, err, "Permission denied", "m.safetensors")
    rc, _, err = run_cli(["evaluate", "plain.safetensors", "--model", "bnets:net", "--dataset", "mnist", "--suite",
                          "ci-quick", "--out", "ev"])
    assert_one_line_error(rc, err, "Permission denied", "plain.safetensors")
    assert not (factory_dir / "ev").exists()


@pytest.mark.parametrize("name", ["d.npz", "d.safetensors"])
def test_an_unreadable_data_file_is_one_line(factory_dir, unreadable, name):
    torch.manual_seed(0)
    checkpoints.save(models.build(SMALL), factory_dir / "m.safetensors", CheckpointMeta(dataset="mnist"))
    np.savez(factory_dir / "d.npz", x=X, y=Y)
    save_file({"x": torch.from_numpy(X), "y": torch.from_numpy(Y)}, str(factory_dir / "d.safetensors"))
    unreadable(factory_dir / name)
    rc, _, err = run_cli(["evaluate", "m.safetensors", "--data", name, "--suite", "ci-quick", "--out", "ev"])
    assert_one_line_error(rc, err, "Permission denied", name)


def test_bounded_module_reads_only_named_keys(tmp_path):
    np.savez(tmp_path / "k.npz", x=X, y=Y, other=np.zeros(3))
    assert set(bounded.read_npz(tmp_path / "k.npz", ("x", "y"), max_elements=10**6)) == {"x", "y"}
    with pytest.raises(RobustclipError, match="declares shape"):
        bounded.read_npz(tmp_path / "k.npz", ("x",), max_elements=10)
    zlib.compress(b"")  # zlib is what inflates the members: present in every CPython build
