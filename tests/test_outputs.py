"""Every path a command writes is checked before any work (issue 23, items 1-3 and 10): each writing command run
against each bad target ends in one line and exit 2, and the bad target (and everything around it) is unchanged."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import assert_one_line_error, run_cli

from robustclip.checkpoints import format as checkpoints
from robustclip.checkpoints.format import CheckpointMeta
from robustclip.core import files as _io
from robustclip.core import outputs
from robustclip.errors import OutputError, RobustclipError
from robustclip.gate import baseline, output
from robustclip.gate import check as gate
from robustclip.models import specs as models

SMALL = {"arch": "fc", "sizes": [784, 16, 10], "activation": "sigmoid"}
SUITE = 'name = "guard"\nn = 16\nbatch_size = 16\nseed = 0\n[eps]\nL2 = [1.0]\n[[attack]]\ntype = "clean"\n'
TRAIN = ["train", "--dataset", "mnist", "--epochs", "1", "--n-train", "64", "--quiet"]
VICTIM = b"the user's own bytes\n"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A checkpoint, suite, baseline and sweep folder; any real work (train, evaluate, render) fails the test."""
    from robustclip.evaluation import pipeline
    from robustclip.reports import pages as reports

    d = tmp_path / "in"
    d.mkdir()
    torch.manual_seed(0)
    checkpoints.save(models.build(SMALL), d / "m.safetensors", CheckpointMeta(dataset="mnist"))
    (d / "suite.toml").write_text(SUITE, encoding="utf-8")
    (d / "base.json").write_text('{"format": "robustclip-baseline"}', encoding="utf-8")
    sweep = d / "sweep"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text('{"sweep": {"name": "s"}}', encoding="utf-8")
    (sweep / "results.csv").write_text("run\n", encoding="utf-8")

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("work started before the bad output was refused")

    for mod, name in ((pipeline, "train_to_checkpoint"), (pipeline, "evaluate_checkpoint"), (gate, "measure"),
                      (reports, "render")):
        monkeypatch.setattr(mod, name, boom)
    return {"dir": d, "ckpt": d / "m.safetensors", "suite": d / "suite.toml", "baseline": d / "base.json",
            "sweep": sweep}


def _file_cmd(name: str, w: dict[str, Path], target: str) -> list[Any]:
    return {"train": [*TRAIN, "--out", target],
            "check-junit": ["check", w["ckpt"], "--suite", w["suite"], "--baseline", w["baseline"], "--junit-xml",
                            target],
            "check-baseline": ["check", w["ckpt"], "--suite", w["suite"], "--baseline", target, "--update-baseline"],
            "evaluate-adversarial": ["evaluate", w["ckpt"], "--suite", w["suite"], "--out", w["dir"] / "ev",
                                     "--save-adversarial", target],
            }[name]


def _dir_cmd(name: str, w: dict[str, Path], target: str) -> list[Any]:
    return {"evaluate": ["evaluate", w["ckpt"], "--suite", w["suite"], "--out", target],
            "report": ["report", w["sweep"], "--out", target]}[name]


FILE_CMDS = ["train", "check-junit", "check-baseline", "evaluate-adversarial"]
DIR_CMDS = ["evaluate", "report"]


def _victim(tmp: Path) -> Path:
    v = tmp / "victim.txt"
    v.write_bytes(VICTIM)
    return v


def _device(name: str) -> str:
    p = f"/dev/{name}"
    if not (os.path.exists(p) and stat.S_ISCHR(os.stat(p).st_mode)):
        pytest.skip(f"{p} is not a character device here")
    return p


def _file_target(kind: str, tmp: Path, w: dict[str, Path]) -> tuple[str, list[str]]:
    """(target path, words the error must hold) for each bad file target."""
    if kind == "dev-null":
        return _device("null"), ["not a regular file"]
    if kind == "dev-full":
        return _device("full"), ["not a regular file"]
    if kind == "fifo":
        os.mkfifo(tmp / "pipe")
        return str(tmp / "pipe"), ["not a regular file"]
    if kind == "symlink":
        (tmp / "link").symlink_to(_victim(tmp))
        return str(tmp / "link"), ["symbolic link"]
    if kind == "dangling-symlink":
        (tmp / "dangling").symlink_to(tmp / "nowhere")
        return str(tmp / "dangling"), ["symbolic link"]
    if kind == "folder":
        (tmp / "adir").mkdir()
        return str(tmp / "adir"), ["is a folder"]
    if kind == "missing-parent":
        return str(tmp / "no" / "such" / "dir" / "x.safetensors"), ["does not exist", "mkdir"]
    if kind == "file-parent":
        return str(_victim(tmp) / "x.safetensors"), ["not a folder"]
    if kind == "existing":
        return str(_victim(tmp)), ["already exists"]
    if kind == "checkpoint":
        return str(w["ckpt"]), ["input"]
    if kind == "hardlink-to-checkpoint":
        os.link(w["ckpt"], tmp / "hard.out")
        return str(tmp / "hard.out"), ["input"]
    raise AssertionError(kind)


FILE_TARGETS = ["dev-null", "dev-full", "fifo", "symlink", "dangling-symlink", "folder", "missing-parent",
                "file-parent", "existing", "checkpoint", "hardlink-to-checkpoint"]


def _snapshot(*roots: Path) -> dict[str, Any]:
    """Every entry under ``roots``: its kind and bytes (files), link target (links) or device number."""
    out: dict[str, Any] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    out[str(p)] = ("file", p.read_bytes(), st.st_mtime_ns)
                else:
                    out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_rdev)
    for dev in ("/dev/null", "/dev/full"):
        if os.path.exists(dev):
            st = os.lstat(dev)
            out[dev] = (stat.S_IFMT(st.st_mode), st.st_rdev)
    return out


@pytest.mark.parametrize("target", FILE_TARGETS)
@pytest.mark.parametrize("cmd", FILE_CMDS)
def test_every_file_writer_refuses_every_bad_target_and_leaves_it_alone(cmd, target, work, tmp_path):
    if cmd == "train" and target in ("checkpoint", "hardlink-to-checkpoint"):
        target = "existing"  # train reads no input file: an existing file is its case
    out = tmp_path / "out"
    out.mkdir()
    path, words = _file_target(target, out, work)
    before = _snapshot(tmp_path)
    rc, stdout, err = run_cli(_file_cmd(cmd, work, path))
    if cmd == "evaluate-adversarial" and not path.endswith(".safetensors"):
        words = ["safetensors"]  # refused for its name first; the target is left alone all the same
    assert_one_line_error(rc, err, *words)
    assert _snapshot(tmp_path) == before
    assert not (out / "no").exists()


def _dir_target(kind: str, tmp: Path, w: dict[str, Path], cmd: str) -> tuple[str, list[str]]:
    name = "results.csv"
    if kind == "a-file":
        return str(_victim(tmp)), ["is a file"]
    if kind == "dev-null":
        return _device("null"), ["device"]
    d = tmp / "dest"
    d.mkdir()
    if kind == "symlink-inside":
        (d / name).symlink_to(_victim(tmp))
        return str(d), ["symbolic link"]
    if kind == "fifo-inside":
        os.mkfifo(d / name)
        return str(d), ["not a regular file"]
    if kind == "folder-inside":
        (d / name).mkdir()
        return str(d), ["is a folder"]
    if kind == "existing-inside":
        (d / name).write_bytes(VICTIM)
        (d / "index.html").write_bytes(VICTIM)
        return str(d), ["already holds", "--force"]
    if kind == "input-inside":  # refused even with --force: a results file that is the command's own input
        os.link(w["ckpt"] if cmd == "evaluate" else w["sweep"] / "results.csv", d / name)
        return str(d), ["input"]
    raise AssertionError(kind)


DIR_TARGETS = ["a-file", "dev-null", "symlink-inside", "fifo-inside", "folder-inside", "existing-inside",
               "input-inside"]


@pytest.mark.parametrize("target", DIR_TARGETS)
@pytest.mark.parametrize("cmd", DIR_CMDS)
def test_every_folder_writer_refuses_every_bad_target_and_leaves_it_alone(cmd, target, work, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path, words = _dir_target(target, out, work, cmd)
    before = _snapshot(tmp_path)
    argv = _dir_cmd(cmd, work, path) + (["--force"] if target == "input-inside" else [])
    rc, _, err = run_cli(argv)
    assert_one_line_error(rc, err, *words)
    assert _snapshot(tmp_path) == before


def test_report_into_its_own_sweep_folder_is_refused_even_with_force(work):
    before = _snapshot(work["sweep"])
    rc, _, err = run_cli(["report", work["sweep"], "--out", work["sweep"], "--force"])
    assert_one_line_error(rc, err, "input")
    assert _snapshot(work["sweep"]) == before


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder that refuses new files, as a read-only folder does (root ignores chmod, so mkstemp is patched)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a: Any, dir: Any = None, **k: Any) -> Any:
        if dir is not None and Path(dir).resolve() == ro.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return ro


@pytest.mark.parametrize("cmd", FILE_CMDS + DIR_CMDS)
def test_a_read_only_folder_is_refused_before_any_work(cmd, work, read_only):
    argv = (_file_cmd(cmd, work, str(read_only / "x.safetensors")) if cmd in FILE_CMDS
            else _dir_cmd(cmd, work, str(read_only)))
    rc, _, err = run_cli(argv)
    assert_one_line_error(rc, err, "cannot write", str(read_only))
    assert list(read_only.iterdir()) == []


def test_update_baseline_replaces_only_a_baseline(work, tmp_path):
    # the consent of --update-baseline covers a baseline file (even a damaged one), nothing else
    assert outputs.guard_output(work["baseline"], kind="baseline") == work["baseline"]
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(b'{"format": "robustclip-baseline", "mode": "fix')
    assert outputs.guard_output(damaged, kind="baseline") == damaged
    other = _victim(tmp_path)
    with pytest.raises(OutputError, match="not a robustclip baseline"):
        outputs.guard_output(other, kind="baseline")
    with pytest.raises(OutputError, match="input"):
        outputs.guard_output(work["baseline"], kind="baseline", inputs=[work["baseline"]])


def test_junit_report_is_replaced_only_if_it_is_one_or_with_force(work, tmp_path):
    old = tmp_path / "j.xml"
    old.write_text(output.junit_xml([], name="m", seconds=0.0), encoding="utf-8")
    assert outputs.guard_output(old, kind="junit") == old
    other = _victim(tmp_path)
    with pytest.raises(OutputError, match="--force"):
        outputs.guard_output(other, kind="junit")
    assert outputs.guard_output(other, kind="junit", force=True) == other
    with pytest.raises(OutputError, match="input"):  # --force never covers an input
        outputs.guard_output(work["ckpt"], kind="junit", force=True, inputs=[work["ckpt"]])


def test_report_force_overwrites_report_files(work, tmp_path, monkeypatch):
    from robustclip.reports import pages as reports

    d = tmp_path / "rep"
    d.mkdir()
    (d / "index.html").write_bytes(VICTIM)
    (d / "curve_mnist_L2.png").write_bytes(VICTIM)
    rc, _, err = run_cli(["report", work["sweep"], "--out", d])
    assert_one_line_error(rc, err, "index.html", "curve_mnist_L2.png", "--force")
    monkeypatch.setattr(reports, "render", lambda sweep, out, title=None: Path(out) / "index.html")
    rc, out, err = run_cli(["report", work["sweep"], "--out", d, "--force"])
    assert rc == 0, err


def test_the_baseline_tag_matches_the_gate():
    assert outputs.KIND_MARKERS["baseline"] == (f'"{baseline.BASELINE_FORMAT}"'.encode(),)


# --------------------------------------------------------------------------- the writes themselves


def test_disk_full_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "m.bin"
    target.write_bytes(VICTIM)

    def full(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match="No space left") as info:
        _io.write_bytes(target, b"new content")
    assert isinstance(info.value, OSError) and isinstance(info.value, RobustclipError)
    monkeypatch.undo()
    assert target.read_bytes() == VICTIM
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]  # no temporary file left


def test_dev_full_fails_as_one_line_through_the_writer(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(OutputError, match="not a regular file"):
        _io.write_text("/dev/full", "x")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "eval.json"
    target.write_bytes(VICTIM)
    with pytest.raises(KeyboardInterrupt):
        with _io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == VICTIM
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_train_on_a_full_disk_is_one_line_exit_2_and_no_file(tmp_path, monkeypatch, data_dir):
    """A real (tiny) training whose checkpoint write hits ENOSPC: exit 2, one line, no file, nothing left over."""
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name.startswith(".m.safetensors."):
            real(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    rc, _, err = run_cli([*TRAIN, "--n-train", "32", "--batch-size", "32", "--out", tmp_path / "m.safetensors",
                          "--data-dir", data_dir])
    assert_one_line_error(rc, err, "No space left", "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["a-file", "dev-null", "fifo"])
def test_sweep_out_that_is_not_a_folder_is_refused_before_any_work(target, tmp_path):
    if target == "a-file":
        path = str(_victim(tmp_path))
    elif target == "dev-null":
        path = _device("null")
    else:
        os.mkfifo(tmp_path / "pipe")
        path = str(tmp_path / "pipe")
    before = _snapshot(tmp_path)
    rc, _, err = run_cli(["sweep", "--dataset", "regression", "--method", "none", "--epochs", "1", "--out", path,
                          "--quiet"])
    assert_one_line_error(rc, err, "not a folder")
    assert _snapshot(tmp_path) == before


def test_train_out_never_replaces_a_dataset_file_even_with_force(work, tmp_path):
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    idx = d / "t10k-images-idx3-ubyte"
    idx.write_bytes(VICTIM)
    rc, _, err = run_cli([*TRAIN, "--data-dir", tmp_path / "data", "--out", idx, "--force"])
    assert_one_line_error(rc, err, "input")
    assert idx.read_bytes() == VICTIM


@pytest.mark.parametrize("target", ["a-file", "checkpoint", "dev-null", "fifo", "dangling-symlink", "file-parent"])
def test_evaluate_cache_that_is_not_a_folder_is_refused_before_any_work(target, work, tmp_path):
    """``evaluate --cache DIR`` goes through the same guard as ``--out``: a file (the checkpoint included), a
    device, a FIFO, a dangling link or a path under a file is one line, exit 2, before any work."""
    out = tmp_path / "out"
    out.mkdir()
    words = {"a-file": ["is a file", "--cache"], "checkpoint": ["is a file", "--cache"],
             "dev-null": ["device", "--cache"], "fifo": ["FIFO", "--cache"],
             "dangling-symlink": ["broken symbolic link", "--cache"], "file-parent": ["Not a directory", "--cache"]}
    if target == "a-file":
        path = str(_victim(out))
    elif target == "checkpoint":
        path = str(work["ckpt"])
    elif target == "dev-null":
        path = _device("null")
    elif target == "fifo":
        os.mkfifo(out / "pipe")
        path = str(out / "pipe")
    elif target == "dangling-symlink":
        (out / "dangling").symlink_to(out / "nowhere")
        path = str(out / "dangling")
    else:
        path = str(_victim(out) / "cache")
    before = _snapshot(tmp_path)
    rc, _, err = run_cli(["evaluate", work["ckpt"], "--suite", work["suite"], "--out", out / "ev", "--cache", path])
    assert_one_line_error(rc, err, *words[target])
    assert _snapshot(tmp_path) == before
