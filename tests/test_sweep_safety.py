"""Sweeps that stay safe: claims, concurrent sweeps, failed runs, Ctrl-C, label escapes, --fresh, corrupt files,
and the array-job modes (--list, --run-index, --finalize).

Every run is a tiny 1-D regression (a few epochs) or, for the failing run, an MNIST run whose data is missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny import SMALL, SUITE_TOML, one_thread

from robustclip.cli import main
from robustclip.core import files as _io
from robustclip.errors import RobustclipError, SuiteError
from robustclip.sweeps import driver, planning, records
from robustclip.sweeps import locks as claims
from robustclip.training import trainer as training

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _env(**kw: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **kw)
    return env


def _reg(epochs: int = 5, lams: tuple[float, ...] = (0.01,), **kw: object) -> dict:
    raw = {"name": "reg", "dataset": "regression", "epochs": epochs, "seeds": [0],
           "method": [{"reg": "clip", "lam": list(lams)}, {"reg": "weight", "lam": [0.001]}]}
    raw.update(kw)
    return raw


def _toml(path: Path, epochs: int, lams: str = "[0.01, 0.1]") -> Path:
    path.write_text(textwrap.dedent(f"""\
        name = "t"
        dataset = "regression"
        epochs = {epochs}
        seeds = [0]

        [[method]]
        reg = "clip"
        lam = {lams}

        [[method]]
        reg = "weight"
        lam = [0.001, 0.01]
        """))
    return path


def _state(d: Path) -> dict[str, tuple[str, int]]:
    return {str(f.relative_to(d)): (_io.sha256_file(f), f.stat().st_mtime_ns) for f in sorted(d.rglob("*"))
            if f.is_file()}


def _run_claims(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "claims").glob("run-*.json"))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("robustclip: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- claims


def test_claim_is_exclusive_released_and_taken_over_only_when_stale(tmp_path):
    cd = claims.ClaimDir(tmp_path / "claims", timeout=60)
    a = cd.try_claim("run-x")
    assert a is not None and cd.owns(a)
    assert cd.try_claim("run-x") is None  # held by a live owner (this very process)
    doc = json.loads(a.path.read_text())
    assert doc["host"] and doc["pid"] == os.getpid() and doc["heartbeat"] <= time.time()
    assert cd.heartbeat(a)
    cd.release(a)
    assert not a.path.exists()
    b = cd.try_claim("run-x")
    assert b is not None and b.token != a.token
    assert not cd.heartbeat(a)  # a released claim stays released
    cd.release(a)  # releasing someone else's claim deletes nothing
    assert b.path.exists() and cd.owns(b)


def test_stale_claims_dead_pid_or_old_heartbeat_are_taken_over(tmp_path):
    cd = claims.ClaimDir(tmp_path / "claims", timeout=60)
    cd.dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    cd.path("run-dead").write_text(json.dumps({**claims.owner(), "pid": dead.pid, "heartbeat": now, "token": "d"}))
    cd.path("run-old").write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat": now - 3600, "token": "o"}))
    os.utime(cd.path("run-old"), (now - 3600, now - 3600))
    cd.path("run-far").write_text(json.dumps({"host": "elsewhere", "pid": 1, "heartbeat": now, "token": "f"}))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cd.path("run-live").write_text(json.dumps({**claims.owner(), "pid": live.pid, "pid_start": None,
                                                   "heartbeat": now - 3600, "token": "l"}))
        assert cd.try_claim("run-dead") is not None  # its pid is gone on this host
        assert cd.try_claim("run-old") is not None  # another host, silent for an hour
        assert cd.try_claim("run-far") is None  # another host, beating
        assert cd.try_claim("run-live") is None  # this host, the process is alive
        assert sorted(cd.live("run-")) == ["run-dead", "run-far", "run-live", "run-old"]
    finally:
        live.kill()
        live.wait()
    assert cd.try_claim("run-live") is not None


def test_heartbeat_thread_keeps_a_claim_fresh_and_releases_on_exit(tmp_path):
    cd = claims.ClaimDir(tmp_path / "claims", timeout=0.8)
    with claims.Heartbeat(cd) as hb:
        c = cd.try_claim("run-a")
        assert c is not None
        hb.add(c)
        first = json.loads(c.path.read_text())["heartbeat"]
        time.sleep(1.2)
        assert json.loads(c.path.read_text())["heartbeat"] > first
        assert cd.holder("run-a") is not None
    assert not c.path.exists()


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("where,label", [("method", "../victim"), ("method", "a/b"), ("experiment", "/etc"),
                                         ("experiment", "..")])
def test_label_escape_is_refused_before_any_work_deleting_nothing(tmp_path, capsys, where, label):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    out = tmp_path / "sweep"
    raw = _reg()
    if where == "method":
        raw["method"][0]["label"] = label
    else:
        raw = {"name": "x", "experiment": [{"label": label, "dataset": "regression", "epochs": 5,
                                            "method": [{"reg": "none"}]}]}
    with pytest.raises(SuiteError, match="not a safe name"):
        planning.plan(raw, where="x.toml")
    toml = tmp_path / "bad.toml"
    if where == "method":
        toml.write_text(f'dataset = "regression"\nepochs = 5\n[[method]]\nreg = "none"\nlabel = "{label}"\n')
    else:
        toml.write_text(f'[[experiment]]\nlabel = "{label}"\ndataset = "regression"\nepochs = 5\n'
                        '[[experiment.method]]\nreg = "none"\n')
    cwd = os.getcwd()
    os.chdir(tmp_path / "victim")  # a relative escape would land next to the victim
    try:
        rc = main(["sweep", str(toml), "--out", str(out), "--quiet", "--fresh"])
    finally:
        os.chdir(cwd)
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "not a safe name" in line
    assert (victim / "precious.txt").read_text() == "mine" and not out.exists()


def test_run_dir_refuses_unsafe_ids(tmp_path):
    for bad in ("../x", "/abs", "a/b", "a\\b", "", ".hidden", "x..y", "a b"):
        with pytest.raises(RobustclipError):
            records.run_dir(tmp_path, bad)
    assert records.run_dir(tmp_path, "mnist-clip-lam1e-05-s0") == tmp_path / "runs" / "mnist-clip-lam1e-05-s0"
    with pytest.raises(SuiteError, match="must be a string"):
        planning.plan({"dataset": "regression", "method": [{"reg": "none", "label": 3}]})


# --------------------------------------------------------------------------- --fresh and corrupt files


def test_fresh_refuses_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "runs").mkdir(parents=True)
    (mine / "runs" / "thesis.tex").write_text("years of work")
    rc = main(["sweep", "--dataset", "regression", "--method", "none", "--epochs", "5", "--out", str(mine),
               "--fresh", "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "not a sweep folder" in line
    assert (mine / "runs" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["runs"]


def test_corrupt_manifest_and_sweep_json_are_unfinished_or_one_line_errors(tmp_path, capsys):
    out = tmp_path / "out"
    raw = _reg(lams=(0.01,))
    raw["method"] = raw["method"][:1]
    driver.run_sweep(raw, out, progress=False)
    (run,) = planning.plan(raw)
    man = records.run_dir(out, run) / "manifest.json"
    for bad in ("[]", '{"digest": 5, "files": []}', "null", '"x"'):
        man.write_text(bad)
        assert not records.is_done(out, run)
        assert records.finished_runs(out) == []
        assert records.gather(out).empty
    (records.run_dir(out, run) / "eval.json").write_text('{"no_rows": 1}')
    (out / "sweep.json").write_text("[1, 2]")
    assert records.gather(out).empty  # no KeyError
    for argv in (["report", str(out), "--out", str(tmp_path / "rep")], ["sweep", "--out", str(out), "--finalize"],
                 ["sweep", "--out", str(out), "--list"]):
        rc = main(argv)
        line = _one_error_line(capsys.readouterr().err)
        assert rc == 2 and "corrupt" in line, argv
    table = driver.run_sweep(raw, out, progress=False)  # the sweep itself redoes the run and rewrites sweep.json
    assert list(table.run) == [run.id] and records.is_done(out, run)


# --------------------------------------------------------------------------- failures stay contained


def test_failing_run_is_recorded_while_the_others_finish_exit_1_then_retried(tmp_path, capsys, data_dir):
    (tmp_path / "tiny.toml").write_text(SUITE_TOML)
    raw = {"name": "mixed", "experiment": [
        {"label": "reg", "dataset": "regression", "epochs": 5, "method": [{"reg": "weight", "lam": [0.001]}]},
        {"label": "mn", "dataset": "mnist", "epochs": 1, "n_train": 200, "n_test": 16, "model": SMALL,
         "suite": str(tmp_path / "tiny.toml"), "method": [{"reg": "none"}]},
        {"label": "reg2", "dataset": "regression", "epochs": 5, "method": [{"reg": "none"}]},
    ]}
    out = tmp_path / "out"
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    runs = {r.id: r for r in planning.plan(raw)}
    outcome = driver.sweep(raw, out, data_dir=str(nodata), progress=False)
    assert set(outcome.failed) == {"mn-none-s0"} and sorted(outcome.ran) == ["reg-weight-lam0.001-s0", "reg2-none-s0"]
    fail = json.loads((out / "runs" / "mn-none-s0" / "failure.json").read_text())
    assert fail["status"] == "failed" and "DataError" in fail["error"] and "Traceback" in fail["traceback"]
    assert not (out / "runs" / "mn-none-s0" / "manifest.json").exists()
    assert set(pd.read_csv(out / "results.csv").run) == {"reg-weight-lam0.001-s0", "reg2-none-s0"}
    assert _run_claims(out) == []

    # the command line: failed runs are reported, not retried, exit 1
    before = _state(out / "runs")
    (tmp_path / "mixed.toml").write_text(_to_toml(raw))
    argv = ["sweep", str(tmp_path / "mixed.toml"), "--out", str(out), "--quiet", "--data-dir", str(data_dir)]
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert re.search(r"FAILED mn-none-s0: DataError", cap.out) and "--retry-failed" in cap.out
    assert _state(out / "runs") == before  # nothing retried, nothing rewritten
    assert "FAILED" in [s for i, r, s in driver.status(None, out) if r.id == "mn-none-s0"][0].upper()

    # --retry-failed with the data in place: the failed run is redone, the finished ones untouched
    rc = main(argv + ["--retry-failed"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    assert records.is_done(out, runs["mn-none-s0"]) and not (out / "runs" / "mn-none-s0" / "failure.json").exists()
    for rid in ("reg-weight-lam0.001-s0", "reg2-none-s0"):
        assert _state(out / "runs" / rid) == {k[len(rid) + 1:]: v for k, v in before.items() if k.startswith(rid + "/")}
    assert set(pd.read_csv(out / "results.csv").run) == set(runs)


def _to_toml(raw: dict) -> str:
    lines = [f'name = "{raw["name"]}"']
    for e in raw["experiment"]:
        lines.append("[[experiment]]")
        for k, v in e.items():
            if k == "method":
                continue
            if isinstance(v, dict):
                inner = ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
                lines.append(f"{k} = {{ {inner} }}")
            else:
                lines.append(f"{k} = {json.dumps(v)}")
        for m in e["method"]:
            lines.append("[[experiment.method]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in m.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_mid_training_records_nothing_unfinished_and_resume_redoes_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    toml = _toml(tmp_path / "t.toml", epochs=6, lams="[0.01]")
    planned = planning.plan(planning.load_sweep(toml))
    first, second = planned[0], planned[1]
    orig = training.Trainer.epoch
    calls = {"n": 0}

    def epoch(self: training.Trainer) -> dict:
        calls["n"] += 1
        if self.cfg.reg == "weight" and len(self.history) == 2:  # the second run, after 2 of its 6 epochs
            raise KeyboardInterrupt
        return orig(self)

    monkeypatch.setattr(training.Trainer, "epoch", epoch)
    rc = main(["sweep", str(toml), "--out", str(out), "--quiet"])
    assert rc == 130
    assert records.is_done(out, first) and not records.is_done(out, second)
    assert not (records.run_dir(out, second) / "manifest.json").exists()
    assert not (records.run_dir(out, second) / "failure.json").exists()  # an interrupt is not a failure
    assert _run_claims(out) == []
    assert set(pd.read_csv(out / "results.csv").run) == {first.id}
    kept = _state(records.run_dir(out, first))

    monkeypatch.setattr(training.Trainer, "epoch", orig)
    rc = main(["sweep", str(toml), "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert _state(records.run_dir(out, first)) == kept  # finished: untouched
    assert all(records.is_done(out, r) for r in planned)
    ev = json.loads((records.run_dir(out, second) / "eval.json").read_text())
    assert len(ev["history"]) == 6 and ev["train"]["interrupted"] is False


def test_sigint_to_a_real_sweep_exits_130_and_marks_nothing_finished(tmp_path):
    out = tmp_path / "out"
    toml = _toml(tmp_path / "t.toml", epochs=20000, lams="[0.01]")
    proc = subprocess.Popen([sys.executable, "-m", "robustclip", "sweep", str(toml), "--out", str(out), "--quiet"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _run_claims(out) and proc.poll() is None:
            time.sleep(0.05)
        assert _run_claims(out), "the sweep never claimed a run"
        time.sleep(1.0)  # into training
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # 130 from main(), or death by SIGINT (-2) when Python re-raises the interrupt at shutdown: a shell reports
    # both as status 130, so both mean "interrupted"; what matters is that nothing unfinished is marked done
    assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert list(out.glob("runs/*/manifest.json")) == [] and _run_claims(out) == []


# --------------------------------------------------------------------------- two sweeps, one folder


def test_two_concurrent_sweeps_on_one_folder_run_every_run_exactly_once(tmp_path):
    toml = _toml(tmp_path / "t.toml", epochs=5)
    out = tmp_path / "out"
    planned = {r.id for r in planning.plan(planning.load_sweep(toml))}
    cmd = [sys.executable, "-m", "robustclip", "sweep", str(toml), "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    done = [re.findall(r"^  done (\S+) in ", so, flags=re.MULTILINE) for so, _ in outs]
    assert sorted(done[0] + done[1]) == sorted(planned)  # every run exactly once, across both sweeps
    runs = planning.plan(planning.load_sweep(toml))
    assert all(records.is_done(out, r) for r in runs)
    table = pd.read_csv(out / "results.csv")
    assert set(table.run) == planned and len(table) == len(planned)
    assert _run_claims(out) == [] and [p for p in out.rglob("*.tmp")] == []


# --------------------------------------------------------------------------- array jobs


def test_list_run_index_and_finalize(tmp_path, capsys):
    toml = _toml(tmp_path / "t.toml", epochs=5, lams="[0.01]")
    out = tmp_path / "out"
    assert main(["sweep", str(toml), "--out", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["0\tregression-clip-lam0.01-s0\ttodo", "1\tregression-weight-lam0.001-s0\ttodo"]
    assert not out.exists()  # listing writes nothing
    assert main(["sweep", str(toml), "--out", str(out), "--run-index", "3", "--quiet"]) == 2
    assert "out of range" in capsys.readouterr().err
    for i in (2, 0, 1, 2):  # the repeated array job finds its run done
        assert main(["sweep", str(toml), "--out", str(out), "--run-index", str(i), "--quiet"]) == 0
        assert ": done" in capsys.readouterr().out
    assert not (out / "results.csv").exists()  # array jobs leave the table to --finalize
    assert main(["sweep", "--out", str(out), "--finalize"]) == 0
    assert "3 of 3 runs finished" in capsys.readouterr().out
    assert set(pd.read_csv(out / "results.csv").run) == {r.id for r in planning.plan(planning.load_sweep(toml))}
    assert main(["sweep", str(toml), "--out", str(out), "--list"]) == 0
    assert capsys.readouterr().out.count("\tdone") == 3


def test_finalize_with_unfinished_runs_exits_1(tmp_path, capsys):
    toml = _toml(tmp_path / "t.toml", epochs=5, lams="[0.01]")
    out = tmp_path / "out"
    assert main(["sweep", str(toml), "--out", str(out), "--run-index", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(toml), "--out", str(out), "--finalize"]) == 1
    assert "2 runs are not finished: regression-weight-lam0.001-s0, regression-weight-lam0.01-s0" in \
        capsys.readouterr().out
    assert main(["sweep", "--out", str(tmp_path / "nowhere"), "--finalize"]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


def test_engine_flags_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    base = ["sweep", "--dataset", "regression", "--method", "none", "--epochs", "5", "--out", str(out), "--quiet"]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(base + ["--engine", "ray"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert 'pip install "robustclip[ray]"' in line
    assert main(base + ["--address", "auto"]) == 2
    assert "--engine ray" in _one_error_line(capsys.readouterr().err)
    assert main(base + ["--cpus-per-run", "2"]) == 2
    assert "--engine ray" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()
