"""The Ray engine on a local Ray instance this module starts itself (2 CPUs, no dashboard, no external service).

Ray comes with the ``dev`` extra. The runs are tiny 1-D regressions (5 epochs) and one MNIST run whose data is
missing, so the whole module takes seconds once Ray is up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny import SMALL, SUITE_TOML, one_thread

from robustclip.checkpoints import format as checkpoints
from robustclip.cli import main
from robustclip.sweeps import driver, planning, records

# starting a Ray instance is most of the cost (about 25 s) and part of what is tested: .ci/run runs these with -m slow
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _reg() -> dict:
    return {"name": "reg", "dataset": "regression", "epochs": 5, "seeds": [0, 1],
            "method": [{"reg": "clip", "lam": [0.01]}, {"reg": "weight", "lam": [0.001]}]}


def _no_time(t: pd.DataFrame) -> pd.DataFrame:
    return t.drop(columns=["train_seconds"]).sort_values(["run", "attack", "norm", "eps"]).reset_index(drop=True)


def test_ray_sweep_gives_the_same_table_manifests_and_resume_as_local(ray_instance, tmp_path):
    raw = _reg()
    with one_thread():
        local = driver.run_sweep(raw, tmp_path / "local", progress=False)
    outcome = driver.sweep(raw, tmp_path / "ray", engine="ray", cpus_per_run=1, progress=False)
    assert not outcome.failed and len(outcome.ran) == 4
    assert ray_instance.is_initialized()  # a Ray instance the caller started is left running
    pd.testing.assert_frame_equal(_no_time(outcome.table), _no_time(local))
    csv = pd.read_csv(tmp_path / "ray" / "results.csv")
    assert list(csv.columns) == records.RESULT_COLUMNS and set(csv.run) == set(local.run)
    for r in planning.plan(raw):
        assert records.is_done(tmp_path / "ray", r)
        man = json.loads((records.run_dir(tmp_path / "ray", r) / "manifest.json").read_text())
        assert man["digest"] == r.digest() and man["status"] == "done"
        a, _ = checkpoints.load(records.run_dir(tmp_path / "local", r) / "model.safetensors")
        b, meta = checkpoints.load(records.run_dir(tmp_path / "ray", r) / "model.safetensors")
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        assert meta.sweep_run is not None and meta.sweep_run["digest"] == r.digest()
    assert list((tmp_path / "ray" / "claims").glob("run-*.json")) == []
    # resume: a finished Ray sweep, run again on either engine, computes nothing
    again = driver.sweep(raw, tmp_path / "ray", engine="ray", progress=False)
    assert again.ran == [] and set(again.table.run) == set(local.run)
    with one_thread():
        assert driver.sweep(raw, tmp_path / "ray", progress=False).ran == []


def test_ray_failing_run_is_recorded_others_finish_exit_1(ray_instance, tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(SUITE_TOML)
    spec = json.dumps(SMALL).replace('":', '" =').replace("{", "{ ").replace("}", " }")
    (tmp_path / "s.toml").write_text(f"""\
name = "mixed"
[[experiment]]
label = "reg"
dataset = "regression"
epochs = 5
  [[experiment.method]]
  reg = "weight"
  lam = [0.001]
[[experiment]]
label = "mn"
dataset = "mnist"
epochs = 1
n_train = 100
n_test = 16
suite = "{tmp_path / 'tiny.toml'}"
model = {spec}
  [[experiment.method]]
  reg = "none"
""")
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    out = tmp_path / "out"
    rc = main(["sweep", str(tmp_path / "s.toml"), "--out", str(out), "--engine", "ray", "--quiet",
               "--data-dir", str(nodata)])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "FAILED mn-none-s0: DataError" in printed  # the run's own error, not Ray's wrapper
    fail = json.loads((out / "runs" / "mn-none-s0" / "failure.json").read_text())
    assert fail["error"].startswith("DataError") and not (out / "runs" / "mn-none-s0" / "manifest.json").exists()
    assert set(pd.read_csv(out / "results.csv").run) == {"reg-weight-lam0.001-s0"}
    assert Path(out / "runs" / "reg-weight-lam0.001-s0" / "manifest.json").is_file()
