"""Hostile input, round four: one test (or a few) per class the fourth probe found, each at its mechanism.

1. ``--force`` never replaces an input: the factory's module, a dataset file, an image inside a ``--data`` folder.
2. A download never writes through a link planted at its partial file.
3. A negative ``.npy`` dimension is refused before anything is inflated.
4. Unbounded reads end: a FIFO or a link to ``/dev/stdin`` among images, a cache entry that is a FIFO, a link to
   ``/dev/zero`` or a huge sparse file, and a mirror that trickles.
5. No stale results: the cache key covers the model's code and entries are verified; labels that name summary rows
   are refused.
6. One evaluation or sweep per folder: two sweeps never mix, a set of result files is replaced whole or not at all.
7. One line, never exit 3: undecodable or multi-line class names, zero-size samples, encrypted ``.npz`` members, a
   full disk under ``--save-adversarial`` and under a sweep's lock.
8. The Python API: permuted inputs, narrow integer labels, the meta device, ``ClipPenalty``'s odd batches and
   ``benchmark``'s n.
9. Last round's small ones: stdout on a full device, ``--n-test 0``, non-finite Lipschitz bounds.
10. ``ClipPenalty`` leaves BatchNorm's running statistics as they were.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.server
import io
import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tiny import SMALL, assert_one_line_error, run_cli, suite_toml
from torch import nn

import robustclip as rc
from robustclip.checkpoints import format as checkpoints
from robustclip.checkpoints.format import CheckpointMeta
from robustclip.core import files as _io
from robustclip.core import inputs
from robustclip.core.outputs import guard_output, guard_output_dir
from robustclip.data import download, imagefolder, userdata
from robustclip.errors import DataError, OutputError, RobustclipError, SuiteError
from robustclip.models import specs as models


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging for ever) when the block takes longer than ``seconds``."""

    def boom(*_: Any) -> None:
        raise AssertionError(f"still running after {seconds} s: an unbounded read")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bytes_of(*paths: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in paths}


NETS = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * SCALE


SCALE = 1.0


def net():
    return Net()
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """A user's folder: their module ``nets.py``, a state_dict for it, a tiny suite; the current folder."""
    (tmp_path / "nets.py").write_text(NETS, encoding="utf-8")
    torch.manual_seed(0)
    save_file({"fc.weight": torch.randn(10, 784) * 0.01, "fc.bias": torch.zeros(10)}, str(tmp_path / "sd.safetensors"))
    (tmp_path / "tiny.toml").write_text(suite_toml(n=16, eps=(1.0,), steps=2), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- 1. --force never replaces an input


def test_force_never_replaces_the_factory_module(user_dir):
    before = _bytes_of(user_dir / "nets.py")
    rc_, _, err = run_cli(["check", "sd.safetensors", "--model", "nets:net", "--dataset", "mnist", "--suite",
                           "tiny.toml", "--baseline", "base.json", "--junit-xml", "nets.py", "--force"])
    assert_one_line_error(rc_, err, "--junit-xml nets.py", "input of this command", "even with --force")
    assert _bytes_of(user_dir / "nets.py") == before


def test_factory_files_are_found_without_importing(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('imported!')\n", encoding="utf-8")
    (pkg / "nets.py").write_text("raise SystemExit('imported!')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    found = inputs.factory_files("mypkg.nets:net")
    assert [f.resolve() for f in found] == [(pkg / "__init__.py").resolve(), (pkg / "nets.py").resolve()]
    assert inputs.factory_files("no_such_module:net") == [] and inputs.factory_files(None) == []


def test_force_never_replaces_a_dataset_file_or_writes_into_a_dataset_folder(user_dir):
    labels = user_dir / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.parent.mkdir(parents=True)
    labels.write_bytes(b"labels")
    for target in (labels, labels.parent / "new.xml"):
        rc_, _, err = run_cli(["check", "sd.safetensors", "--model", "nets:net", "--dataset", "mnist", "--suite",
                               "tiny.toml", "--baseline", "base.json", "--data-dir", "data", "--junit-xml", target,
                               "--force"])
        assert_one_line_error(rc_, err, "input of this command")
    assert labels.read_bytes() == b"labels" and not (labels.parent / "new.xml").exists()


def test_force_never_replaces_an_image_of_a_data_folder(user_dir):
    img = user_dir / "imgs" / "cat" / "a.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    before = _bytes_of(img)
    rc_, _, err = run_cli(["check", "sd.safetensors", "--model", "nets:net", "--data", "imgs", "--suite", "tiny.toml",
                           "--baseline", "base.json", "--junit-xml", img, "--force"])
    assert_one_line_error(rc_, err, "lies inside an input of this command", "imgs")
    rc_, _, err = run_cli(["evaluate", "sd.safetensors", "--model", "nets:net", "--data", "imgs", "--suite",
                           "tiny.toml", "--out", "imgs/cat", "--force"])
    assert_one_line_error(rc_, err, "--out imgs/cat", "input of this command")
    assert _bytes_of(img) == before and sorted(os.listdir(img.parent)) == ["a.png"]


def test_the_guard_refuses_a_path_inside_an_input_folder_and_the_folder_itself(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    for target in (folder / "x.json", folder / "sub" / "y.json", folder / "sub" / ".." / "z.json"):
        with pytest.raises(OutputError, match="input of this command"):
            guard_output(target, inputs=[folder], force=True)
    with pytest.raises(OutputError, match="input of this command"):
        guard_output_dir(folder, ("results.csv",), inputs=[folder], force=True)
    assert guard_output(tmp_path / "elsewhere.json", inputs=[folder]) == tmp_path / "elsewhere.json"


# --------------------------------------------------------------------------- 2. downloads never through a link


def test_a_download_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / "cache" / "cifar-10-binary.tar.gz"
    target.parent.mkdir()
    download.part_path(target).symlink_to(victim)
    with pytest.raises(DataError, match="symbolic link") as info:
        download.fetch(["http://127.0.0.1:9/never-asked"], target, md5="0" * 32, max_bytes=100, progress=False)
    assert "remove" in (info.value.fix or "")
    assert victim.read_bytes() == b"precious" and not target.exists()


# --------------------------------------------------------------------------- 3. negative .npy dimensions


def _npz_with_header(path: Path, shape_text: str) -> None:
    """An .npz whose x.npy header declares ``shape_text`` over 3 MB of zeros (what a bomb would inflate)."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + bytes(3_000_000)
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.int64))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", npy)
        zf.writestr("y.npy", buf.getvalue())


@pytest.mark.parametrize("shape", ["(-1,)", "(-5, 3)", "(2, -1)"])
def test_a_negative_npy_dimension_is_refused_before_inflating(tmp_path, shape):
    path = tmp_path / "bomb.npz"
    _npz_with_header(path, shape)
    with pytest.raises(RobustclipError, match="negative dimension"):
        userdata.load_data_file(path)


# --------------------------------------------------------------------------- 4. unbounded reads


def _image_folder(root: Path) -> None:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / cls / "0.png")


@pytest.mark.parametrize("kind", ["fifo", "stdin-link", "dev-zero-link"])
def test_an_image_folder_with_a_fifo_or_device_ends_in_one_line(tmp_path, kind):
    root = tmp_path / "imgs"
    _image_folder(root)
    bad = root / "a" / "1.png"
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.symlink_to("/dev/stdin" if kind == "stdin-link" else "/dev/zero")
    with deadline(20), pytest.raises(DataError, match="not a regular file"):
        imagefolder.load(root)


def _cache_with_one_entry(tmp_path: Path) -> tuple[Any, Any, torch.Tensor, Path]:
    from robustclip.attacks.suites import AttackSpec
    from robustclip.evaluation.cache import AttackCache

    cache = AttackCache(tmp_path / "cache", {"checkpoint": "abc", "model_code": "def"})
    spec = AttackSpec("fgsm", "fgsm", "Linf", 0.1, {})
    todo = torch.ones(8, dtype=torch.bool)
    cache.put(0, spec, todo, torch.tensor([True, False] * 4), 0.1, torch.full((8,), 0.05, dtype=torch.float64))
    (entry,) = cache.folder.glob("*.json")
    return cache, spec, todo, entry


def test_the_cache_returns_what_it_stored(tmp_path):
    cache, spec, todo, _ = _cache_with_one_entry(tmp_path)
    hit = cache.get(0, spec, todo)
    assert hit is not None and hit[0].tolist() == [True, False] * 4 and cache.hits == 1 and cache.rejected == 0


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "sparse"])
def test_a_cache_entry_that_is_a_fifo_device_or_huge_is_a_miss(tmp_path, kind):
    cache, spec, todo, entry = _cache_with_one_entry(tmp_path)
    entry.unlink()
    if kind == "fifo":
        os.mkfifo(entry)
    elif kind == "dev-zero":
        entry.symlink_to("/dev/zero")
    else:
        with open(entry, "wb") as fh:
            fh.truncate(3 * 1024**3)
    with deadline(20):
        assert cache.get(0, spec, todo) is None
    assert cache.rejected == 1


def test_an_edited_outcome_bitset_in_the_cache_is_not_trusted(tmp_path):
    import base64
    import json

    cache, spec, todo, entry = _cache_with_one_entry(tmp_path)
    doc = json.loads(entry.read_text())
    doc["outcomes"] = base64.b64encode(bytes([0xFF])).decode("ascii")  # every sample robust
    entry.write_text(json.dumps(doc))
    assert cache.get(0, spec, todo) is None and cache.rejected == 1


class _Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_mirror_that_trickles_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RATE_WINDOW_S", 0.5)
    monkeypatch.setattr(download, "MIN_BYTES_PER_WINDOW", 1000)
    monkeypatch.setattr(download, "RETRIES", 1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file"
        with deadline(30), pytest.raises(DataError, match="too slow"):
            download.fetch([url], tmp_path / "file.bin", md5="0" * 32, max_bytes=2_000_000, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "file.bin").exists()


# --------------------------------------------------------------------------- 5. no stale results


def _cached_run(out: str) -> dict[str, Any]:
    import json

    rc_, _, err = run_cli(["evaluate", "sd.safetensors", "--model", "nets:net", "--dataset", "mnist", "--suite",
                           "tiny.toml", "--out", out, "--cache", "cache", "--lipschitz", "off", "--quiet"])
    assert rc_ == 0, err
    return dict(json.loads((Path(out) / "results.json").read_text())["runs"][0]["attack_cache"])


@pytest.mark.data
def test_changed_model_code_misses_the_cache(user_dir):
    first = _cached_run("a")
    again = _cached_run("b")
    assert first["hits"] == 0 and again["hits"] > 0 and again["misses"] == 0
    (user_dir / "nets.py").write_text(NETS.replace("SCALE = 1.0", "SCALE = 3.0"), encoding="utf-8")
    changed = _cached_run("c")
    assert changed["hits"] == 0  # same weights, another forward: never the old outcomes


def test_factory_digest_follows_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m1.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    a = inputs.factory_digest("m1:f")
    (tmp_path / "m1.py").write_text("def f():\n    return 2\n", encoding="utf-8")
    assert inputs.factory_digest("m1:f") != a and inputs.factory_digest(None) is None


@pytest.mark.parametrize("label", ["worst_case", "certified", "clean", "clean_full"])
def test_an_attack_label_that_names_a_summary_row_is_refused(tmp_path, label):
    from robustclip.attacks.suites import load_suite

    path = tmp_path / "s.toml"
    path.write_text(suite_toml(n=8) + f'label = "{label}"\n', encoding="utf-8")
    with pytest.raises(SuiteError, match="a row the evaluation writes itself"):
        load_suite(path)


def test_two_attacks_with_one_label_at_one_eps_are_refused(tmp_path):
    from robustclip.attacks.suites import parse_suite

    raw = {"name": "x", "attack": [{"type": "fgsm", "norm": "Linf", "eps": 0.1, "label": "a"},
                                   {"type": "pgd", "norm": "Linf", "eps": 0.1, "steps": 3, "label": "a"}]}
    with pytest.raises(SuiteError, match="attack label 'a' is used twice"):
        parse_suite(raw)


# --------------------------------------------------------------------------- 6. one evaluation, one sweep per folder


def _reg_sweep(name: str, lam: float) -> dict[str, Any]:
    return {"name": name, "dataset": "regression", "epochs": 2, "method": [{"reg": "clip", "lam": [lam]}]}


def test_another_sweep_into_a_finished_folder_is_refused(tmp_path):
    from robustclip.sweeps.driver import run_sweep

    out = tmp_path / "sw"
    run_sweep(_reg_sweep("first", 0.1), out, progress=False)
    before = _bytes_of(out / "sweep.json", out / "results.csv")
    with pytest.raises(RobustclipError, match="holds sweep 'first'; this is sweep 'second'"):
        run_sweep(_reg_sweep("second", 0.2), out, progress=False)
    assert _bytes_of(out / "sweep.json", out / "results.csv") == before


def test_another_plan_while_a_sweep_runs_is_refused(tmp_path):
    from robustclip.sweeps.driver import run_sweep
    from robustclip.sweeps.locks import ClaimDir

    out = tmp_path / "sw"
    run_sweep(_reg_sweep("same", 0.1), out, progress=False)
    claims = ClaimDir(out / "claims")
    other = claims.try_claim("driver-otherhost-1-abcd")  # another live sweep on this folder
    assert other is not None
    try:
        with pytest.raises(RobustclipError, match="another sweep with a different plan is running"):
            run_sweep(_reg_sweep("same", 0.3), out, progress=False)
    finally:
        claims.release(other)


def test_a_set_of_result_files_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import tempfile

    _io.write_files(tmp_path, {"results.csv": "old", "results.json": "old", "samples.csv": "old"})
    real = tempfile.mkstemp
    calls = {"n": 0}

    def full_disk(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        _io.write_files(tmp_path, {"results.csv": "new", "results.json": "new", "samples.csv": "new"})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"results.csv": "old", "results.json": "old",
                                                                  "samples.csv": "old"}


# --------------------------------------------------------------------------- 7. one line, never exit 3


def test_a_class_folder_named_with_a_newline_or_undecodable_bytes_is_one_line(tmp_path):
    for i, name in enumerate([b"cat\ndog", b"caf\xe9"]):
        root = tmp_path / f"imgs{i}"
        _image_folder(root)
        bad = os.path.join(os.fsencode(root), name)
        os.mkdir(bad)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.fsdecode(os.path.join(bad, b"0.png")), format="PNG")
        rc_, _, err = run_cli(["evaluate", "x.safetensors", "--data", root, "--suite", "ci-quick", "--out",
                               tmp_path / f"out{i}"])
        assert rc_ == 2 and len(err.strip().splitlines()) == 1, err
        with pytest.raises(DataError, match="not printable UTF-8"):
            imagefolder.load(root)


def test_an_undecodable_image_file_name_is_read(tmp_path):
    root = tmp_path / "imgs"
    _image_folder(root)
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(
        os.fsdecode(os.path.join(os.fsencode(root / "b"), b"\xff.png")), format="PNG")
    split = imagefolder.load(root)
    assert len(split) == 3 and split.y.tolist() == [0, 1, 1]


def test_cli_error_lines_escape_control_characters_and_undecodable_bytes():
    from robustclip.cli import printable

    assert printable("a\nb\udcff") == "a\\nb\\udcff" and printable("λ ok") == "λ ok"


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_x_with_a_zero_size_dimension_is_one_line(tmp_path, fmt):
    x, y = np.zeros((4, 0), np.float32), np.zeros(4, np.int64)
    path = tmp_path / f"d.{fmt}"
    if fmt == "npz":
        np.savez(path, x=x, y=y)
    else:
        save_file({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, str(path))
    with pytest.raises(RobustclipError, match="no dimension may be 0"):
        userdata.load_data_file(path)


def test_an_npz_with_an_encrypted_member_is_one_line(tmp_path):
    path = tmp_path / "enc.npz"
    np.savez(path, x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    raw = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the encrypted bit, local and central headers
        i = raw.find(sig)
        while i != -1:
            raw[i + off] |= 1
            i = raw.find(sig, i + 4)
    path.write_bytes(bytes(raw))
    with pytest.raises(RobustclipError, match="cannot be read as .npz"):
        userdata.load_data_file(path)


def test_save_adversarial_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from robustclip.evaluation.samples import save_adversarial

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left"):
        save_adversarial(tmp_path / "adv.safetensors", [(0, "pgd", "L2", 1.0, torch.zeros(3))], sample_shape=(3,),
                         model="m", suite="s")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_lock_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from robustclip.sweeps.locks import ClaimDir

    real = os.open

    def full(path: Any, *a: Any, **k: Any) -> int:
        if str(path).endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(OutputError, match="cannot lock sweep folder"), ClaimDir(tmp_path / "claims").locked():
        pass


# --------------------------------------------------------------------------- 8. the Python API


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))


def test_evaluate_takes_permuted_inputs_and_narrow_integer_labels(tiny_model):
    torch.manual_seed(1)
    x = torch.rand(3, 4, 10).permute(2, 0, 1)  # (10, 3, 4), not contiguous
    assert not x.is_contiguous()
    y64 = tiny_model(x.contiguous()).argmax(1)
    suite = {"name": "t", "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "Linf", "eps": 0.05}]}
    from robustclip.attacks.suites import parse_suite

    s = parse_suite(suite)
    ref = rc.evaluate(tiny_model, x.contiguous(), y64, suite=s, progress=False, sanity=False)
    for y in (y64.to(torch.int32), y64.to(torch.uint8)):
        res = rc.evaluate(tiny_model, x, y, suite=s, progress=False, sanity=False)
        assert res.accuracy("clean") == ref.accuracy("clean") == 1.0
    from robustclip.testing import assert_robust

    assert_robust(tiny_model, (x, y64.to(torch.uint8)), suite=s, min_accuracy={"clean": 1.0})


def test_meta_tensors_and_models_are_refused(tiny_model):
    x, y = torch.rand(4, 12), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(RobustclipError, match="meta device"):
        rc.evaluate(tiny_model, x, y.to("meta"), suite="ci-quick", progress=False)
    with pytest.raises(RobustclipError, match="meta device"):
        rc.evaluate(tiny_model.to("meta"), x, y, suite="ci-quick", progress=False)


@pytest.mark.parametrize("n", [2.5, True, 0, -1])
def test_benchmark_refuses_a_sample_count_that_is_not_a_positive_whole_number(tiny_model, n):
    with pytest.raises(RobustclipError, match="benchmark: n"):
        rc.benchmark(tiny_model, suite="ci-quick", n=n)


def test_clip_penalty_takes_float64_batches_and_refuses_empty_ones_and_dict_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    pen = rc.ClipPenalty(model, pairs=4)(torch.rand(6, 4, dtype=torch.float64))
    assert pen.dtype == torch.float32 and float(pen) > 0
    with pytest.raises(RobustclipError, match="no samples"):
        rc.ClipPenalty(model)(torch.rand(0, 4))

    class Dict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.fc(x)}

    with pytest.raises(RobustclipError, match="returns a dict"):
        rc.ClipPenalty(Dict())(torch.rand(5, 4))


# --------------------------------------------------------------------------- 9. last round's small ones


class _FullStdout(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_stdout_is_one_line_and_exit_2(monkeypatch, capsys):
    from robustclip import cli

    monkeypatch.setattr(cli.sys, "stdout", _FullStdout())
    assert cli.main(["--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustclip: error: cannot write to standard output"), err


@pytest.mark.parametrize(("code", "expected"), [(None, 2), (0, 2), (1, 1)])
def test_a_lost_verdict_never_reads_as_a_pass(capsys, code, expected):
    from robustclip import cli

    assert cli._lost(cli.StdoutLost(OSError(errno.ENOSPC, "No space left on device"), code)) == expected


def test_sweep_n_test_zero_is_one_line(tmp_path):
    rc_, _, err = run_cli(["sweep", "--dataset", "mnist", "--method", "clip:0.1", "--n-test", "0", "--out",
                           tmp_path / "s", "--list"])
    assert_one_line_error(rc_, err, "n_test must lie in [1,")


@pytest.mark.parametrize("bound", [float("nan"), float("inf"), 0.0, -1.0])
def test_assert_lipschitz_below_refuses_a_bound_that_cannot_fail(tiny_model, bound):
    from robustclip.testing import assert_lipschitz_below

    with pytest.raises(RobustclipError, match="bound"):
        assert_lipschitz_below(tiny_model, torch.rand(8, 12), bound)


def test_a_big_sweep_plan_checks_each_architecture_once(monkeypatch):
    from robustclip.sweeps.planning import plan
    from robustclip.training import config

    config._check_spec.cache_clear()
    builds = {"n": 0}
    real = models.build

    def counted(spec: Any) -> nn.Module:
        builds["n"] += 1
        return real(spec)

    monkeypatch.setattr(config.models, "build", counted)
    runs = plan({"name": "big", "dataset": "mnist", "seeds": list(range(20)),
                 "method": [{"reg": "clip", "lam": [0.001 * (i + 1) for i in range(50)]}]})
    assert len(runs) == 1000 and builds["n"] == 1


# --------------------------------------------------------------------------- 10. BatchNorm statistics


def test_clip_penalty_leaves_batchnorm_running_statistics_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    penalty = rc.ClipPenalty(model, pairs=4, init="noise")
    x = torch.rand(8, 1, 8, 8)
    for _ in range(3):  # the backward pass reaches the pairs; the next call moves them through the model again
        penalty(x).backward()
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    model(x)  # the data itself still updates them, as training does
    assert not torch.equal(before["running_mean"], bn.running_mean)


def test_checkpoint_sha_is_unchanged_by_a_refused_force(tmp_path):
    """The checkpoint is an input like any other: --force never replaces it (kept from round three, now through the
    one notion of inputs)."""
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    checkpoints.save(models.build(SMALL), path, CheckpointMeta(dataset="mnist"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(OutputError, match="input of this command"):
        guard_output(path, inputs=inputs.command_inputs(path), force=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

