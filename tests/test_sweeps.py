"""Sweeps: plan expansion and validation, resumable runs (a real kill -9 mid-sweep),
the gathered results table and the ``robustclip sweep`` command line.

Every run is tiny: the 1-D regression for 30-300 epochs, or MNIST on 500
training images for one epoch evaluated on 64 test images with a 3-step PGD.
Torch runs on one thread (two threads on a busy 2-core machine are ~4x slower).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from robustclip.cli import main
from robustclip.core import files as _io
from robustclip.errors import RobustclipError, SuiteError
from robustclip.sweeps import driver, planning, records, run

ROOT = Path(__file__).resolve().parent.parent
from tiny import SMALL, SUITE_TOML, one_thread  # noqa: E402

# the rows each MNIST run gets from SUITE_TOML: (attack, norm, eps), plus clean accuracy on the
# whole test set ("clean_full") since the suite uses only 64 test images
SUITE_ROWS = {("clean", "none", 0.0), ("pgd", "L2", 1.0), ("pgd", "L2", 2.0), ("worst_case", "L2", 1.0),
              ("worst_case", "L2", 2.0), ("certified", "L2", 1.0), ("certified", "L2", 2.0),
              ("clean_full", "none", 0.0)}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _reg_sweep(epochs: int = 30, **kw) -> dict:
    raw = {"name": "reg", "dataset": "regression", "epochs": epochs, "seeds": [0],
           "method": [{"reg": "clip", "lam": [0.01]}, {"reg": "weight", "lam": [0.001]}]}
    raw.update(kw)
    return raw


def _file_state(d: Path) -> dict[str, tuple[str, int]]:
    """{relative name: (sha256, mtime_ns)} of every file under ``d``."""
    return {str(f.relative_to(d)): (_io.sha256_file(f), f.stat().st_mtime_ns)
            for f in sorted(d.rglob("*")) if f.is_file()}


def _tmp_files(d: Path) -> list[str]:
    return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".tmp")]


def _manifests(out: Path) -> set[str]:
    return {p.parent.name for p in out.glob("runs/*/manifest.json")}


# --------------------------------------------------------------------------- plan


def test_plan_expands_methods_values_and_seeds():
    raw = {"name": "x", "dataset": "mnist", "epochs": 3, "seeds": [0, 1, 2],
           "method": [{"reg": "none"},
                      {"reg": "weight", "lam": [1e-4, 1e-3]},
                      {"reg": "clip", "lam": [0.05, 0.1], "tau": [0.95, 0.97], "lam0": 0.02, "lam_step": 0.005,
                       "lam_every": 2}]}
    runs = planning.plan(raw)
    assert len(runs) == 3 * (1 + 2 + 4)
    ids = [r.id for r in runs]
    assert len(set(ids)) == len(ids)
    assert "mnist-none-s0" in ids and "mnist-weight-lam0.001-s2" in ids and "mnist-clip-tau0.97-s1" in ids
    for r in runs:
        assert r.train["dataset"] == "mnist" and r.train["epochs"] == 3
        assert r.train["seed"] == r.meta["seed"] and r.id.endswith(f"s{r.meta['seed']}")
        assert r.suite is not None and r.suite["name"] == "demo"  # the default suite
    taus = [r for r in runs if r.meta["tau"] is not None]
    assert len(taus) == 3 * 2
    for r in taus:
        assert r.train["target_acc"] == r.meta["tau"] and r.meta["tau"] in (0.95, 0.97)
        assert r.train["lam"] == 0.02 and r.train["lam_step"] == 0.005 and r.train["lam_every"] == 2
        assert r.meta["lam"] is None and r.train["reg"] == "clip"
    for r in runs:
        if r.meta["tau"] is None:
            assert r.train["target_acc"] is None and r.train["lam"] == r.meta["lam"]
    assert {r.train["lam"] for r in runs if r.meta["method"] == "none"} == {0.0}
    assert sorted({r.meta["lam"] for r in runs if r.meta["method"] == "weight"}) == [1e-4, 1e-3]


def test_plan_experiments_override_top_level_defaults(tmp_path):
    p = tmp_path / "two.toml"
    p.write_text(textwrap.dedent("""\
        epochs = 5
        seeds = [0, 1]

        [[method]]
        reg = "clip"
        lam = 0.1

        [[experiment]]
        label = "reg"
        dataset = "regression"
        epochs = 7

        [[experiment]]
        dataset = "mnist"
        seeds = [3]
        n_train = 500
        n_test = 64
        train = { optimizer = "adam", lr = 0.002 }
        method = [{ reg = "none" }, { reg = "weight", lam = [0.001], label = "wd" }]
        """))
    raw = planning.load_sweep(p)
    assert raw["name"] == "two"  # defaults to the file's stem
    runs = planning.plan(raw, where=str(p))
    assert [r.id for r in runs] == ["reg-clip-lam0.1-s0", "reg-clip-lam0.1-s1", "mnist-none-s3", "mnist-wd-lam0.001-s3"]
    reg, mn = runs[:2], runs[2:]
    assert all(r.train["epochs"] == 7 and r.train["dataset"] == "regression" and r.suite is None for r in reg)
    assert reg[0].train["optimizer"] == "adam" and reg[0].train["model"]["arch"] == "mlp1d"  # regression defaults
    assert all(r.train["epochs"] == 5 and r.train["n_train"] == 500 and r.n_test == 64 for r in mn)
    assert all(r.train["optimizer"] == "adam" and r.train["lr"] == 0.002 for r in mn)
    assert mn[1].meta["label"] == "wd" and mn[1].meta["method"] == "weight"


def test_run_digest_is_stable_and_tracks_the_config():
    a = planning.plan(_reg_sweep(epochs=30))
    b = planning.plan(_reg_sweep(epochs=30))
    c = planning.plan(_reg_sweep(epochs=31))
    assert [r.digest() for r in a] == [r.digest() for r in b]
    assert all(x.digest() != y.digest() for x, y in zip(a, c))
    assert a[0].digest() != a[1].digest()
    d = planning.plan(_reg_sweep(seeds=[1]))
    assert a[0].digest() != d[0].digest()


BAD_PLANS = [
    ({"dataset": "regression", "bogus": 1, "method": [{"reg": "none"}]}, "unknown key 'bogus'"),
    ({"experiment": [{"dataset": "regression", "epocs": 3, "method": [{"reg": "none"}]}], "method": []},
     "unknown key 'epocs'"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": [0.1], "lamda": 1}]}, "unknown key 'lamda'"),
    ({"dataset": "regression", "method": [{"reg": "spectral", "lam": [0.1]}]}, "reg 'spectral'"),
    ({"dataset": "regression", "method": [{"lam": [0.1]}]}, "reg None"),
    ({"dataset": "regression", "method": [{"reg": "clip"}]}, "needs lam"),
    ({"dataset": "regression", "method": [{"reg": "weight", "lam": []}]}, "needs lam"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": [-0.1]}]}, "lam values must be numbers >= 0"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": [float("nan")]}]}, "lam values"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": [True]}]}, "lam values"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": ["0.1"]}]}, "lam values"),
    ({"dataset": "mnist", "method": [{"reg": "clip", "tau": [1.5]}]}, "1.5"),
    ({"dataset": "mnist", "method": [{"reg": "clip", "tau": [-0.5]}]}, "tau values"),
    ({"dataset": "regression", "method": [{"reg": "clip", "tau": [0.9]}]}, "discrepancy principle"),
    ({"dataset": "regression", "seeds": 0, "method": [{"reg": "none"}]}, "seeds must be a non-empty list"),
    ({"dataset": "regression", "seeds": [], "method": [{"reg": "none"}]}, "seeds must be a non-empty list"),
    ({"dataset": "regression", "seeds": ["a"], "method": [{"reg": "none"}]}, "seeds must be a non-empty list"),
    ({"method": [{"reg": "none"}]}, "dataset None is missing"),
    ({"dataset": "imagenet", "method": [{"reg": "none"}]}, "dataset 'imagenet'"),
    ({"dataset": "regression"}, "no [[method]]"),
    ({"dataset": "regression", "epochs": 0, "method": [{"reg": "none"}]}, "epochs"),
    ({"dataset": "regression", "method": [{"reg": "clip", "lam": [0.1]}, {"reg": "clip", "lam": [0.1]}]},
     "appears twice"),
    ({"dataset": "mnist", "suite": "no-such-suite", "method": [{"reg": "none"}]}, "no-such-suite"),
    ({"dataset": "mnist", "n_val": -1, "method": [{"reg": "none"}]}, "n_val"),
    ({"dataset": "mnist", "n_val": 1.5, "method": [{"reg": "none"}]}, "n_val"),
    ({"dataset": "regression", "method": [{"reg": "none", "train": {"bogus": 1}}]}, "unknown training setting"),
    ({"dataset": "regression", "method": [{"reg": "none", "train": [1]}]}, "train must be a table"),
]


def test_a_method_may_set_its_own_epochs_and_schedule():
    runs = planning.plan({"dataset": "regression", "epochs": 30, "train": {"lr_schedule": "cosine"},
                        "method": [{"reg": "none"}, {"reg": "weight", "lam": [0.1], "train": {"epochs": 7}}]})
    by = {r.meta["method"]: r for r in runs}
    assert by["none"].train["epochs"] == 30 and by["weight"].train["epochs"] == 7
    assert by["none"].train["lr_schedule"] == by["weight"].train["lr_schedule"] == "cosine"
    # the validation size is part of what defines a run: changing it means computing it again
    a, b = (planning.plan({"dataset": "mnist", "n_val": n, "method": [{"reg": "none"}]})[0] for n in (100, 200))
    assert a.digest() != b.digest() and a.n_val == 100


@pytest.mark.parametrize("raw,needle", BAD_PLANS, ids=[n for _, n in BAD_PLANS])
def test_plan_rejects_invalid_entries_with_one_line(raw, needle):
    with pytest.raises(SuiteError) as ei:
        planning.plan(raw, where="my.toml")
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg
    assert msg.startswith("my.toml") or needle == "no-such-suite"  # located in the sweep file
    assert ei.value.fix  # every error names a fix


def test_load_sweep_errors_are_suite_errors(tmp_path):
    with pytest.raises(SuiteError, match="does not exist"):
        planning.load_sweep(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("dataset = \n")
    with pytest.raises(SuiteError, match="not valid TOML") as ei:
        planning.load_sweep(bad)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def reg_sweep_dir(tmp_path_factory):
    """A finished two-run regression sweep (clip, weight; 30 epochs); tests work on copies."""
    out = tmp_path_factory.mktemp("regsweep") / "sweep"
    with one_thread():
        driver.run_sweep(_reg_sweep(), out, progress=False)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "sweep"
    shutil.copytree(src, dst)  # copy2 keeps the mtimes
    return dst


def test_finished_runs_are_done_and_a_rerun_touches_nothing(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    runs = planning.plan(_reg_sweep())
    assert all(records.is_done(out, r) for r in runs)
    before = {r.id: _file_state(records.run_dir(out, r)) for r in runs}
    table = driver.run_sweep(_reg_sweep(), out, progress=False)
    assert {r.id: _file_state(records.run_dir(out, r)) for r in runs} == before
    assert set(table.run) == {r.id for r in runs}
    for r in runs:
        man = json.loads((records.run_dir(out, r) / "manifest.json").read_text())
        assert man["digest"] == r.digest() and man["status"] == "done"
        assert set(man["files"]) == {"model.safetensors", "eval.json"}


def _redo_check(out: Path, victim: run.Run, others: list[run.Run], raw: dict) -> pd.DataFrame:
    assert not records.is_done(out, victim)
    before = {r.id: _file_state(records.run_dir(out, r)) for r in others}
    old_mse = float(pd.read_csv(out / "results.csv").set_index("run").loc[victim.id, "mse"])
    table = driver.run_sweep(raw, out, progress=False)
    assert records.is_done(out, victim)
    assert {r.id: _file_state(records.run_dir(out, r)) for r in others} == before  # untouched
    new_mse = float(table.set_index("run").loc[victim.id, "mse"])
    assert new_mse == pytest.approx(old_mse, rel=1e-5)  # the same seeded run, redone
    return table


def test_run_without_manifest_is_redone(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    victim, *others = planning.plan(_reg_sweep())
    d = records.run_dir(out, victim)
    (d / "manifest.json").unlink()
    old_model_mtime = (d / "model.safetensors").stat().st_mtime_ns
    _redo_check(out, victim, others, _reg_sweep())
    assert (d / "model.safetensors").stat().st_mtime_ns != old_model_mtime


def test_model_modified_after_manifest_is_redone(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    runs = planning.plan(_reg_sweep())
    victim, others = runs[1], [runs[0]]
    model = records.run_dir(out, victim) / "model.safetensors"
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 0xFF  # flip bits in the weights; the manifest still lists the old hash
    model.write_bytes(bytes(blob))
    _redo_check(out, victim, others, _reg_sweep())
    man = json.loads((model.parent / "manifest.json").read_text())
    assert man["files"]["model.safetensors"] == _io.sha256_file(model)


def test_eval_modified_or_manifest_corrupt_is_redone(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    a, b = planning.plan(_reg_sweep())
    ev = records.run_dir(out, a) / "eval.json"
    ev.write_text(ev.read_text().replace('"run"', '"run" ', 1))
    (records.run_dir(out, b) / "manifest.json").write_text("{not json")
    assert not records.is_done(out, a) and not records.is_done(out, b)
    driver.run_sweep(_reg_sweep(), out, progress=False)
    assert records.is_done(out, a) and records.is_done(out, b)


def test_changed_run_config_is_redone(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    old = planning.plan(_reg_sweep(epochs=30))
    new_raw = _reg_sweep(epochs=31)
    new = planning.plan(new_raw)
    assert [r.id for r in old] == [r.id for r in new]  # same ids, different configs
    assert all(not records.is_done(out, r) for r in new)
    table = driver.run_sweep(new_raw, out, progress=False)
    assert all(records.is_done(out, r) for r in new)
    assert set(table.epochs) == {31}
    for r in new:
        ev = json.loads((records.run_dir(out, r) / "eval.json").read_text())
        assert ev["train"]["epochs"] == 31 and len(ev["history"]) == 31
    assert set(pd.read_csv(out / "results.csv").epochs) == {31}


def test_fresh_discards_finished_runs(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    runs = planning.plan(_reg_sweep())
    old = {r.id: (records.run_dir(out, r) / "manifest.json").stat().st_mtime_ns for r in runs}
    driver.run_sweep(_reg_sweep(), out, progress=False, fresh=True)
    assert all((records.run_dir(out, r) / "manifest.json").stat().st_mtime_ns != old[r.id] for r in runs)
    assert all(records.is_done(out, r) for r in runs)


def test_runs_dropped_from_the_plan_stay_on_disk_but_leave_the_table(reg_sweep_dir, tmp_path):
    out = _copy(reg_sweep_dir, tmp_path)
    raw = _reg_sweep()
    raw["method"] = raw["method"][:1]
    table = driver.run_sweep(raw, out, progress=False)
    assert set(table.run) == {"regression-clip-lam0.01-s0"}
    assert set(pd.read_csv(out / "results.csv").run) == {"regression-clip-lam0.01-s0"}
    assert (out / "runs" / "regression-weight-lam0.001-s0" / "manifest.json").is_file()
    assert json.loads((out / "sweep.json").read_text())["runs"] == ["regression-clip-lam0.01-s0"]


def test_jobs_below_one_is_a_user_error(tmp_path):
    with pytest.raises(RobustclipError, match="--jobs"):
        driver.run_sweep(_reg_sweep(), tmp_path / "x", jobs=0, progress=False)


# --------------------------------------------------------------------------- kill -9 and restart


def test_sweep_killed_mid_way_resumes_without_touching_finished_runs(tmp_path):
    """A real ``kill -9`` of ``robustclip sweep`` after some runs finished, then a restart."""
    toml = tmp_path / "kill.toml"
    toml.write_text(textwrap.dedent("""\
        name = "kill"
        dataset = "regression"
        epochs = 300
        seeds = [0]

        [[method]]
        reg = "clip"
        lam = [0.01, 0.1]

        [[method]]
        reg = "weight"
        lam = [0.001, 0.01]
        """))
    out = tmp_path / "out"
    planned = {r.id for r in planning.plan(planning.load_sweep(toml))}
    assert len(planned) == 4
    cmd = [sys.executable, "-m", "robustclip", "sweep", str(toml), "--out", str(out), "--quiet"]
    killed_with: set[str] | None = None
    for attempt in range(4):
        proc = subprocess.Popen(cmd + (["--fresh"] if attempt else []), cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                n = len(_manifests(out))
                if 1 <= n < len(planned):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None and time.monotonic() >= deadline:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        done = _manifests(out)
        if proc.returncode == -signal.SIGKILL and 1 <= len(done) < len(planned):
            killed_with = done
            break
    assert killed_with, "could not kill the sweep between its first and last run in 4 attempts"

    finished = {rid: _file_state(out / "runs" / rid) for rid in killed_with}
    assert all(set(files) == {"model.safetensors", "eval.json", "manifest.json"} for files in finished.values())
    t_restart = time.time_ns()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]

    # finished runs: byte-identical and not rewritten
    assert {rid: _file_state(out / "runs" / rid) for rid in killed_with} == finished
    # unfinished runs: completed now
    runs = planning.plan(planning.load_sweep(toml), where=str(toml))
    assert all(records.is_done(out, r) for r in runs)
    for rid in planned - killed_with:
        assert (out / "runs" / rid / "manifest.json").stat().st_mtime_ns >= t_restart
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == records.RESULT_COLUMNS
    assert set(table.run) == planned and len(table) == len(planned)  # one "fit" row per regression run
    assert f"{len(planned)} runs" in res.stdout
    assert [f for f in _tmp_files(out) if "/runs/" in f] == []
    # the killed driver's claims (its pid is gone) were taken over and released: none is left behind
    assert sorted(p.name for p in (out / "claims").glob("*.json")) == []
    # a kill that lands while results.csv is being written (right after a manifest appears, so
    # not rare) leaves .results.csv.*.tmp behind; see the deterministic test below
    assert _tmp_files(out) == [], "the restarted sweep left a killed writer's temporary file behind"


def test_kill_during_results_csv_write_leaves_no_tmp_after_restart(tmp_path):
    """kill -9 exactly while results.csv is being written (after the first run), then restart.

    The atomic writer's temporary file cannot be cleaned up by a killed process;
    the restarted sweep must not leave it behind.
    """
    out = tmp_path / "out"
    script = textwrap.dedent(f"""\
        import contextlib, os, signal, sys
        from pathlib import Path
        from robustclip.core import files as _io
        from robustclip.sweeps import driver
        orig = _io.atomic_path

        @contextlib.contextmanager
        def dying(path):
            with orig(path) as tmp:
                yield tmp
                if Path(path).name == "results.csv":
                    os.kill(os.getpid(), signal.SIGKILL)  # the data is written, the rename not yet done

        _io.atomic_path = dying
        driver.run_sweep({_reg_sweep()!r}, {str(out)!r}, progress=False)
        """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert len(_manifests(out)) == 1 and _tmp_files(out)  # killed mid-write: one run done, a .tmp left
    driver.run_sweep(_reg_sweep(), out, progress=False)
    assert len(_manifests(out)) == 2
    assert _tmp_files(out) == [], "a restarted sweep leaves the killed writer's temporary file behind"


# --------------------------------------------------------------------------- the results table


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory, data_dir):
    """Regression (clip, weight) and MNIST (none, clip) runs, each tiny; returns (out, table, runs)."""
    base = tmp_path_factory.mktemp("mixed")
    (base / "tiny.toml").write_text(SUITE_TOML)
    raw = {"name": "mixed", "experiment": [
        {"label": "regression", "dataset": "regression", "epochs": 30,
         "method": [{"reg": "clip", "lam": [0.01]}, {"reg": "weight", "lam": [0.001]}]},
        {"label": "mnist", "dataset": "mnist", "epochs": 1, "n_train": 500, "n_test": 64, "n_val": 50,
         "model": SMALL, "suite": str(base / "tiny.toml"),
         "method": [{"reg": "none"}, {"reg": "clip", "lam": [0.1]}]},
    ]}
    with one_thread():
        table = driver.run_sweep(raw, base / "out", data_dir=str(data_dir), progress=False)
    return base / "out", table, planning.plan(raw)


# selection scores on each run's own validation split: clean, and the worst case at the suite's headline (the
# tiny suite's largest L2 ε)
VAL_ROWS = {("val_clean", "none", 0.0), ("val_worst_case", "L2", 2.0)}


def test_results_table_columns_and_one_row_per_run_attack_eps(mixed_sweep):
    out, table, runs = mixed_sweep
    csv = pd.read_csv(out / "results.csv")
    assert list(table.columns) == records.RESULT_COLUMNS
    assert list(csv.columns) == records.RESULT_COLUMNS
    assert list(records.gather(out).columns) == records.RESULT_COLUMNS + ["experiment"]
    assert len(csv) == len(table)
    assert set(table.run) == {r.id for r in runs}
    assert not table.duplicated(["run", "attack", "norm", "eps"]).any()
    for r in runs:
        rows = table[table.run == r.id]
        got = {(a, n, float(e)) for a, n, e in zip(rows.attack, rows.norm, rows.eps)}
        if r.train["dataset"] == "regression":
            assert got == {("fit", "none", 0.0)}
        else:
            assert got == SUITE_ROWS | VAL_ROWS and len(rows) == len(SUITE_ROWS | VAL_ROWS)
            val = rows.attack.str.startswith("val_")
            assert (rows[val].n == 50).all()
            assert float(rows[rows.attack == "val_worst_case"].accuracy.iloc[0]) <= float(
                rows[rows.attack == "val_clean"].accuracy.iloc[0])
            assert (rows[(rows.attack != "clean_full") & ~val].n == 64).all()
            assert (rows[rows.attack == "clean_full"].n == 10000).all()
            assert rows.accuracy.between(0, 1).all()
            assert (rows.ci_low <= rows.accuracy + 1e-12).all() and (rows.accuracy <= rows.ci_high + 1e-12).all()
        assert (rows.label == r.meta["label"]).all() and (rows.seed == r.meta["seed"]).all()
        assert (rows.method == r.train["reg"]).all() and (rows.epochs == r.train["epochs"]).all()
        assert (rows.final_lam == r.train["lam"]).all()


def test_regression_rows_have_exact_lipschitz_between_the_bounds(mixed_sweep):
    _, table, _ = mixed_sweep
    reg = table[table.dataset == "regression"]
    assert len(reg) == 2
    for _, r in reg.iterrows():
        lo, ex, up = float(r.lip_lower), float(r.lip_exact), float(r.lip_upper)
        assert all(math.isfinite(v) and v > 0 for v in (lo, ex, up))
        assert lo <= ex * (1 + 1e-3) and ex <= up * (1 + 1e-6)
        assert math.isfinite(float(r.mse)) and r.mse >= 0
    cls = table[table.dataset == "mnist"]
    assert cls.lip_exact.isna().all() and cls.mse.isna().all()
    assert (cls.lip_lower <= cls.lip_upper * (1 + 1e-6)).all()


def test_eval_json_and_manifest_of_each_run(mixed_sweep):
    out, table, runs = mixed_sweep
    for r in runs:
        d = records.run_dir(out, r)
        man = json.loads((d / "manifest.json").read_text())
        ev = json.loads((d / "eval.json").read_text())
        assert man["digest"] == r.digest()
        assert man["files"] == {n: _io.sha256_file(d / n) for n in ("model.safetensors", "eval.json")}
        assert ev["run"] == r.id and len(ev["rows"]) == (table.run == r.id).sum()
        assert {"lower", "upper"} <= set(ev["lipschitz"])
    sw = json.loads((out / "sweep.json").read_text())
    assert sw["runs"] == [r.id for r in runs] and sw["sweep"]["name"] == "mixed"
    assert {"torch", "python", "robustclip"} <= set(sw["versions"])


# --------------------------------------------------------------------------- command line


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("robustclip: error: "), err
    return lines[0]


def test_cli_sweep_from_flags(tmp_path, capsys):
    out = tmp_path / "flags"
    rc = main(["sweep", "--dataset", "regression", "--method", "clip:0.01,0.1", "--method", "weight:0.001",
               "--epochs", "30", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == records.RESULT_COLUMNS
    assert set(table.run) == {"regression-clip-lam0.01-s0", "regression-clip-lam0.1-s0",
                              "regression-weight-lam0.001-s0"}
    assert set(table.epochs) == {30}
    assert "3 runs" in captured.out and "results.csv" in captured.out
    sw = json.loads((out / "sweep.json").read_text())
    assert sw["sweep"]["dataset"] == "regression" and sw["sweep"]["epochs"] == 30


def test_cli_sweep_flags_with_tau_and_seeds_plans_right():
    import argparse

    from robustclip.cli.sweep import sweep_from_flags

    ns = argparse.Namespace(dataset="mnist", method=["none", "weight:1e-4,1e-3", "clip:tau=0.95,0.97"], seeds="0,1",
                            model=None, epochs=2, n_train=100, suite=None, n_test=None)
    raw = sweep_from_flags(ns)
    runs = planning.plan(raw)
    assert len(runs) == 2 * (1 + 2 + 2)
    assert sorted({r.train["target_acc"] for r in runs if r.meta["tau"] is not None}) == [0.95, 0.97]
    assert {r.train["epochs"] for r in runs} == {2} and {r.train["n_train"] for r in runs} == {100}


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "regression", "--method", "clip:abc"], "not a comma-separated list of numbers"),
    (["--dataset", "regression", "--method", "clip"], "needs lam"),
    (["--dataset", "regression", "--method", "clip:-1"], "lam values must be numbers >= 0"),
    (["--dataset", "regression", "--method", "none", "--seeds", "a,b"], "--seeds"),
    (["--method", "clip:0.1"], "give a sweep TOML file"),
    (["NO_SUCH_FILE.toml"], "does not exist"),
])
def test_cli_sweep_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    out = tmp_path / "never"
    rc = main(["sweep", *args, "--out", str(out), "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and needle in line
    assert not out.exists()  # nothing written for a rejected sweep


def test_cli_sweep_invalid_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "regression"\nepochs = 3\n[[method]]\nreg = "clip"\nlam = [0.1]\nwarmpu = 1\n')
    rc = main(["sweep", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "unknown key 'warmpu'" in line and str(bad) in line
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("dataset = [\n")
    rc = main(["sweep", str(syntax), "--out", str(tmp_path / "o"), "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "not valid TOML" in line


def test_cli_sweep_error_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "robustclip", "sweep", "--dataset", "regression", "--method",
                          "clip:abc", "--out", str(tmp_path / "o")], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert _one_error_line(res.stderr) and "Traceback" not in res.stderr
