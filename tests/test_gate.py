"""robustclip check: exit codes, the noise-aware comparison, baselines, JUnit output,
and our own robustness regression test against the committed baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from robustclip import gate
from robustclip.attacks import load_suite
from robustclip.cli import main
from robustclip.errors import RobustclipError
from robustclip.evaluation import wilson

from gate_models import BASELINES, SUITE, train_gate_model


@pytest.fixture(scope="module")
def gate_ckpts(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("gate")
    return {k: train_gate_model(k, d / f"ci-{k}.safetensors", str(data_dir)) for k in ("plain", "clip")}


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------- our own regression test


@pytest.mark.parametrize("kind", ["plain", "clip"])
def test_gate_models_match_committed_baselines(gate_ckpts, kind, capsys, tmp_path):
    xml = tmp_path / "junit.xml"
    code, out, err = _run(capsys, "check", gate_ckpts[kind], "--suite", SUITE,
                          "--baseline", BASELINES / f"ci-{kind}.json", "--junit-xml", xml)
    assert code == 0, out + err
    assert "OK: nothing regressed" in out
    root = ET.parse(xml).getroot()
    assert root.find("testsuite").get("failures") == "0"


def test_clip_stays_more_robust_than_plain():
    """The committed baselines themselves: CLIP beats plain at the suite's headline ε at near-equal clean accuracy."""
    norm, eps = load_suite(SUITE).headline
    acc = {}
    for kind in ("plain", "clip"):
        doc = gate.read_baseline(BASELINES / f"ci-{kind}.json")
        rows = {gate.metric_name(m): m["accuracy"] for m in doc["metrics"]}
        acc[kind] = (rows["clean"], rows[f"worst_case@{norm}:{eps:g}"])
    assert acc["clip"][1] > acc["plain"][1] + 0.05, acc
    assert acc["clip"][0] > acc["plain"][0] - 0.05, acc


# ----------------------------------------------------------------- exit codes


def test_exit_1_on_a_real_regression(gate_ckpts, capsys, tmp_path):
    """The plain model checked against the CLIP baseline: robustness dropped far beyond noise."""
    base = tmp_path / "clip.json"
    base.write_text((BASELINES / "ci-clip.json").read_text())
    xml = tmp_path / "junit.xml"
    code, out, _ = _run(capsys, "check", gate_ckpts["plain"], "--suite", SUITE, "--baseline", base, "--junit-xml", xml)
    assert code == 1
    assert "REGRESSED" in out and "worst_case@L2:1" in out
    suite = ET.parse(xml).getroot().find("testsuite")
    assert int(suite.get("failures")) >= 1
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert "worst_case@L2:1" in failed


def test_exit_2_on_input_errors(gate_ckpts, capsys, tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    code, _, err = _run(capsys, "check", gate_ckpts["clip"], "--suite", SUITE, "--baseline", corrupt)
    assert code == 2 and err.startswith("robustclip: error:") and "corrupt" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "check", gate_ckpts["clip"], "--suite", SUITE, "--baseline", tmp_path / "missing.json")
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "check", tmp_path / "nope.safetensors", "--suite", SUITE,
                        "--baseline", BASELINES / "ci-clip.json")
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "check", gate_ckpts["clip"], "--suite", "no-such-suite",
                        "--baseline", BASELINES / "ci-clip.json")
    assert code == 2 and "not found" in err


def test_mismatched_suite_or_n_is_an_error_not_a_pass(gate_ckpts, capsys, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(Path(SUITE).read_text().replace("steps = 20", "steps = 5"))
    code, _, err = _run(capsys, "check", gate_ckpts["clip"], "--suite", other, "--baseline", BASELINES / "ci-clip.json")
    assert code == 2 and "suite" in err
    code, _, err = _run(capsys, "check", gate_ckpts["clip"], "--suite", SUITE, "--n", "200",
                        "--baseline", BASELINES / "ci-clip.json")
    assert code == 2 and "n=500" in err and "n=200" in err


def test_update_baseline_writes_atomically_and_round_trips(gate_ckpts, capsys, tmp_path):
    base = tmp_path / "b.json"
    code, out, _ = _run(capsys, "check", gate_ckpts["clip"], "--suite", SUITE, "--baseline", base, "--update-baseline")
    assert code == 0 and base.is_file() and not list(tmp_path.glob("*.tmp"))
    doc = json.loads(base.read_text())
    assert doc["suite"] == "ci-quick" and doc["n"] == 500 and doc["seed"] == 0 and "torch" in doc["versions"]
    code, out, _ = _run(capsys, "check", gate_ckpts["clip"], "--suite", SUITE, "--baseline", base, "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["status"] == "ok" and all(c["change"] == 0 for c in rep["comparisons"])


# ----------------------------------------------------------------- the comparison itself


def _frame(acc: float, n: int = 500) -> pd.DataFrame:
    k = round(acc * n)
    lo, hi = wilson(k, n)
    return pd.DataFrame([{"model": "m", "dataset": "mnist", "attack": "worst_case", "norm": "L2", "eps": 1.0,
                          "accuracy": k / n, "n": n, "ci_low": lo, "ci_high": hi}])


def _baseline(acc: float, raw: dict, n: int = 500) -> dict:
    return gate.make_baseline(_frame(acc, n), {"lower": 2.0, "upper": 10.0}, suite_raw=raw, suite_name="s", n=n,
                              seed=0, dataset="mnist")


def test_tiny_drop_within_noise_passes_real_drop_fails():
    raw = {"name": "s"}
    base = _baseline(0.60, raw)
    lip = {"lower": 2.0, "upper": 10.0}
    tiny = gate.compare(base, _frame(0.585), lip, suite_raw=raw, n=500, dataset="mnist", tolerance=0.01)
    row = tiny[0]
    assert row.beyond_tolerance and not row.beyond_noise and not row.regressed
    real = gate.compare(base, _frame(0.50), lip, suite_raw=raw, n=500, dataset="mnist", tolerance=0.01)
    assert real[0].regressed
    within_tol = gate.compare(base, _frame(0.596), lip, suite_raw=raw, n=500, dataset="mnist", tolerance=0.01)
    assert not within_tol[0].beyond_tolerance and not within_tol[0].regressed
    improved = gate.compare(base, _frame(0.70), lip, suite_raw=raw, n=500, dataset="mnist")
    assert not improved[0].regressed


def test_lipschitz_rise_regresses():
    raw = {"name": "s"}
    base = _baseline(0.6, raw)
    rows = gate.compare(base, _frame(0.6), {"lower": 2.0, "upper": 12.0}, suite_raw=raw, n=500, dataset="mnist",
                        lip_tolerance=0.05)
    by = {r.metric: r for r in rows}
    assert by["lipschitz_upper"].regressed and not by["lipschitz_lower"].regressed
    rows = gate.compare(base, _frame(0.6), {"lower": 2.0, "upper": 10.2}, suite_raw=raw, n=500, dataset="mnist",
                        lip_tolerance=0.05)
    assert not any(r.regressed for r in rows)


def test_compare_rejects_mismatches():
    raw = {"name": "s"}
    base = _baseline(0.6, raw)
    lip = {"lower": 2.0, "upper": 10.0}
    with pytest.raises(RobustclipError, match="suite"):
        gate.compare(base, _frame(0.6), lip, suite_raw={"name": "other"}, n=500, dataset="mnist")
    with pytest.raises(RobustclipError, match="n=500"):
        gate.compare(base, _frame(0.6, 400), lip, suite_raw=raw, n=400, dataset="mnist")
    with pytest.raises(RobustclipError, match="fashion-mnist"):
        gate.compare(base, _frame(0.6), lip, suite_raw=raw, n=500, dataset="fashion-mnist")


def test_junit_output_parses_as_xml():
    raw = {"name": "s"}
    rows = gate.compare(_baseline(0.6, raw), _frame(0.4), {"lower": 2.0, "upper": 10.0}, suite_raw=raw, n=500,
                        dataset="mnist")
    root = ET.fromstring(gate.junit_xml(rows, name="m", seconds=1.5))
    suite = root.find("testsuite")
    assert suite.get("tests") == str(len(rows)) and suite.get("failures") == "1"
    assert [c.get("name") for c in suite.iter("testcase")][0] == "worst_case@L2:1"
