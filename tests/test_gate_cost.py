"""The gate's cost and reach: Lipschitz ascents within a budget (and still independent per seed), results that do
not depend on the batch split, progress lines that suit a CI log, --device auto, and CPU-versus-GPU comparisons."""

from __future__ import annotations

import io
import statistics
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from gate_models import draw_outcomes, recorded
from torch import nn

from robustclip.bounds import budget as lipschitz_budget
from robustclip.bounds import lipschitz, lower
from robustclip.core import devices, progress
from robustclip.errors import RobustclipError
from robustclip.gate import baseline, measuring, verdicts
from robustclip.gate import check as gate
from robustclip.models import specs as models

CNN_SPEC = {"arch": "cnn", "num_classes": 10}


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(CNN_SPEC).eval()


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(models.paper_spec()).eval()


def _x(n: int = 40, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the cost model


def test_paper_mlp_runs_unscaled_so_its_estimates_are_unchanged():
    for mode in ("full", "fast"):
        plan = lipschitz_budget.plan_ascent(_mlp(), (1, 28, 28), mode)
        assert not plan.scaled and plan.settings() == lipschitz_budget.DEFAULTS[mode]
        assert plan.cost <= plan.budget
        assert "unscaled" in plan.describe()
    assert lipschitz_budget.forward_macs(_mlp(), (1, 28, 28)) == 784 * 200 + 200 * 80 + 80 * 10


def test_a_cnn_is_scaled_into_the_budget_the_same_way_every_time():
    model = _cnn()
    # conv1 16x14x14 outputs x 16 taps, conv2 32x7x7 x 256, fc 1568->100, fc 100->10
    assert lipschitz_budget.forward_macs(model, (1, 28, 28)) == 3136 * 16 + 1568 * 256 + 1568 * 100 + 1000
    for mode in ("full", "fast"):
        plan = lipschitz_budget.plan_ascent(model, (1, 28, 28), mode)
        assert plan.scaled and plan.cost <= plan.budget < plan.full_cost
        assert plan.pairs < lipschitz_budget.DEFAULTS[mode]["pairs"]
        assert all(v >= lipschitz_budget.FLOORS[k] for k, v in plan.settings().items())
        assert plan == lipschitz_budget.plan_ascent(_cnn(seed=5), (1, 28, 28), mode)  # architecture, not weights
        assert "scaled to" in plan.describe() and "GMAC" in plan.describe()
    assert lipschitz_budget.plan_ascent(model, (1, 28, 28), "fast").cost < \
        lipschitz_budget.plan_ascent(model, (1, 28, 28), "full").cost


def test_a_huge_model_stops_at_the_floors():
    plan = lipschitz_budget.plan_ascent(_cnn(), (1, 28, 28), "full", budget=1e6)
    assert plan.settings() == {**lipschitz_budget.FLOORS}


# ----------------------------------------------------------------------------- seeds, batches, spread


def test_results_are_identical_across_batch_sizes():
    x = _x(60)
    kw = {"pairs": 12, "steps": 6, "jac_points": 12, "jac_steps": 3, "jac_iters": 4}
    mlp = _mlp()
    ref, _ = lower.lower_estimate(mlp, x, seed=3, **kw)
    for batch in (1, 5, 7, 100):  # every random draw is made up front on the CPU, so only rounding may differ
        got, _ = lower.lower_estimate(mlp, x, seed=3, batch=batch, **kw)  # (a batch of 1 is a matrix-vector
        for k in ref:  # product, with its own rounding)
            assert got[k] == pytest.approx(ref[k], rel=1e-5), (batch, k)
    cnn = _cnn()
    ref, _ = lower.lower_estimate(cnn, x, seed=3, **kw)
    got, _ = lower.lower_estimate(cnn, x, seed=3, batch=5, **kw)
    for k in ref:  # convolutions may round differently with the batch size, nothing more
        assert got[k] == pytest.approx(ref[k], rel=1e-4)


def test_each_seed_is_independent_and_the_spread_is_stillrecorded():
    """The gate's restart noise under a scaled (cheaper) plan: seeds differ (a spread exists), and a seed gives
    the same value alone as after the others (no warm start carries over between seeds)."""
    model, x = _cnn(), _x(40)
    plan = lipschitz_budget.plan_ascent(model, (1, 28, 28), "fast", budget=2e8)
    assert plan.scaled
    values = [max(lower.lower_estimate(model, x, seed=s, **plan.settings())[0].values()) for s in range(5)]
    assert statistics.stdev(values) > 0
    alone = max(lower.lower_estimate(model, x, seed=3, **plan.settings())[0].values())
    assert alone == values[3]
    # the spread the gate's limit comes from is the spread of these values, so a check's own seed lies within it
    limit = statistics.fmean(values) + 3 * statistics.stdev(values)
    assert max(values) <= limit


def test_estimate_records_its_plan():
    model, x = _cnn(), _x(20)
    plan = lipschitz_budget.plan_ascent(model, (1, 28, 28), "fast", budget=1e8)
    rep = lipschitz.estimate(model, x, plan=plan, fast_upper=True)  # as --lipschitz fast: the plan is the point here
    assert rep.plan is not None and rep.plan["pairs"] == plan.pairs and rep.plan["scaled"] is True
    assert rep.lower > 0


# ----------------------------------------------------------------------------- the gate


RAW = {"name": "s", "eps": {"L2": [1.0]}}


def _outcomes(acc: float, n: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    return draw_outcomes(acc, n=n, clean=0.95, seed=seed)


def test_fixed_mode_compares_a_gpu_check_with_a_cpu_baseline():
    """Recorded outcomes: a GPU run of the same checkpoint flips a few borderline samples both ways (rounding);
    that is within the gate's noise. A real drop on the GPU still fails."""
    b = _outcomes(0.6)
    lows = (2.0, 2.1, 1.9, 2.05, 1.95, 2.02, 1.98, 2.04)
    base = baseline.make_baseline([recorded(b, lower=lows, upper=(10.0,) * 8)], suite_raw=RAW, suite_name="s",
                              mode="fixed")
    assert base["environment"]["device"] == "cpu"
    gpu = {k: v.copy() for k, v in b.items()}
    wc = gpu["worst_case@L2:1"]
    wc[np.flatnonzero(wc)[:3]] = False  # 3 lost, 2 gained: rounding at the decision boundary
    wc[np.flatnonzero(~wc & gpu["clean"])[:2]] = True
    rows, notes = verdicts.compare(base, recorded(gpu, lower=(2.03,), upper=(10.0 * (1 + 1e-7),), device="cuda:0"),
                               suite_raw=RAW)
    assert not any(r.regressed or r.suspicious for r in rows)
    assert any("made on cpu" in n and "cuda:0" in n for n in notes)
    assert {r.metric: r for r in rows}["worst_case@L2:1"].test == "paired McNemar"
    drop = {k: v.copy() for k, v in b.items()}
    drop["worst_case@L2:1"][np.flatnonzero(drop["worst_case@L2:1"])[:40]] = False  # 4 points
    rows, _ = verdicts.compare(base, recorded(drop, device="cuda:0"), suite_raw=RAW)
    assert {r.metric: r for r in rows}["worst_case@L2:1"].regressed


def test_estimates_made_with_other_ascent_settings_are_incomparable():
    b = _outcomes(0.6)
    scaled = {"full": {"pairs": 41, "steps": 32, "jac_points": 41, "jac_steps": 6, "jac_iters": 10}}
    base = baseline.make_baseline([recorded(b, lower=(2.0, 2.1), plans=scaled)], suite_raw=RAW, suite_name="s",
                              mode="fixed")
    assert base["lipschitz"]["plans"] == scaled
    baseline.validate_baseline(base)
    verdicts.compare(base, recorded(b, plans=scaled), suite_raw=RAW)  # same settings: compared
    with pytest.raises(RobustclipError, match="ascent settings"):
        verdicts.compare(base, recorded(b, plans={"full": lipschitz_budget.default_settings("full")}), suite_raw=RAW)
    old = {**base, "lipschitz": {k: v for k, v in base["lipschitz"].items() if k != "plans"}}
    baseline.validate_baseline(old)  # a baseline from before the budget: it ran the defaults
    verdicts.compare(old, recorded(b, plans={"full": lipschitz_budget.default_settings("full")}), suite_raw=RAW)
    with pytest.raises(RobustclipError, match="ascent settings"):
        verdicts.compare(old, recorded(b, plans=scaled), suite_raw=RAW)
    bad = {**base, "lipschitz": {**base["lipschitz"], "plans": {"full": {"pairs": -1}}}}
    with pytest.raises(RobustclipError, match="malformed Lipschitz ascent plans"):
        baseline.validate_baseline(bad)


def test_environment_records_the_real_device():
    env = measuring.environment("cpu")
    assert env["device"] == "cpu" and "device_name" in env and "cuda_version" in env
    assert {"tf32_matmul", "tf32_cudnn"} <= set(env)


# ----------------------------------------------------------------------------- devices


def test_device_auto_is_cuda_when_present_else_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == want
    assert devices.resolve_device(None) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
@pytest.mark.parametrize("name", ["cuda", "cuda:7"])
def test_missing_gpu_is_one_line(name):
    with pytest.raises(RobustclipError) as e:
        devices.resolve_device(name)
    assert "\n" not in str(e.value) and "--device cpu" in e.value.fix


def test_gpu_index_that_does_not_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RobustclipError, match="only 1 GPU"):
        devices.resolve_device("cuda:7")


def test_exact_math_turns_tf32_off_and_restores_it():
    before = devices.tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with devices.exact_math() as flags:
            assert flags == {"tf32_matmul": False, "tf32_cudnn": False} == devices.tf32_flags()
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["tf32_matmul"]


def test_oom_at_the_smallest_batch_is_one_line_naming_model_and_batch():
    err = devices.oom_error(_mlp(), torch.device("cuda:0"), 1, "PGD-L2")
    assert "Sequential" in err.problem and "batch size 1" in err.problem and "--device cpu" in err.fix


def test_the_batch_that_fitted_is_reused():
    m, dev = _mlp(), torch.device("cpu")
    assert devices.fitting_batch(m, dev, "pgd", 500) == 500
    devices.remember_batch(m, dev, "pgd", 125, backed_off=True)
    assert devices.fitting_batch(m, dev, "pgd", 500) == 125 and devices.fitting_batch(m, dev, "fgsm", 500) == 500
    devices.remember_batch(_mlp(1), dev, "pgd", 7, backed_off=False)  # no back-off: nothing learned


# ----------------------------------------------------------------------------- progress


def test_progress_in_a_log_is_plain_lines_every_interval(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    b = progress.bar(range(4), desc="Lipschitz ascent seeds")
    for _ in b:
        pass
    b.close()
    text = err.getvalue()
    assert "\r" not in text and "Lipschitz ascent seeds: 4/4" in text
    assert all(line.strip() for line in text.splitlines())
    err.truncate(0)
    quiet = progress.bar(range(4), desc="x", enabled=False)
    list(quiet)
    quiet.close()
    assert err.getvalue() == ""


def test_progress_none_means_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress.resolve(None) is False and progress.resolve(True) is True


# ----------------------------------------------------------------------------- resuming a long evaluation


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, data_dir):
    from robustclip.evaluation.pipeline import train_to_checkpoint
    from robustclip.training.config import TrainConfig

    out = tmp_path_factory.mktemp("cache") / "fc.safetensors"
    cfg = TrainConfig(dataset="mnist", model=models.paper_spec(), epochs=1, n_train=500, seed=0, lip_probe_pairs=0)
    train_to_checkpoint(cfg, out, data_dir=str(data_dir), progress=False)
    return out


@pytest.mark.data
def test_evaluate_resumes_from_finished_attacks_and_check_never_reads_them(small_ckpt, tmp_path, monkeypatch,
                                                                           data_dir):
    from robustclip.evaluation import cache as attack_cache
    from robustclip.evaluation.pipeline import evaluate_checkpoint

    kw = {"suite": "ci-quick", "n": 60, "data_dir": str(data_dir), "progress": False, "lipschitz": "off"}
    first = evaluate_checkpoint(small_ckpt, cache_dir=tmp_path / "cache", **kw)
    n_attacks = first.result.meta["attack_cache"]["misses"]
    assert first.result.meta["attack_cache"]["hits"] == 0 and n_attacks > 0
    again = evaluate_checkpoint(small_ckpt, cache_dir=tmp_path / "cache", **kw)
    assert again.result.meta["attack_cache"] == {**first.result.meta["attack_cache"], "hits": n_attacks, "misses": 0}
    pd.testing.assert_frame_equal(first.result.frame, again.result.frame)
    other = evaluate_checkpoint(small_ckpt, cache_dir=tmp_path / "cache", **{**kw, "n": 50})  # another evaluation
    assert other.result.meta["attack_cache"]["hits"] == 0

    def refuse(*a, **k):
        raise AssertionError("the gate read the attack cache")

    monkeypatch.setattr(attack_cache.AttackCache, "get", refuse)
    base = tmp_path / "b.json"
    code, _, _ = gate.run_check(str(small_ckpt), suite="ci-quick", baseline=str(base), n=60, update=True,
                                lipschitz="off", data_dir=str(data_dir), progress=False)
    assert code == 0
    code, rows, _ = gate.run_check(str(small_ckpt), suite="ci-quick", baseline=str(base), n=60, lipschitz="off",
                                   data_dir=str(data_dir), progress=False)
    assert code == 0 and rows
