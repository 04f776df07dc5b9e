"""Sweeps under faults (issue 23): real processes stopped by real signals mid-run and resumed, a run diverging
while the others finish, a full disk while a run is recorded, corrupt or forged claim files, and an edited
``eval.json`` (refused by ``report``, redone by a resume). After each fault every file that existed before is
byte-identical, or was replaced by a complete new version the user asked for (a resume); no temporary file stays.

Concurrent sweeps on one folder, SIGKILL between runs and a kill during the ``results.csv`` write are in
``test_sweep_safety.py`` and ``test_sweeps.py``. Every sweep here is a tiny 1-D regression.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny import assert_one_line_error, one_thread, run_cli

from robustclip.core import files as _io
from robustclip.errors import OutputError, RobustclipError
from robustclip.sweeps import locks as claims
from robustclip.sweeps import planning, records

ROOT = Path(__file__).resolve().parent.parent

TOML = """\
name = "faults"
dataset = "regression"
epochs = 3
seeds = [0]

[[method]]
reg = "weight"
lam = [0.001]

[[method]]
reg = "clip"
lam = [0.01]
"""

HOOK = """\
import os, sys, time
from robustclip.training import trainer as training

_orig = training.Trainer.epoch


def epoch(self):
    hold = os.environ.get("HOLD")
    if hold and self.cfg.reg == "clip":  # the clip run waits here while HOLD exists: a signal lands mid-run
        open(hold + ".reached", "w").close()
        while os.path.exists(hold):
            time.sleep(0.05)
    return _orig(self)


training.Trainer.epoch = epoch
from robustclip.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _files(d: Path) -> dict[str, tuple[str, int]]:
    return {str(f.relative_to(d)): (_io.sha256_file(f), f.stat().st_mtime_ns) for f in sorted(d.rglob("*"))
            if f.is_file()}


def _tmp_files(d: Path) -> list[str]:
    return sorted(str(p) for p in d.rglob(".*.tmp"))


def _plan(toml: Path) -> list:
    return planning.plan(planning.load_sweep(toml), where=str(toml))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_signal_mid_run_then_resume_keeps_finished_runs_and_completes(tmp_path, sig):
    toml = tmp_path / "f.toml"
    toml.write_text(TOML)
    (tmp_path / "hook.py").write_text(HOOK)
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HOLD": str(hold)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "hook.py"), "sweep", str(toml), "--out", str(out),
                             "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        while not Path(str(hold) + ".reached").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(str(hold) + ".reached").exists(), proc.communicate(timeout=5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    weight, clip = _plan(toml)
    assert weight.train["reg"] == "weight" and clip.train["reg"] == "clip"
    if sig == signal.SIGINT:
        assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
        assert "interrupted" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert records.is_done(out, weight) and not records.is_done(out, clip)
    assert not (records.run_dir(out, clip) / "manifest.json").exists()
    assert not (records.run_dir(out, clip) / "failure.json").exists()  # a signal is not a failure
    kept = _files(records.run_dir(out, weight))

    hold.unlink()
    rc, stdout, err = run_cli(["sweep", toml, "--out", out, "--quiet"])  # the resume (claims of a dead pid: stale)
    assert rc == 0, err
    assert _files(records.run_dir(out, weight)) == kept  # byte-identical, not even rewritten
    assert records.is_done(out, clip)
    assert set(pd.read_csv(out / "results.csv").run) == {weight.id, clip.id}  # a complete new table
    assert _tmp_files(out) == [] and list((out / "claims").glob("*.json")) == []


def _in_process_sweep(tmp_path: Path, toml_text: str = TOML) -> tuple[Path, Path]:
    toml = tmp_path / "f.toml"
    toml.write_text(toml_text)
    out = tmp_path / "out"
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert rc == 0, err
    return toml, out


def test_a_diverging_run_is_recorded_while_the_others_finish(tmp_path):
    text = TOML + '\n[[method]]\nreg = "none"\nlabel = "boom"\ntrain = { lr = 1e12 }\n'
    toml = tmp_path / "f.toml"
    toml.write_text(text)
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert rc == 1, err
    runs = {r.id: r for r in _plan(toml)}
    boom = [rid for rid in runs if "boom" in rid]
    assert len(boom) == 1 and f"FAILED {boom[0]}" in stdout
    fail = json.loads((out / "runs" / boom[0] / "failure.json").read_text())
    assert "diverge" in fail["error"].lower() or "nan" in fail["error"].lower(), fail["error"]
    assert not (out / "runs" / boom[0] / "manifest.json").exists()
    finished = [r for rid, r in runs.items() if rid not in boom]
    assert all(records.is_done(out, r) for r in finished)
    assert set(pd.read_csv(out / "results.csv").run) == {r.id for r in finished}
    before = _files(out / "runs")
    rc, stdout, _ = run_cli(["sweep", toml, "--out", out, "--quiet"])  # resume: the failure is reported, not rerun
    assert rc == 1 and "--retry-failed" in stdout
    assert _files(out / "runs") == before


def test_a_full_disk_while_recording_a_run_is_one_line_and_keeps_the_finished_ones(tmp_path, monkeypatch):
    toml = tmp_path / "f.toml"
    toml.write_text(TOML)
    out = tmp_path / "out"
    weight, clip = _plan(toml)
    real = _io.write_bytes

    def full(path, data):  # the disk fills while the second run's checkpoint is written
        if Path(path).parent.name == clip.id:
            with _io.atomic_path(path) as tmp:
                tmp.write_bytes(data[:10])
                raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(_io, "write_bytes", full)
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert_one_line_error(rc, err, "No space left on device", "model.safetensors")
    assert records.is_done(out, weight) and not records.is_done(out, clip)
    assert not (records.run_dir(out, clip) / "model.safetensors").exists()  # no partial file
    assert _tmp_files(out) == [] and list((out / "claims").glob("run-*.json")) == []
    kept = _files(records.run_dir(out, weight))
    monkeypatch.setattr(_io, "write_bytes", real)
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])  # space freed: the resume completes
    assert rc == 0, err
    assert _files(records.run_dir(out, weight)) == kept and records.is_done(out, clip)


def test_output_error_is_still_an_os_error_for_the_heartbeat():
    assert issubclass(OutputError, OSError) and issubclass(OutputError, RobustclipError)


def test_an_edited_eval_json_is_refused_by_report_then_redone_by_a_resume(tmp_path):
    toml, out = _in_process_sweep(tmp_path)
    weight, clip = _plan(toml)
    ev = records.run_dir(out, weight) / "eval.json"
    doc = json.loads(ev.read_text())
    doc["rows"][0]["mse"] = 0.0  # a hand edit of a finished run's number
    ev.write_text(json.dumps(doc))
    edited = ev.read_bytes()
    rc, _, err = run_cli(["report", out, "--out", tmp_path / "rep"])
    assert_one_line_error(rc, err, str(ev), "manifest")
    assert not (tmp_path / "rep").exists()
    assert ev.read_bytes() == edited  # the report changes nothing

    kept = _files(records.run_dir(out, clip))
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert rc == 0, err
    assert ev.read_bytes() != edited and records.is_done(out, weight)  # replaced by a complete new version
    records.verify_run(records.run_dir(out, weight))
    assert _files(records.run_dir(out, clip)) == kept


def test_a_truncated_or_missing_file_of_a_finished_run_is_named(tmp_path):
    _, out = _in_process_sweep(tmp_path)
    run = sorted((out / "runs").iterdir())[0]
    ckpt = run / "model.safetensors"
    whole = ckpt.read_bytes()
    ckpt.write_bytes(whole[:100])
    with pytest.raises(RobustclipError, match="model.safetensors does not match"):
        records.verify_run(run)
    ckpt.write_bytes(whole)
    records.verify_run(run)
    man = json.loads((run / "manifest.json").read_text())
    only_model = {"model.safetensors": man["files"]["model.safetensors"]}
    (run / "manifest.json").write_text(json.dumps({**man, "files": only_model}))
    with pytest.raises(RobustclipError, match="no digest for eval.json"):  # dropping a file from the list
        records.verify_run(run)
    (run / "manifest.json").write_text(json.dumps(man))
    (run / "eval.json").unlink()
    with pytest.raises(RobustclipError, match="eval.json is missing"):
        records.verify_run(run)


@pytest.mark.parametrize("kind", ["garbage", "empty", "future-heartbeat", "infinite-heartbeat", "pid-zero",
                                  "huge"])
def test_corrupt_or_forged_claim_files_end_cleanly(tmp_path, monkeypatch, kind):
    """A corrupt or forged run claim never makes the sweep wait forever: it goes stale (after the timeout, 1 s
    here) and is taken over; every run finishes exactly once."""
    monkeypatch.setenv("ROBUSTCLIP_CLAIM_TIMEOUT", "1")
    toml = tmp_path / "f.toml"
    toml.write_text(TOML)
    out = tmp_path / "out"
    weight, _ = _plan(toml)
    cl = out / "claims" / f"run-{weight.id}.json"
    cl.parent.mkdir(parents=True)
    now = time.time()
    doc = {"garbage": None, "empty": None,
           "future-heartbeat": {"host": "elsewhere", "pid": 1, "heartbeat": now + 1e9, "token": "x"},
           "infinite-heartbeat": {"host": "elsewhere", "pid": 1, "heartbeat": 1e308 * 10, "token": "x"},
           "pid-zero": {**claims.owner(), "pid": 0, "pid_start": None, "heartbeat": now - 3600, "token": "x"},
           "huge": None}[kind]
    if kind == "garbage":
        cl.write_bytes(b"\x00{not json")
    elif kind == "empty":
        cl.write_bytes(b"")
    elif kind == "huge":
        cl.write_bytes(b" " * (1 << 20))
    else:
        cl.write_text(json.dumps(doc, allow_nan=True))
    past = now - 3600
    os.utime(cl, (past, past))
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert rc == 0, err
    assert all(records.is_done(out, r) for r in _plan(toml))
    assert list((out / "claims").glob("*.json")) == []


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
def test_a_claim_that_is_not_a_file_is_one_line_not_a_hang(tmp_path, kind):
    toml = tmp_path / "f.toml"
    toml.write_text(TOML)
    out = tmp_path / "out"
    weight, _ = _plan(toml)
    cl = out / "claims" / f"run-{weight.id}.json"
    cl.parent.mkdir(parents=True)
    if kind == "folder":
        cl.mkdir()
    elif kind == "fifo":
        os.mkfifo(cl)
    else:
        (tmp_path / "elsewhere.json").write_text("{}")
        cl.symlink_to(tmp_path / "elsewhere.json")
    rc, _, err = run_cli(["sweep", toml, "--out", out, "--quiet"])
    assert_one_line_error(rc, err, "not a claim file", cl.name)
    assert cl.exists() or cl.is_symlink()  # left for the user to look at
    if kind == "symlink":
        assert (tmp_path / "elsewhere.json").read_text() == "{}"


def test_claims_read_never_opens_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "c.json")
    doc, mtime = claims._read(tmp_path / "c.json")  # would block forever if it opened the FIFO
    assert doc is None and mtime is not None
    textwrap.dedent("")  # (keeps the import list honest for the hook text above)


def test_a_full_disk_while_writing_a_claim_leaves_no_half_claim(tmp_path, monkeypatch):
    cd = claims.ClaimDir(tmp_path / "claims", timeout=60)

    def full(fd, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left"):
        cd.try_claim("run-x")
    monkeypatch.undo()
    assert list(cd.dir.glob("*.json")) == []
    assert cd.try_claim("run-x") is not None  # nothing blocks the next sweep
