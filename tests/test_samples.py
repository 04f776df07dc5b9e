"""Per-sample output: samples.csv agrees with the aggregate rows sample by sample; the certified radius agrees with
the Lipschitz certificate; the saved adversarial examples fool the model inside their ball; per-class accuracy;
and a tabular (N, 20) MLP with BatchNorm and Dropout goes end to end through ``robustclip evaluate --data``.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from tiny import assert_one_line_error, run_cli
from torch import nn

from robustclip.attacks.suites import parse_suite
from robustclip.bounds import certify as certify_mod
from robustclip.evaluation.runner import evaluate
from robustclip.evaluation.samples import SAMPLE_COLUMNS, lipschitz_radius

SUITE = {"name": "grid", "cascade": True, "eps": {"L2": [0.05, 0.2, 0.5], "Linf": [0.02]},
         "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "L2"}, {"type": "pgd", "norm": "L2", "steps": 5},
                    {"type": "apgd", "norm": "L2", "steps": 5}, {"type": "pgd", "norm": "Linf", "steps": 5}]}


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.rand(60, 20)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:4] = (y[:4] + 1) % 4
    res = evaluate(net, x, y, suite=parse_suite(SUITE), progress=False, sanity=False, keep_adversarial=True)
    return {"net": net, "x": x, "y": y, "res": res}


def test_samples_agree_with_the_aggregate_rows(run):
    res = run["res"]
    s = res.samples
    assert list(s.columns) == SAMPLE_COLUMNS and len(s) == 60 * 4
    for (norm, eps), cell in s.groupby(["norm", "eps"]):
        assert cell["robust"].mean() == pytest.approx(res.accuracy("worst_case", norm, eps))
        assert cell["certified"].mean() == pytest.approx(res.accuracy("certified", norm, eps))
        assert cell["clean_correct"].mean() == pytest.approx(res.accuracy("clean"))
    assert not (s.certified & ~s.robust).any()  # certified <= attacked, per sample
    assert not (s.robust & ~s.clean_correct).any()
    assert ((s.broken_by == "") == s.robust).all()
    assert ((s.broken_by == "clean") == ~s.clean_correct).all()
    assert set(s.broken_by) <= {"", "clean", "fgsm", "pgd", "apgd-ce"}
    hit = s[~s.broken_by.isin(["", "clean"])]
    assert len(hit) and (hit.broken_at_eps <= hit.eps).all()
    assert (hit.min_adv_norm <= hit.broken_at_eps * (1 + 1e-4) + 1e-6).all()  # found inside the breaking ball
    # once broken at ε, broken at every larger ε of the norm (the worst case is monotone)
    l2 = s[s.norm == "L2"].pivot(index="sample", columns="eps", values="robust")
    assert not (l2[0.5] & ~l2[0.2]).any() and not (l2[0.2] & ~l2[0.05]).any()


def test_certified_radius_matches_the_certificate(run):
    res, net, x, y = run["res"], run["net"], run["x"], run["y"]
    s = res.samples
    assert s.certified.any() and s.certified_radius.notna().all()
    assert (s[s.certified].certified_radius > s[s.certified].eps).all()
    l2 = s[s.norm == "L2"].drop_duplicates("sample").set_index("sample").certified_radius
    linf = s[s.norm == "Linf"].drop_duplicates("sample").set_index("sample").certified_radius
    assert np.allclose(linf.values, l2.values / math.sqrt(20))
    # the radius is the threshold of certify.lipschitz_certified with the same pair constants
    with torch.no_grad():
        logits = net(x)
    pairs = torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    radius = lipschitz_radius(logits, y, pairs)
    for r in (0.0, 0.01, 0.05, 0.1, 0.3):
        ok = certify_mod.lipschitz_certified(logits, y, pairs, r)
        assert torch.equal(ok[radius != r], (radius > r)[radius != r])


def test_kept_adversarial_examples_fool_the_model_inside_their_ball(run):
    res, net, x, y = run["res"], run["net"], run["x"], run["y"]
    s = res.samples
    first = s[~s.broken_by.isin(["", "clean"])].drop_duplicates(["sample", "norm"])
    assert len(res.adversarial) == len(first) > 0
    got = {(i, norm): (a, e) for i, a, norm, e, _ in res.adversarial}
    for row in first.itertuples():
        assert got[(row.sample, row.norm)] == (row.broken_by, row.broken_at_eps)
    with torch.no_grad():
        for i, _, norm, eps, adv in res.adversarial:
            d = adv - x[i]
            size = float(d.norm()) if norm == "L2" else float(d.abs().max())
            assert size <= eps * (1 + 1e-4) + 1e-6
            assert int(net(adv[None]).argmax()) != int(y[i])


def test_per_class_accuracy(run):
    res = run["res"]
    rows = res.per_class
    assert [r["class"] for r in rows] == sorted(set(run["y"].tolist()))
    assert sum(r["n"] for r in rows) == 60
    total = sum(r["n"] * r["robust"]["L2|0.5"] for r in rows) / 60
    assert total == pytest.approx(res.accuracy("worst_case", "L2", 0.5))
    assert res.meta["per_class"] == rows


# --------------------------------------------------------------------------- the command line, tabular data

TAB_MODULE = '''\
"""A tabular classifier: 20 features, BatchNorm and Dropout."""
import torch
from torch import nn


def tab_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 32), nn.BatchNorm1d(32),
                         nn.ReLU(), nn.Linear(32, 4))
'''


@pytest.fixture(scope="module")
def tab(tmp_path_factory) -> dict[str, Any]:
    import importlib.util

    d = tmp_path_factory.mktemp("tab")
    name = f"tabnets_{uuid.uuid4().hex[:10]}"
    (d / f"{name}.py").write_text(TAB_MODULE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, d / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = np.random.default_rng(0)
    x = g.random((200, 20)).astype(np.float32)
    y = (x @ g.normal(size=(20, 4))).argmax(1).astype(np.int64)
    net = mod.tab_mlp()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    X, Y = torch.tensor(x), torch.tensor(y)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), Y).backward()
        opt.step()
    net.eval()
    torch.save(net.state_dict(), d / "tab.pt")
    np.savez(d / "tab.npz", x=x, y=y)
    return {"dir": d, "ref": f"{name}:tab_mlp", "net": net, "x": X, "y": Y}


def _evaluate(tab: dict[str, Any], *extra: Any, checkpoints: tuple[str, ...] = ("tab.pt",)) -> tuple[int, str, str]:
    return run_cli(["evaluate", *checkpoints, "--model", tab["ref"], "--data", "tab.npz", "--suite", "ci-quick",
                    "--quiet", *extra])


def test_tabular_mlp_end_to_end(tab, monkeypatch):
    monkeypatch.chdir(tab["dir"])
    code, out, err = _evaluate(tab, "--out", "ev", "--save-adversarial", "adv.safetensors")
    assert code == 0, err
    samples = pd.read_csv(tab["dir"] / "ev" / "samples.csv")
    assert list(samples.columns) == ["model", *SAMPLE_COLUMNS] and len(samples) == 200 * 2
    frame = pd.read_csv(tab["dir"] / "ev" / "results.csv")
    wc = frame[(frame.attack == "worst_case") & (frame.eps == 1.0)].accuracy.iloc[0]
    assert samples[samples.eps == 1.0].robust.mean() == pytest.approx(wc)
    run = json.loads((tab["dir"] / "ev" / "results.json").read_text())["runs"][0]
    assert {r["class"] for r in run["per_class"]} == set(tab["y"].tolist())
    assert run["adversarial_file"]["examples"] > 0
    assert "n = 200 samples" in out and "Wilson interval" in out
    assert "fewer than the 10,000" not in out  # a user's own data has no standard size to compare with
    assert "per class" in out
    with safe_open(str(tab["dir"] / "adv.safetensors"), "pt") as f:
        meta = f.metadata()
        adv, idx, eps = f.get_tensor("x_adv"), f.get_tensor("sample"), f.get_tensor("eps")
        attacks = json.loads(meta["attacks"])
        which = [attacks[int(a)] for a in f.get_tensor("attack")]
    assert adv.shape[1:] == (20,) and meta["suite"] == "ci-quick" and len(idx) == run["adversarial_file"]["examples"]
    assert (samples.broken_by.isna() == samples.robust).all()  # robust: empty in the CSV, NaN to pandas
    broken = samples[samples.broken_by.notna() & (samples.broken_by != "clean")].drop_duplicates("sample")
    assert sorted(idx.tolist()) == sorted(broken["sample"].tolist())
    assert set(which) <= {"fgsm", "pgd"}
    with torch.no_grad():
        pred = tab["net"](adv).argmax(1)
    assert (pred != tab["y"][idx]).all()
    assert ((adv - tab["x"][idx]).norm(dim=1) <= eps * (1 + 1e-4) + 1e-6).all()


@pytest.mark.parametrize("case", ["exists", "no-folder", "two-checkpoints", "suffix"])
def test_save_adversarial_path_is_checked_before_work(tab, monkeypatch, case):
    monkeypatch.chdir(tab["dir"])
    out = f"ev-{case}"
    args: list[Any] = ["--out", out, "--save-adversarial", "adv-taken.safetensors"]
    if case == "exists":
        Path(tab["dir"] / "adv-taken.safetensors").write_bytes(b"x")
        words = ["already exists"]
    elif case == "no-folder":
        args[-1] = "missing/adv.safetensors"
        words = ["does not exist"]
    elif case == "two-checkpoints":
        (tab["dir"] / "tab2.pt").write_bytes((tab["dir"] / "tab.pt").read_bytes())
        words = ["one checkpoint"]
    else:
        args[-1] = "adv.pt"
        words = ["safetensors"]
    both = ("tab.pt", "tab2.pt") if case == "two-checkpoints" else ("tab.pt",)
    code, _, err = _evaluate(tab, *args, checkpoints=both)
    assert_one_line_error(code, err, *words)
    assert not (tab["dir"] / out).exists()  # nothing written
