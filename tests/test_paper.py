"""robustclip paper: the regeneration pipeline on a tiny version of the preset."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from page_check import check_page, chromium, first_screen_problems

from experiments.paper import experiment as paper
from robustclip.attacks.suites import parse_suite
from robustclip.checkpoints import format as checkpoints
from robustclip.errors import RobustclipError
from robustclip.sweeps import planning

TINY_SUITE = {"name": "tiny", "n": 64, "batch_size": 64, "seed": 0, "headline": {"norm": "L2", "eps": 2.0},
              "attack": [{"type": "clean"}, {"type": "noise", "sigma": 1.0}, {"type": "fgsm", "norm": "L2", "eps": 2.0},
                         {"type": "authors_pgd", "norm": "L2", "eps": 2.0, "steps": 3},
                         {"type": "pgd", "norm": "L2", "eps": 2.0, "steps": 3}]}


def test_preset_plans_the_issue_grid():
    runs = planning.plan(paper.preset())
    ids = {r.id for r in runs}
    by_id = {r.id: r for r in runs}
    for seed in range(5):  # MNIST: five seeds of every method, adversarial training included
        assert f"mnist-none-s{seed}" in ids
        assert sum(i.startswith("mnist-weight-") and i.endswith(f"-s{seed}") for i in ids) >= 1
        assert sum(i.startswith("mnist-clip-lam") and i.endswith(f"-s{seed}") for i in ids) >= 2
        assert f"mnist-clip-tau0.97-s{seed}" in ids
        for steps in (1, 3, 7):  # PGD adversarial training with 1, 3 and 7 steps, and TRADES
            run = by_id[f"mnist-pgd-at{steps}-lam1-s{seed}"]
            assert run.train["reg"] == "adversarial" and run.train["adversarial"]["steps"] == steps
        assert by_id[f"mnist-trades-lam1-s{seed}"].train["reg"] == "trades"
        hyb = by_id[f"mnist-clip-at3-lam0.3-s{seed}"].train  # the named hybrid: AT with CLIP's penalty on top
        assert hyb["reg"] == "clip-adversarial" and hyb["adversarial"]["steps"] == 3 and hyb["clip"]["pairs"] == 64
    # fewer epochs for more attack steps: each trains about as long as CLIP
    epochs = {s: by_id[f"mnist-pgd-at{s}-lam1-s0"].train["epochs"] for s in (1, 3, 7)}
    assert epochs[1] > epochs[3] > epochs[7]
    for seed in (0, 1, 2):
        assert f"fashion-mnist-none-s{seed}" in ids
        assert sum(i.startswith("fashion-mnist-clip-lam") and i.endswith(f"s{seed}") for i in ids) >= 1
    sig = [r for r in runs if r.id.startswith("mnist-sigmoid")]
    assert sig and all(r.train["model"]["output_activation"] == "sigmoid" for r in sig)
    assert all(r.train["model"].get("output_activation") is None for r in runs if r.id.startswith("mnist-none"))
    assert sum(r.train["dataset"] == "regression" for r in runs) >= 6
    suite = by_id["mnist-none-s0"].suite
    assert suite is not None and suite["cascade"] is True
    assert {a.get("label", a["type"]) for a in suite["attack"]} >= {"apgd-ce", "apgd-dlr", "apgdt", "square"}


def _regenerate_tiny(tmp_path, data_dir, sweep, out: str, **kw):
    """``paper.regenerate`` of ``sweep`` into ``tmp_path/out`` (runs in ``tmp_path/runs``) with the tiny suite
    registered as a built-in for the time of the call (it travels through the sweep plan by name)."""
    from robustclip.attacks import library

    library.BUILTIN_SUITES["tiny"] = TINY_SUITE
    try:
        return paper.regenerate(tmp_path / out, tmp_path / "runs", data_dir=str(data_dir), progress=False,
                                sweep=sweep, full_test_suite=parse_suite(TINY_SUITE), full_test_n=200, **kw)
    finally:
        del library.BUILTIN_SUITES["tiny"]


def test_regenerate_tiny(tmp_path, data_dir):
    sweep = {"name": "paper-tiny", "experiment": [
        {"label": "mnist", "dataset": "mnist", "epochs": 1, "n_train": 1000, "seeds": [0, 1], "suite": "demo",
         "method": [{"reg": "none"}, {"reg": "clip", "lam": [0.3]}]},
        {"label": "mnist-sigmoid", "dataset": "mnist", "epochs": 1, "n_train": 1000, "seeds": [0],
         "output_sigmoid": True, "method": [{"reg": "none"}]},
    ]}
    for e in sweep["experiment"]:
        e["suite"] = "tiny"
    cert = parse_suite({"name": "tiny-certify", "n": 64, "batch_size": 64, "seed": 0, "certify": True,
                        "eps": {"L2": [0.25, 1.0]}, "attack": [{"type": "clean"},
                                                               {"type": "pgd", "norm": "L2", "steps": 3}]})
    index = _regenerate_tiny(tmp_path, data_dir, sweep, "paper", sandwich_suite=cert)
    out = tmp_path / "paper"
    assert index == out / "index.html" and index.is_file()
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns[: len(paper.PAPER_COLUMNS)]) == paper.PAPER_COLUMNS
    mnist = table[table.dataset == "mnist"]
    assert set(mnist.seeds) >= {2}
    assert ((table[["clean", "noise", "fgsm", "authors_pgd", "pgd_l2", "worst_case"]] >= 0).all().all()
            and (table[["clean", "worst_case"]] <= 1).all().all())
    assert (table.worst_case <= table.pgd_l2 + 1e-12).all() and (table.worst_case <= table.authors_pgd + 1e-12).all()
    html = index.read_text()
    assert "What the authors report" in html and "72.4" in html and "output-sigmoid question" in html
    # the page leads with the headline, the authors' figures beside ours, before any figure or full table
    first_fig = html.index('id="figures"')
    assert html.index('id="headline"') < html.index('id="what-the-authors-report"') < first_fig < html.index(
        'id="the-papers-table-ours"')
    head = html[html.index('id="headline"'):first_fig]
    assert "<th>authors: clean</th>" in head and "<td>97.1</td>" in head and "<td>31.2</td>" in head
    assert "worst_case 95% CI" in html and 'id="hyperparameters"' in html
    assert {"worst_case_ci_low", "worst_case_ci_high", "worst_case_std"} <= set(table.columns)
    # the page leads with its answer (the most robust setting against plain training) beside the frontier figure
    assert html.index('id="answer"') < html.index('data-file="frontier_mnist.png"') < html.index('id="headline"')
    if chromium() is not None:  # the paper page at 1280 px: nothing runs off the right edge, no "±" wraps
        r = check_page(index, width=1280, height=900)
        assert r["scrollWidth"] <= r["viewport"] and r["overflowing"] == [] and r["wrapped"] == [], r
        assert first_screen_problems(r) == [], first_screen_problems(r)
        assert r["headline"] and r["headline"]["scrollWidth"] <= r["headline"]["width"], r["headline"]
        assert all(i["decoded"] for i in r["images"]) and r["errors"] == [], r
    sig = pd.read_csv(out / "sigmoid.csv")
    assert len(sig) == 1 and 0 <= sig.worst_case_through_logits.iloc[0] <= 1
    for name in ("mnist-clip-best", "mnist-plain-best"):
        model, meta = checkpoints.load(out / "checkpoints" / f"{name}.safetensors")
        assert meta["dataset"] == "mnist" and meta["history"]
    # the committed checkpoints' ε-curves: attacked and certified accuracy on the suite's grid, as a figure and a
    # table, cached per checkpoint and suite
    assert (out / "sandwich_L2.png").is_file() and "Attacked and certified accuracy against" in html
    cached = sorted((tmp_path / "runs" / "sandwich").glob("*.csv"))
    assert len(cached) == 2
    curves = pd.concat(pd.read_csv(c) for c in cached)
    for model, g in curves.groupby("model"):
        wc = g[g.attack == "worst_case"].set_index("eps").accuracy
        cert_acc = g[g.attack == "certified"].set_index("eps").accuracy
        assert list(wc.index) == [0.25, 1.0] and (cert_acc <= wc + 1e-12).all(), model
    assert set(pd.read_csv(out / "sandwich.csv").model) == {"mnist-clip-best", "mnist-plain-best"}
    # the committed checkpoints on more test images than the sweep's suite takes (there: all 10,000), led with
    full = pd.read_csv(out / "full_test.csv")
    assert set(full.model) == {"mnist-clip-best", "mnist-plain-best"} and set(full.n) == {200}
    assert html.index('id="the-committed-checkpoints-on-the-whole-test-set"') < first_fig
    assert len(list((tmp_path / "runs" / "full-test").glob("*-n200.csv"))) == 2
    info = json.loads((out / "regeneration.json").read_text())
    assert info["minutes"] > 0 and set(info["checkpoints"]) == {"mnist-clip-best", "mnist-plain-best"}
    # the estimate adds every run's measured seconds (one job) and the checkpoints' evaluations
    run_secs = sum(json.loads(m.read_text())["seconds"] for m in (tmp_path / "runs" / "runs").glob("*/manifest.json"))
    stage = sum(pd.read_csv(c).seconds.iloc[0] for c in cached) + full.drop_duplicates("model").seconds.sum()
    assert info["estimate_minutes"] == pytest.approx((run_secs + stage) / 60)
    _refresh_adds_a_checkpoint_made_elsewhere(out, tmp_path / "runs", cert, data_dir)
    # --full-test all: every MNIST run attacked on the larger set, whose rows then replace the sweep's everywhere
    _regenerate_tiny(tmp_path, data_dir, sweep, "paper2", sandwich_suite=None, full_test="all")
    per_run = pd.concat(pd.read_csv(c) for c in (tmp_path / "runs" / "full-test").glob("mnist-*-s*-n200.csv"))
    assert set(per_run.model) == {"mnist-none-s0", "mnist-none-s1", "mnist-clip-lam0.3-s0", "mnist-clip-lam0.3-s1"}
    wc = per_run[per_run.attack == "worst_case"].groupby("model").accuracy
    t2 = pd.read_csv(tmp_path / "paper2" / "table.csv")
    (plain_wc,) = t2[(t2.dataset == "mnist") & (t2.method == "none")].worst_case
    assert plain_wc == pytest.approx((wc.get_group("mnist-none-s0").iloc[0]
                                                       + wc.get_group("mnist-none-s1").iloc[0]) / 2)
    assert "on the first 200 (MNIST)" in (tmp_path / "paper2" / "index.html").read_text()
    # a pattern of run ids: those runs on the larger set, per setting in a section of their own
    _regenerate_tiny(tmp_path, data_dir, sweep, "paper3", sandwich_suite=None, full_test="mnist-clip-*")
    (row,) = pd.read_csv(tmp_path / "paper3" / "full_test_runs.csv").to_dict("records")
    assert row["label"] == "clip" and row["seeds"] == 2 and row["n"] == 200 and row["n_sweep"] == 64
    assert row["worst_case"] == pytest.approx(wc.get_group("mnist-clip-lam0.3-s0").iloc[0] / 2
                                              + wc.get_group("mnist-clip-lam0.3-s1").iloc[0] / 2)
    page3 = (tmp_path / "paper3" / "index.html").read_text()
    assert 'id="settings-attacked-on-the-whole-test-set"' in page3 and "on the first 64 (MNIST)" in page3
    with pytest.raises(RobustclipError, match="matches no run"):
        _regenerate_tiny(tmp_path, data_dir, sweep, "p4", full_test="most")


def _refresh_adds_a_checkpoint_made_elsewhere(out, runs, cert, data_dir):
    """``robustclip paper --refresh sandwich``: a checkpoint dropped into checkpoints/ by another script (here a copy
    of the CLIP one under the certified model's name) joins the figure, the section and the list of checkpoints; the
    checkpoints already evaluated come from the cache, and the rest of the report is left byte for byte."""
    from experiments.paper import sandwich
    from robustclip.reports.figures import fig_sandwich

    before_md, before_html = (out / "README.md").read_text(), (out / "index.html").read_text()
    shutil.copyfile(out / "checkpoints" / "mnist-clip-best.safetensors",
                    out / "checkpoints" / "mnist-certified-best.safetensors")
    paper.refresh_sandwich(out, runs, sandwich_suite=cert, data_dir=str(data_dir), progress=False)
    assert len(list((runs / "sandwich").glob("*.csv"))) == 3  # one new evaluation, two from the cache
    md, html = (out / "README.md").read_text(), (out / "index.html").read_text()
    rows = pd.read_csv(out / "sandwich.csv")
    names = ["mnist-plain-best", "mnist-clip-best", "mnist-certified-best"]  # sandwich.ORDER
    assert list(dict.fromkeys(rows.model)) == names
    (fig,) = fig_sandwich(rows, out, name="check.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [*names, "attacked (worst case)", "certified"]
    section = md[md.index(f"### {sandwich.TITLE}"):md.index("### Checkpoints")]
    assert all(f"| {n} |" in section for n in names)
    page = html[html.index('id="attacked-and-certified-accuracy-against-ε"'):html.index('id="checkpoints"')]
    assert all(f"<td>{n}</td>" in page for n in names)
    listing = md[md.index("### Checkpoints"):md.index("## Hyperparameters")]
    assert "`checkpoints/mnist-certified-best.safetensors`: not from the sweep: `clip`" in listing
    assert "benchmarks/certified_training.py" in listing and "run `mnist-clip-lam0.3-s" in listing
    # everything before the figures (headline, verdict, ...) and after the checkpoints is unchanged
    for old, new, cut in ((before_md, md, "## Figures"), (before_html, html, '<h2 id="figures">')):
        assert new[: new.index(cut)] == old[: old.index(cut)]
    assert md[md.index("## Hyperparameters"):] == before_md[before_md.index("## Hyperparameters"):]
    assert html.count("<figure") == before_html.count("<figure") and "mnist-certified-best" not in before_html
    assert json.loads((out / "regeneration.json").read_text())["refreshed"]["checkpoints"] == names
    (out / "checkpoints" / "mnist-certified-best.safetensors").unlink()


def test_refresh_needs_a_rendered_report_and_says_so_before_any_work(tmp_path):
    from tiny import assert_one_line_error, run_cli

    with pytest.raises(RobustclipError, match="regeneration.json"):
        paper.refresh_sandwich(tmp_path, tmp_path / "runs")
    (tmp_path / "regeneration.json").write_text("{}")
    (tmp_path / "results.csv").write_text("run\n")
    (tmp_path / "README.md").write_text("# report\n\n## Figures\n")
    (tmp_path / "index.html").write_text("<html><body></body></html>")
    rc, _, err = run_cli(["paper", "--refresh", "sandwich", "--out", str(tmp_path), "--runs", str(tmp_path / "r")])
    assert_one_line_error(rc, err, "no section", "Attacked and certified accuracy", "robustclip paper")
    assert not (tmp_path / "r").exists()


def test_committed_lists_every_checkpoint_in_the_figures_order(tmp_path):
    from experiments.paper import sandwich

    for name in ("mnist-clip-certified-best", "zzz-extra", "mnist-certified-best", "mnist-weight-best"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    got = sandwich.committed(tmp_path, {"mnist-plain-best": "mnist-none-s3", "mnist-clip-best": "r"})
    assert list(got) == ["mnist-plain-best", "mnist-weight-best", "mnist-clip-best", "mnist-certified-best",
                         "mnist-clip-certified-best", "zzz-extra"]
    assert got["mnist-plain-best"] == tmp_path / "mnist-plain-best.safetensors"


def test_the_committed_certified_checkpoints_are_on_the_report_figure():
    """reports/paper/: every committed checkpoint is in the sandwich's rows (the figure's legend) and its table."""
    from pathlib import Path

    from experiments.paper import sandwich

    root = Path(paper.__file__).resolve().parents[2] / "reports" / "paper"
    names = list(sandwich.committed(root / "checkpoints"))
    assert {"mnist-plain-best", "mnist-clip-best", "mnist-certified-best"} <= set(names)
    rows = pd.read_csv(root / "sandwich.csv")
    assert list(dict.fromkeys(rows.model)) == names
    for name, g in rows.groupby("model"):
        wc = g[g.attack == "worst_case"].set_index("eps").accuracy
        cert = g[g.attack == "certified"].set_index("eps").accuracy
        assert 1.58 in wc.index and (cert <= wc.reindex(cert.index) + 1e-12).all(), name
    md = (root / "README.md").read_text()
    section = md[md.index(f"### {sandwich.TITLE}"):]
    assert all(f"| {n} |" in section for n in names)


def test_full_test_rows_replace_a_runs_attack_rows_and_keep_the_rest():
    base = {"label": "clip", "dataset": "mnist", "method": "clip", "lam": 0.5, "seed": 0, "train_seconds": 60.0,
            "ci_low": 0.0, "ci_high": 1.0}
    df = pd.DataFrame([{**base, "run": r, "attack": a, "norm": nm, "eps": e, "accuracy": acc, "n": n}
                       for r in ("a", "b")
                       for a, nm, e, acc, n in (("clean", "none", 0.0, 0.97, 1000),
                                                ("worst_case", "L2", 2.0, 0.4, 1000),
                                                ("clean_full", "none", 0.0, 0.968, 10000),
                                                ("val_worst_case", "L2", 2.0, 0.41, 1000))])
    rows = pd.DataFrame([{"model": "a", "attack": "clean", "norm": "none", "eps": 0.0, "accuracy": 0.968, "n": 10000,
                          "ci_low": 0.96, "ci_high": 0.97, "seconds": 9.0},
                         {"model": "a", "attack": "worst_case", "norm": "L2", "eps": 2.0, "accuracy": 0.38,
                          "n": 10000, "ci_low": 0.37, "ci_high": 0.39, "seconds": 9.0}])
    out = paper.with_full_test(df, rows)
    assert len(out) == len(df) and list(out.columns) == list(df.columns)
    a = out[out.run == "a"].set_index("attack")
    assert a.loc["worst_case", "accuracy"] == 0.38 and a.loc["worst_case", "n"] == 10000
    assert a.loc["val_worst_case", "accuracy"] == 0.41 and a.loc["worst_case", "train_seconds"] == 60.0
    assert out[out.run == "b"].set_index("attack").loc["worst_case", "n"] == 1000  # untouched
    assert paper.attacked_images(df) == "the first 1,000"
    assert paper.attacked_images(out) == "the first 1,000 to 10,000"
    assert paper.attacked_images(paper.with_full_test(df, pd.concat([rows, rows.assign(model="b")]))) == "all 10,000"


def test_committed_checkpoints_are_chosen_on_validation_rows():
    def run(name, method, test_wc, val_wc, val_clean, clean=0.98):
        base = {"dataset": "mnist", "run": name, "method": method, "label": method}
        return [{**base, "attack": "worst_case", "norm": "L2", "eps": 2.0, "accuracy": test_wc},
                {**base, "attack": "clean_full", "norm": "none", "eps": 0.0, "accuracy": clean},
                {**base, "attack": "val_worst_case", "norm": "L2", "eps": 2.0, "accuracy": val_wc},
                {**base, "attack": "val_clean", "norm": "none", "eps": 0.0, "accuracy": val_clean}]

    rows = (run("mnist-clip-a", "clip", 0.50, 0.40, 0.975)  # best on test, not on validation
            + run("mnist-clip-b", "clip", 0.45, 0.44, 0.972)  # best on validation
            + run("mnist-clip-c", "clip", 0.60, 0.55, 0.960)  # most robust, but below 97% clean on validation
            + run("mnist-none-s0", "none", 0.02, 0.03, 0.981) + run("mnist-none-s1", "none", 0.03, 0.02, 0.979)
            + run("mnist-pgd-at7-s0", "adversarial", 0.5, 0.49, 0.974)
            + run("mnist-clip-at1-s0", "clip-adversarial", 0.5, 0.52, 0.981)
            + run("mnist-clip-at1-s1", "clip-adversarial", 0.5, 0.53, 0.969)  # below 97% clean
            # weight regularisation: none reaches 97% clean, so the most robust on validation of them all
            + run("mnist-weight-s0", "weight", 0.07, 0.08, 0.953) + run("mnist-weight-s3", "weight", 0.06, 0.11, 0.968))
    picks = paper._best_checkpoints(pd.DataFrame(rows))
    assert picks == {"mnist-clip-best": "mnist-clip-b", "mnist-plain-best": "mnist-none-s0",
                     "mnist-adversarial-best": "mnist-pgd-at7-s0", "mnist-clip-adversarial-best": "mnist-clip-at1-s0",
                     "mnist-weight-best": "mnist-weight-s3"}
    # runs from before validation scoring: judged on test rows, as before
    old = pd.DataFrame([r for r in rows if not r["attack"].startswith("val_")])
    assert paper._best_checkpoints(old)["mnist-clip-best"] == "mnist-clip-c"  # all at 98% clean on test


def test_verdict_says_plainly_whether_clip_beats_adversarial_training_at_equal_time():
    def row(method, setting, clean, wc, secs):
        return {"dataset": "mnist", "method": method, "lam_or_tau": setting, "seeds": 5, "clean": clean,
                "worst_case": wc, "train_seconds": secs}

    df = pd.DataFrame([{"label": "clip", "method": "clip"}, {"label": "pgd-at7", "method": "adversarial"},
                       {"label": "pgd-at3", "method": "adversarial"}])
    table = pd.DataFrame([row("clip", "λ=0.5", 0.972, 0.395, 62), row("clip", "λ=0.8", 0.968, 0.431, 64),
                          row("pgd-at7", "λ=1", 0.974, 0.519, 69), row("pgd-at3", "λ=1", 0.98, 0.531, 89)])
    text = paper.verdict_text(table, df)
    assert "clip λ=0.5, 39.5% worst case" in text  # λ=0.8 is below 97% clean
    assert "pgd-at7 λ=1, 51.9%" in text and "does not beat adversarial training" in text  # 69 s ≤ 1.15 × 62 s
    assert "pgd-at3 λ=1, 53.1%" in text and "**not met** (39.5%)" in text
    strong = table.assign(worst_case=[0.60, 0.431, 0.519, 0.531])
    text = paper.verdict_text(strong, df)
    assert "CLIP beats it at equal training time" in text and "for clip λ=0.5: met on the first 1,000" in text
    assert paper.verdict_text(table[table.method == "clip"], df) == ""  # no yardstick, no verdict
    # the hybrid gets its own line and its own equal-time peer; the whole test set's rows are quoted
    df2 = pd.concat([df, pd.DataFrame([{"label": "clip-at1", "method": "clip-adversarial"}])])
    hyb = pd.concat([table, pd.DataFrame([row("clip-at1", "λ=0.3", 0.982, 0.55, 95)])])
    full = pd.DataFrame([{"model": "mnist-clip-best", "attack": a, "accuracy": v, "n": 10000}
                         for a, v in (("clean", 0.969), ("pgd", 0.45), ("worst_case", 0.423))])
    text = paper.verdict_text(hyb, df2, full=full)
    assert "Best hybrid CLIP + adversarial training setting" in text and "clip-at1 λ=0.3, 55.0%" in text
    assert "Hybrid CLIP + adversarial training beats it at equal training time" in text  # pgd-at3: 89 s ≤ 1.15 × 95
    assert "**not met** (39.5%)" in text  # the target is CLIP's own, not the hybrid's
    assert "`mnist-clip-best` on all 10,000 test images: 42.3% worst case at 96.9% clean" in text
    # ahead, but every adversarial training trained much shorter: no win at equal time is claimed
    slow = hyb.assign(train_seconds=[62, 64, 69, 89, 130])
    text = paper.verdict_text(slow, df2)
    assert "ahead, but no adversarial training here trained as long (the longest took 89 s)" in text
    assert "beats it at equal" not in text.split("hybrid")[-1]
    ci = hyb.assign(worst_case_ci_low=[0.38, 0.41, 0.51, 0.52, 0.54], worst_case_ci_high=[0.41, 0.45, 0.53, 0.54, 0.56])
    text = paper.verdict_text(ci, df2)
    assert ("Hybrid CLIP + adversarial training is ahead by 1.9 points at about equal training time, within the "
            "noise of the seeds (95% intervals [54.0, 56.0] and [52.0, 54.0], which overlap): **not a clear win.**"
            in text)
    apart = ci.assign(worst_case_ci_low=[0.38, 0.41, 0.51, 0.52, 0.545])
    assert "beats it at equal training time (95% intervals [54.5, 56.0] and [52.0, 54.0], which do not overlap)" \
        in paper.verdict_text(apart, df2)


def test_cli_paper_refuses_a_full_test_scope_that_matches_nothing_before_any_work(tmp_path):
    from tiny import assert_one_line_error, run_cli

    rc, _, err = run_cli(["paper", "--full-test", "mnist-nothing-*", "--runs", str(tmp_path / "runs"),
                          "--out", str(tmp_path / "out")])
    assert_one_line_error(rc, err, "--full-test", "matches no run", "mnist-clip-lam0.5-*")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_verdict_chooses_clip_on_validation_and_judges_the_target_on_the_whole_test_set():
    def row(method, setting, clean, wc, secs, val_clean, val_wc):
        return {"dataset": "mnist", "method": method, "lam_or_tau": setting, "seeds": 5, "clean": clean,
                "worst_case": wc, "train_seconds": secs, "val_clean": val_clean, "val_worst_case": val_wc}

    df = pd.DataFrame([{"label": "clip", "method": "clip"}, {"label": "pgd-at7", "method": "adversarial"}])
    table = pd.DataFrame([row("clip", "λ=0.5", 0.972, 0.395, 62, 0.9706, 0.505),
                          row("clip", "λ=0.8", 0.971, 0.431, 64, 0.9652, 0.537),  # ≥ 97% on test, not on validation
                          row("pgd-at7", "λ=1", 0.974, 0.519, 69, 0.975, 0.56)])
    full_runs = pd.DataFrame([{"dataset": "mnist", "label": "clip", "setting": "λ=0.5", "seeds": 5, "n": 10000,
                               "clean": 0.9722, "worst_case": 0.459}])
    text = paper.verdict_text(table, df, full_runs=full_runs)
    assert "Best CLIP setting with ≥ 97% clean accuracy on validation data (mean over 5 seeds): clip λ=0.5" in text
    assert "for clip λ=0.5: **not met** (39.5%) on the first 1,000 images" in text
    assert "for clip λ=0.5: **met** (45.9% at 97.2% clean) on all 10,000 images, every seed attacked there" in text
    assert "CLIP-based settings are chosen on validation data" in text
    low = full_runs.assign(worst_case=0.449)
    assert "**not met** (44.9% at 97.2% clean) on all 10,000" in paper.verdict_text(table, df, full_runs=low)


def test_cli_paper_outside_a_checkout_is_a_one_line_error(tmp_path, monkeypatch):
    """The wheel holds the toolkit only: an installed robustclip without experiments/paper/ says where to run it."""
    from tiny import assert_one_line_error, run_cli

    from robustclip.cli import paper as paper_cmd

    monkeypatch.setattr(paper_cmd, "EXPERIMENT", paper_cmd.EXPERIMENT.with_name("no-such-experiment.py"))
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["paper", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert_one_line_error(rc, err, "source checkout", "pip install -e .")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_refresh_page_needs_a_rendered_report(tmp_path):
    from tiny import run_cli

    rc, _, err = run_cli(["paper", "--refresh", "page", "--out", str(tmp_path)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no README.md" in err and "--" in err
