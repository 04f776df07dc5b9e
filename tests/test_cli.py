"""The command line, end to end on small data slices.

``train`` writes a loadable checkpoint, ``evaluate`` writes results.csv,
results.json and lipschitz.json (in-process through ``cli.main`` and once as a
real ``python -m robustclip`` process), ``data --check`` passes on the shared
data. Every user error exits with status 2 and exactly one stderr line starting
``robustclip: error:``, never a traceback. Every ``--help`` shows examples.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny import assert_one_line_error, run_cli

from robustclip.checkpoints import format as checkpoints
from robustclip.models import specs as models

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["model", "dataset", "attack", "norm", "eps", "accuracy", "n", "ci_low", "ci_high"]

TINY_SUITE = """\
name = "tiny"
description = "64 images, clean, noise, FGSM and PGD-L2 with 5 steps"
n = 64
batch_size = 64
seed = 0

[eps]
L2 = [0.5, 1.0]

[[attack]]
type = "clean"

[[attack]]
type = "noise"
sigma = 0.3

[[attack]]
type = "fgsm"
norm = "L2"

[[attack]]
type = "pgd"
norm = "L2"
steps = 5
"""


_main = run_cli




@pytest.fixture(scope="module")
def work(tmp_path_factory, data_dir):
    """A CLIP checkpoint trained through the CLI, and the tiny suite file."""
    d = tmp_path_factory.mktemp("cli")
    (d / "tiny.toml").write_text(TINY_SUITE, encoding="utf-8")
    ckpt = d / "x.safetensors"
    rc, out, err = _main(["train", "--dataset", "mnist", "--reg", "clip", "--lam", "0.1", "--epochs", "1",
                          "--n-train", "1000", "--out", str(ckpt), "--quiet", "--data-dir", str(data_dir)])
    return {"dir": d, "suite": d / "tiny.toml", "ckpt": ckpt, "train": (rc, out, err)}


@pytest.fixture(scope="module")
def evaluated(work, data_dir):
    out_dir = work["dir"] / "eval"
    res = _main(["evaluate", str(work["ckpt"]), "--suite", str(work["suite"]), "--out", str(out_dir), "--quiet",
                 "--data-dir", str(data_dir)])
    return out_dir, res


# --------------------------------------------------------------------------- end to end


def test_train_writes_a_loadable_checkpoint(work):
    rc, out, err = work["train"]
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"wrote {work['ckpt']}" in out
    model, meta = checkpoints.load(work["ckpt"])
    assert meta["dataset"] == "mnist"
    assert meta["train"]["method"] == "clip" and meta["train"]["lam"] == pytest.approx(0.1)
    assert meta["train"]["epochs"] == 1 and meta["data"]["n_train"] == 1000
    assert meta["model"] == models.paper_spec()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_evaluate_writes_results_csv_json_and_lipschitz(evaluated, work):
    out_dir, (rc, out, err) = evaluated
    assert rc == 0, err
    assert "Traceback" not in err
    assert not [ln for ln in err.splitlines() if ln.startswith("robustclip: error")]
    assert "results.csv" in out
    frame = pd.read_csv(out_dir / "results.csv")
    assert list(frame.columns) == COLUMNS
    assert set(frame.n) == {64} and set(frame.model) == {"x"} and set(frame.dataset) == {"mnist"}
    attacks = set(frame.attack)
    assert {"clean", "noise", "fgsm", "pgd", "worst_case", "certified"} <= attacks
    assert ((frame.ci_low <= frame.accuracy) & (frame.accuracy <= frame.ci_high)).all()
    worst = frame[frame.attack == "worst_case"].sort_values("eps")
    assert list(worst.eps) == [0.5, 1.0]
    doc = json.loads((out_dir / "results.json").read_text())
    assert doc["suite"] == "tiny" and doc["suite_file"] == str(work["suite"])
    assert len(doc["results"]) == len(frame)
    assert doc["results"][0].keys() == set(COLUMNS)
    assert doc["runs"][0]["checkpoint"] == str(work["ckpt"]) and doc["runs"][0]["n"] == 64
    lips = json.loads((out_dir / "lipschitz.json").read_text())
    assert isinstance(lips, list) and len(lips) == 1
    lp = lips[0]
    assert lp["model"] == "x" and 0 < lp["lower"] <= lp["upper"]
    assert lp["ratio"] == pytest.approx(lp["upper"] / lp["lower"])


@pytest.mark.parametrize("mode", ["fast", "off"])
def test_evaluate_lipschitz_modes(evaluated, work, data_dir, tmp_path, mode):
    """``--lipschitz fast`` runs one cheap upper bound; ``off`` skips the ascent; the attacks do not change."""
    out_dir = tmp_path / mode
    rc, _, err = run_cli(["evaluate", work["ckpt"], "--suite", work["suite"], "--out", out_dir, "--quiet",
                          "--lipschitz", mode, "--data-dir", data_dir])
    assert rc == 0, err
    lp = json.loads((out_dir / "lipschitz.json").read_text())[0]
    if mode == "fast":
        assert [u["method"] for u in lp["uppers"]] == ["layer_product_fft"] and 0 < lp["lower"] <= lp["upper"]
        assert lp["plan"]["mode"] == "fast"
    else:
        assert lp["lower"] == 0 and lp["upper"] > 0
    full = pd.read_csv(evaluated[0] / "results.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out_dir / "results.csv"), full)


def test_attack_certified_flag_makes_the_skipping_attack_attack_certified_samples(work, data_dir, tmp_path):
    """A suite whose PGD skips certified samples; ``--attack-certified`` makes it attack them too."""
    suite = tmp_path / "skip.toml"
    suite.write_text(TINY_SUITE.replace("[eps]", '[certify]\nmethods = ["lipschitz"]\nskip_certified = ["pgd"]\n\n'
                                        "[eps]").replace("L2 = [0.5, 1.0]", "L2 = [0.05, 0.5]"), encoding="utf-8")
    logs = {}
    for flag in ([], ["--attack-certified"]):
        out_dir = tmp_path / ("all" if flag else "skip")
        rc, _, err = run_cli(["evaluate", work["ckpt"], "--suite", suite, "--out", out_dir, "--quiet",
                              "--lipschitz", "off", "--data-dir", data_dir, *flag])
        assert rc == 0, err
        run = json.loads((out_dir / "results.json").read_text())["runs"][0]
        logs[bool(flag)] = (run["skip_certified"], run["attack_batches"]["pgd|L2|0.05"])
    (names, skipped), (names_all, every) = logs[False], logs[True]
    assert names == ["pgd"] and names_all == []
    assert skipped["certified_skipped"] > 0 and "certified_skipped" not in every
    assert skipped["samples"] + skipped["certified_skipped"] == every["samples"]


def test_evaluate_as_a_real_process(work, data_dir, tmp_path):
    out_dir = tmp_path / "proc"
    env = {**os.environ, "ROBUSTCLIP_DATA": str(data_dir), "ROBUSTCLIP_NO_DOWNLOAD": "1",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same threads, same float reductions
    proc = subprocess.run([sys.executable, "-m", "robustclip", "evaluate", str(work["ckpt"]), "--suite",
                           str(work["suite"]), "--out", str(out_dir), "--quiet"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    frame = pd.read_csv(out_dir / "results.csv")
    assert list(frame.columns) == COLUMNS
    assert (out_dir / "results.json").is_file() and (out_dir / "lipschitz.json").is_file()
    # the same checkpoint, suite and seed give the same numbers as the in-process run
    first = pd.read_csv(work["dir"] / "eval" / "results.csv")
    pd.testing.assert_frame_equal(frame, first)


def test_data_check_passes_on_the_shared_data(data_dir):
    rc, out, err = _main(["data", "--check", "--data-dir", str(data_dir)])
    assert rc == 0, err
    assert "mnist" in out and "content OK" in out


def test_no_command_prints_help():
    rc, out, _ = _main([])
    assert rc == 0 and "usage: robustclip" in out


# --------------------------------------------------------------------------- user errors


def _evaluate_bad(work, ckpt: Path, data_dir, suite: Path | None = None) -> tuple[int, str, str]:
    return _main(["evaluate", str(ckpt), "--suite", str(suite or work["suite"]), "--out",
                  str(work["dir"] / "bad-eval"), "--quiet", "--data-dir", str(data_dir)])


def test_pickled_checkpoint_is_refused(work, data_dir, tmp_path):
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    rc, _, err = _evaluate_bad(work, bad, data_dir)
    assert_one_line_error(rc, err, str(bad), "pickle")


def test_torch_save_checkpoint_is_refused(work, data_dir, tmp_path):
    bad = tmp_path / "torch.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    rc, _, err = _evaluate_bad(work, bad, data_dir)
    assert_one_line_error(rc, err, str(bad))


@pytest.mark.parametrize("how", ["truncated", "tiny", "garbage", "flipped-weights"])
def test_corrupt_checkpoint_is_refused(work, data_dir, tmp_path, how):
    raw = work["ckpt"].read_bytes()
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "tiny":
        raw = raw[:5]
    elif how == "garbage":
        raw = b"this is not a checkpoint at all, just some text\n" * 10
    else:  # flip bytes in the tensor data, after the header
        raw = bytearray(raw)
        for i in range(len(raw) - 400, len(raw) - 300):
            raw[i] ^= 0xFF
        raw = bytes(raw)
    bad = tmp_path / f"{how}.safetensors"
    bad.write_bytes(raw)
    rc, _, err = _evaluate_bad(work, bad, data_dir)
    assert_one_line_error(rc, err, str(bad))


def test_missing_checkpoint_path(work, data_dir, tmp_path):
    missing = tmp_path / "nope.safetensors"
    rc, _, err = _evaluate_bad(work, missing, data_dir)
    assert_one_line_error(rc, err, str(missing), "does not exist")


@pytest.mark.parametrize("text,words", [
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\nsteps = "ten"\neps = 1.0\n', ["steps", "ten"],
                 id="steps-string"),
    pytest.param('[[attack]]\ntype = "deepfool"\n', ["deepfool", "pgd"], id="unknown-type"),
    pytest.param('[[attack]\n', ["TOML"], id="invalid-toml"),
])
def test_suite_error(work, data_dir, tmp_path, text, words):
    suite = tmp_path / "bad-suite.toml"
    suite.write_text(text, encoding="utf-8")
    rc, _, err = _evaluate_bad(work, work["ckpt"], data_dir, suite)
    assert_one_line_error(rc, err, str(suite), *words)


def test_missing_suite_file(work, data_dir, tmp_path):
    rc, _, err = _evaluate_bad(work, work["ckpt"], data_dir, tmp_path / "none.toml")
    assert_one_line_error(rc, err, "none.toml", "not found")


def test_model_output_that_does_not_fit_the_dataset(work, data_dir, tmp_path):
    torch.manual_seed(0)
    three = models.build({"arch": "fc", "sizes": [784, 16, 3], "activation": "relu"})
    path = checkpoints.save(three, tmp_path / "three.safetensors", {"dataset": "mnist"})
    rc, _, err = _evaluate_bad(work, path, data_dir)
    assert_one_line_error(rc, err, "3 outputs", "10 classes")


@pytest.mark.parametrize("args,words", [
    pytest.param(["--dataset", "imagenet"], ["imagenet", "mnist", "fashion-mnist", "regression"], id="unknown-dataset"),
    pytest.param(["--reg", "lasso"], ["lasso", "none", "weight", "clip"], id="unknown-reg"),
    pytest.param(["--reg", "clip", "--lam", "-0.1"], ["λ", "-0.1"], id="negative-lam"),
    pytest.param(["--reg", "clip", "--lam", "0.1", "--target-acc", "1.5"], ["τ", "1.5", "(0, 1]"], id="tau-above-1"),
    pytest.param(["--reg", "clip", "--lam", "0.1", "--target-acc", "0"], ["τ", "> 0"], id="tau-zero"),
    pytest.param(["--reg", "none", "--lam", "0.1"], ["none", "--lam"], id="none-with-lam"),
    pytest.param(["--model", "{not json"], ["--model", "JSON"], id="bad-model-json"),
])
def test_train_user_errors(tmp_path, data_dir, args, words):
    out = tmp_path / "m.safetensors"
    rc, _, err = _main(["train", *args, "--epochs", "1", "--n-train", "200", "--out", str(out), "--quiet",
                        "--data-dir", str(data_dir)])
    assert_one_line_error(rc, err, *words)
    assert not out.exists()


def test_train_into_a_missing_folder(tmp_path, data_dir):
    out = tmp_path / "no" / "such" / "dir" / "m.safetensors"
    rc, _, err = _main(["train", "--epochs", "1", "--n-train", "200", "--out", str(out), "--quiet",
                        "--data-dir", str(data_dir)])
    assert_one_line_error(rc, err, str(out.parent), "mkdir")
    assert not out.parent.exists()


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("cmd", [[], ["data"], ["train"], ["evaluate"], ["compare"], ["sweep"], ["report"], ["demo"],
                                 ["check"]],
                         ids=lambda c: c[0] if c else "main")
def test_help_exits_0_and_shows_examples(cmd):
    rc, out, err = _main([*cmd, "--help"])
    assert rc == 0, err
    assert "usage: robustclip" in out
    assert "example" in out.lower()
    if cmd:
        assert f"robustclip {cmd[0]}" in out


def test_sample_size_note_compares_with_the_full_test_set_only_for_built_in_data():
    from robustclip.cli.evaluate import sample_size_note

    frame = pd.DataFrame([{"model": "m", "attack": "clean", "norm": None, "eps": 0.0, "accuracy": 0.9, "n": 500,
                           "ci_low": 0.87, "ci_high": 0.92}])
    assert "fewer than the 10,000 test images" in sample_size_note(frame, None)
    own = sample_size_note(frame, None, full_test=None)  # a user's --data file has no standard size
    assert own.startswith("m: n = 500 samples; clean 90.0%") and "fewer than" not in own
