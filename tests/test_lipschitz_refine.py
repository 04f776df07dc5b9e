"""The refined Lipschitz estimate ``evaluate`` reports by default (``estimate(refine=True)``).

* Its lower bound is a measured Jacobian norm: never above a sound upper bound, never below the plain estimate of the
  same seed (it adds methods, it replaces none), and the longer ascent finds more than the plain one on a trained MLP.
* ECLipsE joins the upper bounds for fully connected chains (sound: above every lower bound, at most the layer
  bounds); it is refused with a reason for MinMax nets and for layers wider than the default limit.
* The refinement stays within its MAC budget by cutting moves, then starts.
* ``evaluate_checkpoint(refine_lipschitz=False)`` (what the CI gate measures with) gives the plain estimate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustclip.bounds import eclipse, lipschitz, lower
from robustclip.models import specs as models
from tests.tiny import one_thread


def _mlp(seed: int = 0, act: type[nn.Module] = nn.Sigmoid, scale: float = 5.0) -> nn.Sequential:
    """A seeded 64-32-16-10 net; weights times ``scale`` so the activations bend (a sigmoid net at PyTorch's default
    scale is nearly linear and every ascent finds its constant at once)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), act(), nn.Linear(32, 16), act(), nn.Linear(16, 10))
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(scale)
    return m


def _x(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_refined_lower_adds_to_the_plain_one_and_stays_below_the_upper_bound():
    with one_thread():
        m = _mlp()
        x = _x()
        plain = lipschitz.estimate(m, x, seed=0, pairs=8, steps=5)
        fine = lipschitz.estimate(m, x, seed=0, pairs=8, steps=5, refine=True)
    assert set(plain.lower_methods) < set(fine.lower_methods)
    assert {"jacobian_data_refined", "jacobian_ascent_refined"} <= set(fine.lower_methods)
    for k, v in plain.lower_methods.items():
        assert fine.lower_methods[k] == v  # same seed, same plain methods
    assert fine.lower >= plain.lower
    assert fine.lower > plain.lower * 1.1  # 5 pair steps and 10 Jacobian moves leave room the long ascent fills
    assert fine.upper is not None and fine.lower <= fine.upper
    assert fine.seconds["refine_lower"] > 0 and "refine_upper" in fine.seconds


def test_eclipse_joins_the_upper_bounds_of_a_chain_and_is_sound():
    with one_thread():
        m = _mlp(1, nn.ReLU)
        x = _x(seed=1)
        plain = lipschitz.estimate(m, x, seed=0, pairs=8, steps=5)
        fine = lipschitz.estimate(m, x, seed=0, pairs=8, steps=5, refine=True)
        z = torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(2))
        jac = float(lower._jacobian_norms(m, z).detach().max())
    ec = {u.method: u for u in fine.uppers}["eclipse"]
    assert math.isfinite(ec.value)
    assert jac <= ec.value * (1 + 1e-6) and fine.lower <= ec.value * (1 + 1e-6)
    assert ec.value <= min(u.value for u in plain.uppers) * (1 + 1e-9)
    assert fine.upper == min(u.value for u in fine.uppers if math.isfinite(u.value))
    assert "eclipse" not in {u.method for u in plain.uppers}


def test_eclipse_refused_with_a_reason_for_minmax_and_wide_layers():
    with one_thread():
        mm = models.build({"arch": "fc", "sizes": [64, 16, 10], "activation": "minmax"}).eval()
        r = lipschitz.estimate(mm, _x(16), seed=0, pairs=4, steps=2, refine=True)
        wide = eclipse.eclipse_upper(_mlp(), (1, 8, 8), max_width=20)
    ec = {u.method: u for u in r.uppers}["eclipse"]
    assert ec.value == math.inf and "MinMax" in ec.assumptions
    assert wide.value == math.inf and "32 outputs, more than 20" in wide.assumptions
    assert r.upper is not None and math.isfinite(r.upper)  # the layer bounds still stand


def test_refine_cost_is_cut_to_the_budget():
    with one_thread():
        m = _mlp()
        x = _x(32)
        macs = 64 * 32 + 32 * 16 + 16 * 10
        full = lower.refine_cost(macs, 10, lower.REFINE_STARTS, lower.REFINE_STEPS, 32)
        _, used = lower.refine_lower(m, x, budget=full / 5)
        _, tiny = lower.refine_lower(m, x, budget=1.0)
    assert used["starts"] == lower.REFINE_STARTS and 20 <= used["steps"] < lower.REFINE_STEPS
    assert used["points"] == 32
    assert lower.refine_cost(macs, 10, used["starts"], used["steps"], 32) <= full / 5
    assert tiny == {"starts": 1, "steps": 20, "points": 16}  # the floors


def test_the_gate_measures_with_the_plain_estimator(data_dir, tmp_path):
    from robustclip.evaluation.pipeline import evaluate_checkpoint, train_to_checkpoint
    from robustclip.training.config import TrainConfig
    from tests.tiny import suite_toml

    cfg = TrainConfig(dataset="mnist", model={"arch": "fc", "sizes": [784, 16, 10]}, epochs=1, n_train=256, seed=0)
    ck = tmp_path / "m.safetensors"
    train_to_checkpoint(cfg, ck, data_dir=str(data_dir), progress=False)
    suite = tmp_path / "s.toml"
    suite.write_text(suite_toml(n=16, eps=(1.0,), steps=2))
    plain = evaluate_checkpoint(ck, suite=suite, data_dir=str(data_dir), progress=False, refine_lipschitz=False)
    fine = evaluate_checkpoint(ck, suite=suite, data_dir=str(data_dir), progress=False)
    assert not any(k.endswith("_refined") for k in plain.lipschitz.lower_methods)
    assert any(k.endswith("_refined") for k in fine.lipschitz.lower_methods)
    assert fine.lipschitz.lower >= plain.lipschitz.lower
    assert "eclipse" in {u.method for u in fine.lipschitz.uppers}
