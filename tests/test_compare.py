"""Paired comparison of evaluated checkpoints (``robustclip compare``, ``rc.compare``).

Exact McNemar, Newcombe and Holm values on hand-made outcomes; calibration (two evaluations of one checkpoint
differ only by attack randomness: no difference shown, false-alarm rate at most 5% over many seeded null draws) and
power (a copy that loses 20 of 1,000 samples is detected) by simulation; settings compared over seeds with Welch's
t; unpaired comparison when the images differ; and the command line on real evaluate folders of a tiny model,
with every bad input as one line, exit 2 and nothing written.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from page_check import APT_LINE, check_page, chromium, first_screen_problems
from scipy import stats as sps
from tiny import SMALL, assert_one_line_error, one_thread, run_cli, suite_toml

import robustclip as rc
from robustclip import stats
from robustclip.errors import RobustclipError
from robustclip.evaluation.folders import Evaluated
from robustclip.reports.compare import compare_evaluations, compare_pair
from robustclip.reports.labels import Label, parse_label

needs_chromium = pytest.mark.skipif(chromium() is None, reason=f"chromium is not installed ({APT_LINE})")

CELL = ("L2", 1.0)


def entry(key: str, right: np.ndarray, *, images: str | None = "same", method: str | None = None,
          lam: float | None = None, seed: int | None = None, sha: str | None = None, suite: str = "s",
          dataset: str = "d") -> Evaluated:
    """A hand-made evaluation: ``right`` is the per-sample worst-case outcome at :data:`CELL`."""
    right = np.asarray(right, dtype=bool)
    return Evaluated(key=key, name=key, folder=Path("f"), checkpoint=f"{key}.safetensors", sha256=sha or key,
                     suite=suite, suite_digest="x", dataset=dataset, n=len(right), images=images, attack_seed=0,
                     method=method, lam=lam, seed=seed, outcomes={CELL: right}, headline=CELL)


def ones(n: int, idx: list[int] | range) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(idx)] = True
    return out


# --------------------------------------------------------------------------- exact values


def test_exact_mcnemar_and_holm_on_hand_made_outcomes():
    a = ones(100, range(60))                                    # samples 0..59 right
    b = ones(100, [*range(10, 60), 60, 61])                     # loses 0..9, gains 60, 61
    c = ones(100, [*range(5, 60), *range(60, 65)])              # loses 0..4, gains 60..64
    res = compare_evaluations([entry("A", a), entry("B", b), entry("C", c)])
    by = {(p.a, p.b): p for p in res.pairs}
    ab, ac, bc = by[("A", "B")], by[("A", "C")], by[("B", "C")]
    assert (ab.a_only, ab.b_only) == (10, 2) and (ac.a_only, ac.b_only) == (5, 5) and (bc.a_only, bc.b_only) == (0, 8)
    assert ab.p_value == 2 * (1 + 12 + 66) / 4096                # 2 P(X >= 10), X ~ Bin(12, 1/2)
    assert ac.p_value == 1.0
    assert bc.p_value == 2 / 256                                 # 2 P(X >= 8), X ~ Bin(8, 1/2)
    # Holm: 0.0078 x 3, then 0.0386 x 2, then 1
    assert bc.p_holm == pytest.approx(3 * 2 / 256) and ab.p_holm == pytest.approx(2 * 158 / 4096)
    assert ac.p_holm == 1.0
    assert bc.significant and not ab.significant and not ac.significant  # A-B: raw p < 0.05, not after Holm
    assert ab.difference == pytest.approx(0.08) and bc.difference == pytest.approx(-0.08)
    assert all(p.paired and p.family == 3 for p in res.pairs)
    lo, hi = stats.newcombe_paired(50, 10, 2, 38)
    assert (ab.ci_low, ab.ci_high) == (lo, hi) and lo < 0.08 < hi
    assert "C is more robust than B at L2 ε = 1 by 8.0 points" in bc.sentence()
    assert bc.sentence().endswith("Holm-adjusted over 3 pairs)")
    assert ab.sentence().startswith("A vs B at L2 ε = 1: no difference shown at n = 100 (A − B = +8.0 points")


def test_holm_and_newcombe_against_published_values():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]) == []
    lo, hi = stats.newcombe_paired(59, 6, 16, 80)               # Fagerland et al. (2017), ch. 8: Cavo et al.
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)
    lo, hi = stats.newcombe_unpaired(7, 34, 1, 34)              # ch. 4: Perondi et al.
    assert (round(lo, 4), round(hi, 4)) == (0.0189, 0.3404)
    lo, hi = stats.newcombe_paired(100, 0, 0, 0)                # every sample right by both: still an interval
    assert lo < 0 < hi
    assert stats.fisher_p(7, 34, 1, 34) == pytest.approx(sps.fisher_exact([[7, 27], [1, 33]]).pvalue)


def test_different_images_are_compared_unpaired_and_said_so():
    a, b = ones(200, range(120)), ones(100, range(50))
    p = compare_evaluations([entry("A", a, images="x"), entry("B", b, images="y")]).pairs[0]
    assert not p.paired and p.a_only is None and p.test == "Fisher exact (unpaired)"
    assert p.p_value == pytest.approx(stats.fisher_p(120, 200, 50, 100))
    assert (p.ci_low, p.ci_high) == stats.newcombe_unpaired(120, 200, 50, 100)
    assert "unpaired: the images differ" in p.sentence() and "n = 200 and 100" in p.sentence()
    legacy = compare_evaluations([entry("A", a[:100], images=None), entry("B", b, images=None)]).pairs[0]
    assert not legacy.paired and "no images digest recorded" in (legacy.note or "")


def test_settings_with_seeds_are_compared_with_welch_t():
    acc = {("clip", 0.5): [60, 62, 61], ("weight", 1e-3): [50, 54, 52]}
    entries = [entry(f"{m}{s}", ones(100, range(k)), method=m, lam=lam, seed=s)
               for (m, lam), ks in acc.items() for s, k in enumerate(ks)]
    res = compare_evaluations(entries)
    (sp,) = [s for s in res.settings if s.cell == CELL]
    d, lo, hi, p = stats.welch([0.60, 0.62, 0.61], [0.50, 0.54, 0.52])
    assert (sp.difference, sp.ci_low, sp.ci_high, sp.p_value) == (d, lo, hi, p)
    assert p == pytest.approx(sps.ttest_ind([0.60, 0.62, 0.61], [0.50, 0.54, 0.52], equal_var=False).pvalue)
    assert sp.significant
    assert res.answers() == [sp.sentence()]
    assert sp.sentence().startswith("CLIP λ = 0.5 is more robust than weight λ = 1e-3 at L2 ε = 1 by 9.0 points")
    assert "Welch t over 3 and 3 seeds" in sp.sentence()
    assert res.labels["clip0"] == "CLIP λ = 0.5 (seed 0)"  # seeds tell the checkpoints of one setting apart
    assert len(res.pairs) == 15                             # and every checkpoint pair is still compared


# --------------------------------------------------------------------------- calibration and power (simulated)


def _propensities(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-sample chance of surviving one attack run: most samples are always or never robust; 5% are borderline,
    where the attack's random start decides (as between two attack seeds)."""
    q = np.where(rng.random(n) < 0.55, 1.0, 0.0)
    border = rng.random(n) < 0.05
    q[border] = rng.uniform(0.2, 0.8, int(border.sum()))
    return q


def test_calibration_one_checkpoint_two_attack_seeds_shows_no_difference_at_5_percent():
    rng = np.random.default_rng(0)
    draws, n, alarms, covered, any_alarm = 2000, 1000, 0, 0, 0
    for _ in range(draws):
        q = _propensities(rng, n)
        a, b = rng.random(n) < q, rng.random(n) < q
        (p,) = compare_evaluations([entry("A", a, sha="same"), entry("B", b, sha="same")]).pairs
        alarms += p.significant
        covered += p.ci_low <= 0.0 <= p.ci_high
    for _ in range(500):  # four evaluations of one checkpoint: 6 pairs, Holm keeps the family-wise rate
        q = _propensities(rng, n)
        res = compare_evaluations([entry(k, rng.random(n) < q, sha="same") for k in "ABCD"])
        any_alarm += any(p.significant for p in res.pairs)
    rate = alarms / draws
    assert 0.005 <= rate <= 0.05 + 2 * (0.05 * 0.95 / draws) ** 0.5, rate  # at most 5% (within 2 SE), never 0
    assert covered / draws >= 0.94, covered / draws
    assert any_alarm / 500 <= 0.05 + 2 * (0.05 * 0.95 / 500) ** 0.5, any_alarm / 500


def test_power_a_true_drop_of_2_points_at_n_1000_is_detected():
    """About 20 discordant samples of attack noise per 1,000 (the tiny model's two attack seeds give 2) on top of
    the 20 lost: the exact McNemar test finds the drop in 91% of 300 draws; unpaired, in none."""
    rng = np.random.default_rng(1)
    draws, n, found, found_unpaired = 300, 1000, 0, 0
    for _ in range(draws):
        q = _propensities(rng, n)
        a, b = rng.random(n) < q, rng.random(n) < q             # the copy: same model, another attack seed...
        held = np.flatnonzero(a & (q == 1.0))
        b[rng.choice(held, 20, replace=False)] = False          # ...that loses 20 samples the original holds
        p = compare_pair(entry("orig", a), entry("copy", b), CELL, "orig", "copy")
        p.p_holm = p.p_value
        found += p.significant and p.difference > 0
        u = compare_pair(entry("orig", a, images="x"), entry("copy", b, images="y"), CELL, "orig", "copy")
        u.p_holm = u.p_value
        found_unpaired += u.significant
    assert found / draws >= 0.85, found / draws
    assert found_unpaired / draws < 0.5, found_unpaired / draws  # what pairing buys: unpaired, mostly missed


# --------------------------------------------------------------------------- labels


def test_labels_parse_and_bad_labels_are_one_line_errors():
    assert parse_label("a=weight:1e-3") == ("a", Label("weight", 1e-3, None))
    assert parse_label("dir/x=y.pt=clip:0.5:3") == ("dir/x=y.pt", Label("clip", 0.5, 3))
    for bad, word in [("a=clip:nan", "finite"), ("a=clip:inf:0", "finite"), ("a=clip:-1", "finite"),
                      ("a=clip:x", "not a number"), ("a=clip", "METHOD:λ"), ("clip:0.5", "CKPT=METHOD"),
                      ("a=clip:0.5:x", "whole number"), ("a= :0.5", "not a name")]:
        with pytest.raises(RobustclipError, match=word):
            parse_label(bad)
    a, b = entry("A", ones(10, [1])), entry("B", ones(10, [2]))
    with pytest.raises(RobustclipError, match="duplicate label"):
        compare_evaluations([a, b], labels=["A=clip:0.5:0", "B=clip:0.5:0"])
    with pytest.raises(RobustclipError, match="no evaluated checkpoint"):
        compare_evaluations([a, b], labels=["Z=clip:0.5"])
    twins = [entry("A", ones(10, [1]), method="clip", lam=0.5, seed=0),
             entry("B", ones(10, [2]), method="clip", lam=0.5, seed=0)]
    with pytest.raises(RobustclipError, match="duplicate labels"):  # two checkpoints, one setting and seed
        compare_evaluations(twins)
    res = compare_evaluations(twins, labels=["B.safetensors=weight:0.001:0"])
    assert res.labels == {"A": "CLIP λ = 0.5", "B": "weight λ = 1e-3"}


def test_mixed_suites_or_datasets_need_group():
    a, b = entry("A", ones(10, [1])), entry("B", ones(10, [2]), dataset="other")
    c, d = entry("C", ones(10, [1, 2])), entry("D", ones(10, [3]), dataset="other")
    with pytest.raises(RobustclipError, match="mix datasets d, other -- .*--group"):
        compare_evaluations([a, b, c, d])
    res = compare_evaluations([a, b, c, d], group=True)
    assert {(p.a, p.b) for p in res.pairs} == {("A", "C"), ("B", "D")} and len(res.answers()) == 2


# --------------------------------------------------------------------------- the command line on real folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_dir):
    """A tiny CLIP model, a copy degraded by a logit bias, and evaluate folders: both at attack seed 0 on 1,000
    images; the model again at attack seed 1; on 600 images (other images); with another suite."""
    from robustclip.checkpoints import format as checkpoints
    from robustclip.checkpoints.format import CheckpointMeta
    from robustclip.training.config import TrainConfig
    from robustclip.training.trainer import train

    d = tmp_path_factory.mktemp("compare")
    (d / "tiny.toml").write_text(suite_toml(n=1000, eps=(0.25, 0.5), steps=3), encoding="utf-8")
    (d / "other.toml").write_text(suite_toml("other", n=1000, eps=(0.25, 0.5), steps=3), encoding="utf-8")
    with one_thread():
        res = train(TrainConfig(dataset="mnist", model=SMALL, reg="clip", lam=0.1, epochs=1, n_train=2000,
                                optimizer="adam", lr=0.005, seed=0), data_dir=str(data_dir), progress=False)
        checkpoints.save(res.model, d / "clip.safetensors", res.meta)
        with torch.no_grad():
            res.model[3].bias[1] += 0.15  # predicts class 1 more often: loses a few samples of other classes
        checkpoints.save(res.model, d / "degraded.safetensors", CheckpointMeta(dataset="mnist", name="degraded"))
        common = ["--quiet", "--lipschitz", "off", "--data-dir", data_dir]
        runs = {"both": ["clip.safetensors", "degraded.safetensors", "--suite", "tiny.toml"],
                "seed1": ["clip.safetensors", "--suite", "tiny.toml", "--seed", "1"],
                "n600": ["clip.safetensors", "--suite", "tiny.toml", "--n", "600"],
                "other": ["degraded.safetensors", "--suite", "other.toml"]}
        for name, argv in runs.items():
            code, _, err = run_cli(["evaluate", *[d / a if a.endswith((".safetensors", ".toml")) else a
                                                  for a in argv], "--out", d / name, *common])
            assert code == 0, err
    return d


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_evaluate_records_format_and_images_digest(folders):
    doc = json.loads((folders / "both" / "results.json").read_text(encoding="utf-8"))
    assert doc["format"] == "robustclip-evaluation" and doc["format_version"] == 1
    digests = {r["images_sha256"] for r in doc["runs"]}
    assert len(digests) == 1 and len(digests.pop()) == 64
    n600 = json.loads((folders / "n600" / "results.json").read_text(encoding="utf-8"))
    assert n600["runs"][0]["images_sha256"] != doc["runs"][0]["images_sha256"]


def test_cli_detects_the_degraded_copy(folders):
    code, out, err = run_cli(["compare", folders / "both", "--json"])
    assert code == 0, err
    doc = json.loads(out)
    pairs = {(p["norm"], p["eps"]): p for p in doc["pairs"]}
    clean = pairs[("clean", 0.0)]
    assert clean["a_checkpoint"].endswith("clip.safetensors") and clean["b_checkpoint"].endswith("degraded.safetensors")
    assert 0.01 <= clean["difference"] <= 0.04, clean  # a true drop of a few points at n = 1000
    for p in pairs.values():
        assert p["paired"] and p["test"] == "exact McNemar"
        assert p["ci_low"] <= p["difference"] <= p["ci_high"]
    assert clean["significant"] and clean["p_value"] < 0.05 and clean["a_only"] > 5 * clean["b_only"]
    assert doc["answers"][0].startswith("CLIP λ = 0.1 is more robust than degraded at L2 ε = 0.5 by ")
    code, out, err = run_cli(["compare", folders / "both"])
    assert code == 0 and "answer: CLIP λ = 0.1 is more robust than degraded" in out, err


def test_cli_two_attack_seeds_of_one_checkpoint_show_no_difference(folders):
    res = rc.compare(folders / "both", folders / "seed1")
    same = [p for p in res.pairs if {p.a, p.b} == {"both/clip", "seed1/clip"}]
    assert len(same) == 3 and all(p.paired and not p.significant for p in same)
    assert {res.labels["both/clip"], res.labels["seed1/clip"]} == {"CLIP λ = 0.1 [both]", "CLIP λ = 0.1 [seed1]"}
    assert {e.attack_seed for e in res.entries if e.name == "clip"} == {0, 1}


def test_cli_other_images_are_compared_unpaired(folders):
    code, out, err = run_cli(["compare", folders / "both", folders / "n600", "--all-cells"])
    assert code == 0, err
    assert "Fisher exact (unpaired): the images differ" in out and "compared unpaired" in out


def test_cli_folder_of_folders_groups_and_labels(folders, tmp_path):
    code, out, err = run_cli(["compare", folders / "both", folders / "other", "--group", "--json",
                              "--label", "degraded.safetensors=weight:1e-3:0"])
    assert code == 0, err
    doc = json.loads(out)
    assert {c["label"] for c in doc["checkpoints"]} >= {"weight λ = 1e-3 [both]", "weight λ = 1e-3 [other]"}
    assert any("only checkpoint evaluated with suite other" in n for n in doc["notes"])
    parent = tmp_path / "evals"
    parent.mkdir()
    for name in ("both", "seed1"):
        shutil.copytree(folders / name, parent / name)
    code, out, err = run_cli(["compare", parent, "--json"])
    assert code == 0, err
    assert len(json.loads(out)["checkpoints"]) == 3


def test_cli_reads_folders_written_before_the_format_field(folders, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(folders / "seed1", old)
    doc = json.loads((old / "results.json").read_text(encoding="utf-8"))
    del doc["format"], doc["format_version"]
    for r in doc["runs"]:
        del r["images_sha256"]
    (old / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    res = rc.compare(folders / "both", old)
    old_pairs = [p for p in res.pairs if "old/clip" in (p.a, p.b)]
    assert len(old_pairs) == 6 and all(not p.paired and "no images digest" in (p.note or "") for p in old_pairs)
    assert all(p.paired for p in res.pairs if p not in old_pairs) and any("unpaired" in n for n in res.notes)


def _bad(tmp_path: Path, folders: Path) -> list[tuple[list[object], tuple[str, ...]]]:
    future = tmp_path / "future"
    shutil.copytree(folders / "seed1", future)
    doc = json.loads((future / "results.json").read_text(encoding="utf-8"))
    doc["format_version"] = 2
    (future / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}", encoding="utf-8")
    both = folders / "both"
    return [([tmp_path / "empty"], ("not an evaluation folder", "results.json")),
            ([both / "results.json"], ("is a file",)),
            ([tmp_path / "missing"], ("does not exist",)),
            ([tmp_path / "sweep"], ("sweep folder",)),
            ([both, future], ("evaluation format 2", "upgrade robustclip")),
            ([both, folders / "other"], ("mix suites other, tiny", "--group")),
            ([both, "--label", "clip.safetensors=clip:0.1:0", "--label", "degraded.safetensors=clip:0.1:0"],
             ("duplicate label",)),
            ([both, "--label", "clip.safetensors=clip:nan"], ("not a finite number",)),
            ([both, "--label", "clip.safetensors=clip:inf:0"], ("not a finite number",)),
            ([both, "--label", "nothing.pt=clip:0.1"], ("no evaluated checkpoint",)),
            ([both, both], ("given twice",)),
            ([folders / "seed1"], ("at least two",))]


def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(folders, tmp_path):
    cases = _bad(tmp_path, folders)
    before = _snapshot(folders), _snapshot(tmp_path)
    for argv, words in cases:
        code, out, err = run_cli(["compare", *argv])
        assert_one_line_error(code, err, *words)
        assert out == ""
    assert (_snapshot(folders), _snapshot(tmp_path)) == before


def test_cli_help_has_examples():
    code, out, _ = run_cli(["compare", "--help"])
    assert code == 0 and "examples:" in out and "robustclip compare runs/eval-a runs/eval-b --json" in out
    assert "Holm" in out and "McNemar" in out


# --------------------------------------------------------------------------- robustclip report of evaluate folders


def test_report_of_evaluate_folders_leads_with_the_answer(folders, tmp_path):
    out = tmp_path / "rep"
    code, stdout, err = run_cli(["report", folders / "both", folders / "seed1", "--out", out])
    assert code == 0, err
    assert f"report: {out / 'index.html'}" in stdout
    md = (out / "README.md").read_text(encoding="utf-8")
    first = md.split("## Answer", 1)[1].strip().splitlines()[0]
    assert first.startswith("- **CLIP λ = 0.1 [both] is more robust than degraded at L2 ε = 0.5 by "), first
    assert md.index("## Answer") < md.index("## Paired comparison") < md.index("## Figures")
    assert {p.name for p in out.glob("*.png")} == {"curve_mnist_L2.png", "sandwich_L2.png"}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.index("is more robust than degraded") < html.index("<img")
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 3 and set(table.n) == {1000}
    comp = pd.read_csv(out / "comparison.csv")
    assert len(comp) == 9 and {"p_value", "p_holm", "difference", "ci_low", "ci_high"} <= set(comp.columns)
    res = rc.compare(folders / "both", folders / "seed1")
    assert sorted(comp.p_value) == pytest.approx(sorted(p.p_value for p in res.pairs))
    assert "regenerate" in md and "robustclip report" in md


def test_report_labels_lambda_plot_and_groups(folders, tmp_path):
    out = tmp_path / "rep"
    code, _, err = run_cli(["report", folders / "both", "--label", "degraded.safetensors=clip:1:0", "--out", out])
    assert code == 0, err
    md = (out / "README.md").read_text(encoding="utf-8")
    assert "CLIP λ = 1 vs CLIP λ = 0.1" in md or "CLIP λ = 0.1 is more robust than CLIP λ = 1" in md
    assert (out / "lambda_mnist.png").is_file()  # two λ of one method: worst case and bounds against λ
    mixed = tmp_path / "mixed"
    code, _, err = run_cli(["report", folders / "both", folders / "other", "--out", mixed])
    assert_one_line_error(code, err, "mix suites other, tiny", "--group")
    assert not mixed.exists()
    code, _, err = run_cli(["report", folders / "both", folders / "other", "--group", "--out", mixed])
    assert code == 0, err
    assert "only checkpoint evaluated with suite other" in (mixed / "README.md").read_text(encoding="utf-8")


def test_report_of_evaluate_folders_guards_its_outputs(folders, tmp_path):
    before = _snapshot(folders)
    code, _, err = run_cli(["report", folders / "both", "--out", folders / "both"])  # results.csv is an input
    assert_one_line_error(code, err, "input")
    code, _, err = run_cli(["report", folders / "both", "--label", "x=clip:nan", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "not a finite number")
    code, _, err = run_cli(["report", folders / "both", folders / "both", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "given twice")
    assert not (tmp_path / "r").exists() and _snapshot(folders) == before
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "index.html").write_text("mine", encoding="utf-8")
    code, _, err = run_cli(["report", folders / "both", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "already holds index.html", "--force")
    assert (tmp_path / "r" / "index.html").read_text(encoding="utf-8") == "mine"


def test_labels_come_from_your_own_loops_metadata(folders, tmp_path, data_dir):
    from robustclip.checkpoints import format as checkpoints
    from robustclip.models import specs as models

    torch.manual_seed(0)
    net = models.build(SMALL)
    checkpoints.save(net, tmp_path / "mine.safetensors", {"dataset": "mnist", "method": "clip", "lam": 0.3, "seed": 2})
    checkpoints.save(net, tmp_path / "bare.safetensors", {"dataset": "mnist"})
    with one_thread():
        code, _, err = run_cli(["evaluate", tmp_path / "mine.safetensors", tmp_path / "bare.safetensors", "--suite",
                                folders / "tiny.toml", "--n", "100", "--out", tmp_path / "ev", "--quiet",
                                "--lipschitz", "off", "--data-dir", data_dir])
    assert code == 0, err
    res = rc.compare(tmp_path / "ev")
    assert res.labels == {"mine": "CLIP λ = 0.3", "bare": "bare"}  # rc.save(meta=...) records it; else the name
    (p,) = res.at()
    assert p.paired and p.a_only == p.b_only == 0 and not p.significant  # the same weights: the same outcomes


# --------------------------------------------------------------------------- twelve checkpoints, labelled from a CSV


TWELVE = [(m, lam, seed) for m, lam in (("none", 0.0), ("weight", 1e-3), ("clip", 0.1), ("clip", 0.5))
          for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def twelve(folders, tmp_path_factory, data_dir):
    """Twelve checkpoints (the tiny model with logit biases of its own), saved without method metadata, evaluated in
    one call, labelled by a CSV file (four settings × three seeds) and reported with --labels."""
    from robustclip.checkpoints import format as checkpoints

    d = tmp_path_factory.mktemp("twelve")
    model, _ = checkpoints.load(folders / "clip.safetensors")
    rows = ["checkpoint,method,lam,seed"]
    for i, (method, lam, seed) in enumerate(TWELVE):
        with torch.no_grad():
            m = copy.deepcopy(model)
            m[3].bias[i % 10] += 0.02 * i
        checkpoints.save(m, d / f"c{i}.safetensors", {"dataset": "mnist", "name": f"c{i}"})
        rows.append(f"c{i}.safetensors,{method},{lam:g},{seed}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with one_thread():
        code, _, err = run_cli(["evaluate", *[d / f"c{i}.safetensors" for i in range(12)], "--suite",
                                folders / "tiny.toml", "--n", "200", "--out", d / "ev", "--quiet", "--lipschitz",
                                "off", "--data-dir", data_dir])
        assert code == 0, err
        code, out, err = run_cli(["report", d / "ev", "--labels", d / "labels.csv", "--out", d / "rep"])
    assert code == 0, err
    return d


def test_labels_csv_labels_twelve_checkpoints_in_report_and_compare(twelve):
    table = pd.read_csv(twelve / "rep" / "table.csv")
    assert len(table) == 12
    assert {"CLIP λ = 0.5 (seed 2)", "weight λ = 1e-3 (seed 0)", "plain (seed 1)"} <= set(table.checkpoint)
    md = (twelve / "rep" / "README.md").read_text(encoding="utf-8")
    assert "Settings over seeds" in md and "--label c0.safetensors=none:0:0" in md  # the regenerate command
    code, out, err = run_cli(["compare", twelve / "ev", "--labels", twelve / "labels.csv", "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert {(c["key"], c["label"]) for c in doc["checkpoints"]} >= {("c11", "CLIP λ = 0.5 (seed 2)")}
    assert len(doc["settings"]) > 0 and all(len(s["seeds_a"]) == 3 for s in doc["settings"])


def test_labels_csv_bad_input_is_one_line_exit_2_and_nothing_written(twelve, tmp_path):
    good = (twelve / "labels.csv").read_text(encoding="utf-8").splitlines()
    cases = {"nan.csv": (good[:2] + ["c1.safetensors,weight,nan,0"], ("line 3", "not a finite number")),
             "inf.csv": (good[:2] + ["c1.safetensors,weight,inf,0"], ("line 3", "not a finite number")),
             "dup.csv": (good[:2] + ["c1.safetensors,none,0,0"], ("duplicate label",)),
             "twice.csv": (good[:2] + ["c0.safetensors,clip,1,0"], ("twice",)),
             "cols.csv": (["checkpoint,method,seed", "c0.safetensors,clip,0"], ("no column lam",)),
             "empty.csv": (["checkpoint,method,lam,seed", "c0.safetensors,,0.1,0"], ("line 2", "no method")),
             "seed.csv": (good[:2] + ["c1.safetensors,weight,0.1,x"], ("line 3", "not a whole number")),
             "nobody.csv": (["checkpoint,method,lam,seed", "nothing.pt,clip,0.1,0"], ("no evaluated checkpoint",))}
    for name, (lines, _) in cases.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = _snapshot(twelve), _snapshot(tmp_path)
    for name, (_, words) in cases.items():
        for cmd in (["compare", twelve / "ev"], ["report", twelve / "ev", "--out", tmp_path / "rep"]):
            code, out, err = run_cli([*cmd, "--labels", tmp_path / name])
            assert_one_line_error(code, err, *words)
            assert out == ""
    code, out, err = run_cli(["compare", twelve / "ev", "--labels", tmp_path / "missing.csv"])
    assert_one_line_error(code, err, "does not exist")
    assert (_snapshot(twelve), _snapshot(tmp_path)) == before


@needs_chromium
def test_report_of_twelve_checkpoints_leads_with_its_answer_in_chromium(twelve):
    r = check_page(twelve / "rep" / "index.html", width=1280, height=900)
    assert first_screen_problems(r) == [], first_screen_problems(r)
    assert "is more robust than" in r["answer"]["text"] or "no difference shown" in r["answer"]["text"]
    assert r["figure"]["file"].startswith("curve_")
