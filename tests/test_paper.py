"""robustclip paper: the regeneration pipeline on a tiny version of the preset."""

from __future__ import annotations

import json

import pandas as pd
from page_check import check_page, chromium

from robustclip import checkpoints, paper, sweeps

TINY_SUITE = {"name": "tiny", "n": 64, "batch_size": 64, "seed": 0, "headline": {"norm": "L2", "eps": 2.0},
              "attack": [{"type": "clean"}, {"type": "noise", "sigma": 1.0}, {"type": "fgsm", "norm": "L2", "eps": 2.0},
                         {"type": "authors_pgd", "norm": "L2", "eps": 2.0, "steps": 3},
                         {"type": "pgd", "norm": "L2", "eps": 2.0, "steps": 3}]}


def test_preset_plans_the_issue_grid():
    runs = sweeps.plan(paper.preset())
    ids = {r.id for r in runs}
    for dataset in ("mnist", "fashion-mnist"):
        for seed in (0, 1, 2):
            assert f"{dataset}-none-s{seed}" in ids
            assert sum(i.startswith(f"{dataset}-weight-") and i.endswith(f"s{seed}") for i in ids) >= 2
            assert sum(i.startswith(f"{dataset}-clip-lam") and i.endswith(f"s{seed}") for i in ids) >= 1
    assert {"mnist-clip-tau0.95-s0", "mnist-clip-tau0.97-s0"} <= ids
    sig = [r for r in runs if r.id.startswith("mnist-sigmoid")]
    assert sig and all(r.train["model"]["output_activation"] == "sigmoid" for r in sig)
    assert all(r.train["model"].get("output_activation") is None for r in runs if r.id.startswith("mnist-none"))
    assert sum(r.train["dataset"] == "regression" for r in runs) >= 6


def test_regenerate_tiny(tmp_path, data_dir):
    sweep = {"name": "paper-tiny", "experiment": [
        {"label": "mnist", "dataset": "mnist", "epochs": 1, "n_train": 1000, "seeds": [0, 1], "suite": "demo",
         "method": [{"reg": "none"}, {"reg": "clip", "lam": [0.3]}]},
        {"label": "mnist-sigmoid", "dataset": "mnist", "epochs": 1, "n_train": 1000, "seeds": [0],
         "output_sigmoid": True, "method": [{"reg": "none"}]},
    ]}
    for e in sweep["experiment"]:
        e["suite"] = "tiny"
    # the tiny suite travels through the sweep plan as a built-in
    from robustclip import attacks

    attacks.BUILTIN_SUITES["tiny"] = TINY_SUITE
    try:
        index = paper.regenerate(tmp_path / "paper", tmp_path / "runs", data_dir=str(data_dir), progress=False,
                                 sweep=sweep)
    finally:
        del attacks.BUILTIN_SUITES["tiny"]
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
    if chromium() is not None:  # the paper page at 1280 px: nothing runs off the right edge, no "±" wraps
        r = check_page(index, width=1280)
        assert r["scrollWidth"] <= r["viewport"] and r["overflowing"] == [] and r["wrapped"] == [], r
        assert all(i["decoded"] for i in r["images"]) and r["errors"] == [], r
    sig = pd.read_csv(out / "sigmoid.csv")
    assert len(sig) == 1 and 0 <= sig.worst_case_through_logits.iloc[0] <= 1
    for name in ("mnist-clip-best", "mnist-plain-best"):
        model, meta = checkpoints.load(out / "checkpoints" / f"{name}.safetensors")
        assert meta["dataset"] == "mnist" and meta["history"]
    info = json.loads((out / "regeneration.json").read_text())
    assert info["minutes"] > 0 and set(info["checkpoints"]) == {"mnist-clip-best", "mnist-plain-best"}
