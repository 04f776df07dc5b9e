"""The docs' λ study of your own model (examples/lambda-study, docs/lambda-study.md) at tiny scale: the sweep of the
user's residual CNN on .npz data and on the same images as a folder, then the report and the paired comparison;
and the same study in the user's own training loop (rc.ClipPenalty, rc.save, evaluate, report)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny import one_thread, run_cli

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "examples" / "lambda-study"

pytestmark = [pytest.mark.data, pytest.mark.slow]  # minutes of training: CI runs it with -m slow


@pytest.fixture
def study(tmp_path, monkeypatch, data_dir) -> Path:
    """The example folder copied, its data made at tiny scale (150 training, 40 test images)."""
    d = tmp_path / "study"
    shutil.copytree(STUDY, d)
    env = {**os.environ, "ROBUSTCLIP_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "make_data.py", "--n-train", "150", "--n-test", "40"], cwd=d, env=env,
                   check=True, capture_output=True)
    monkeypatch.chdir(d)
    monkeypatch.delitem(sys.modules, "studynets", raising=False)
    text = (d / "study.toml").read_text(encoding="utf-8")
    (d / "study.toml").write_text(text.replace("seeds = [0, 1]", "seeds = [0]").replace("n_test = 200", "n_test = 40"),
                                  encoding="utf-8")
    with one_thread():
        yield d


def test_the_study_sweeps_reports_and_compares_a_users_model(study):
    rc_, out, err = run_cli(["sweep", "study.toml", "--out", "runs/study", "--quiet"])
    assert rc_ == 0, err
    table = pd.read_csv(study / "runs" / "study" / "results.csv")
    assert sorted(set(table.method)) == ["clip", "none", "weight"]
    assert len(set(table.run)) == 6 and (table[table.attack == "clean"].n == 40).all()
    rc_, out, err = run_cli(["report", "runs/study", "--out", "reports/study"])
    assert rc_ == 0, err
    assert (study / "reports" / "study" / "index.html").is_file()


def test_the_study_takes_the_same_images_as_a_folder(study):
    text = (study / "study.toml").read_text(encoding="utf-8").replace('data = "train.npz"', 'data = "train_images"')
    text = text.replace("lam = [0.01, 0.05, 0.2]", "lam = [0.05]").replace("lam = [0.0001, 0.001]", "lam = [0.001]")
    (study / "folder.toml").write_text(text, encoding="utf-8")
    rc_, _, err = run_cli(["sweep", "folder.toml", "--out", "runs/folder", "--quiet"])
    assert rc_ == 0, err
    assert len(set(pd.read_csv(study / "runs" / "folder" / "results.csv").run)) == 3


def test_the_study_in_your_own_loop_saves_evaluates_reports_and_compares(study, data_dir):
    env = {**os.environ, "ROBUSTCLIP_DATA": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(study)}
    subprocess.run([sys.executable, "own_loop.py", "--out", "runs/loop", "--seeds", "0"], cwd=study, env=env,
                   check=True, capture_output=True)
    ckpts = sorted(str(p) for p in (study / "runs" / "loop").glob("*.safetensors"))
    assert len(ckpts) == 6
    rc_, _, err = run_cli(["evaluate", *ckpts, "--model", "studynets:res_cnn", "--data", "test.npz", "--suite",
                           "ci-quick", "--n", "40", "--lipschitz", "off", "--out", "runs/loop-eval", "--quiet"])
    assert rc_ == 0, err
    rc_, out, err = run_cli(["compare", "runs/loop-eval", "--json"])
    assert rc_ == 0, err
    doc = json.loads(out)
    pairs = doc["pairs"]
    assert len({(p["a"], p["b"]) for p in pairs}) == 15  # 6 checkpoints: every pair, on the same 40 images
    assert all(p["paired"] for p in pairs) and all(0 <= p["p_value"] <= 1 for p in pairs)
    rc_, _, err = run_cli(["report", "runs/loop-eval", "--out", "reports/loop"])
    assert rc_ == 0, err
    page = (study / "reports" / "loop" / "index.html").read_text(encoding="utf-8")
    assert "clip" in page.lower() and "weight" in page.lower()
