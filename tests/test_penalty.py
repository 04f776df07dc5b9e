"""rc.ClipPenalty: the penalty is CLIP's, the pairs move without being told, a saved state resumes a run
bit-identically, and the README's training loop runs and lowers the Lipschitz lower bound."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustclip as rc
from robustclip.bounds import lower, pairs

ROOT = Path(__file__).resolve().parent.parent


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.Sigmoid(), nn.Linear(24, 4))


def batches(n_steps: int, bs: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(bs, 1, 4, 4, generator=g), torch.randint(0, 4, (bs,), generator=g)) for _ in range(n_steps)]


def step(model: nn.Module, opt: torch.optim.Optimizer, clip: rc.ClipPenalty, x: torch.Tensor, y: torch.Tensor,
         lam: float = 0.5) -> torch.Tensor:
    pen = clip(x)
    loss = F.cross_entropy(model(x), y) + lam * pen
    opt.zero_grad()
    loss.backward()
    opt.step()
    return pen.detach()


def test_penalty_is_the_largest_quotient_of_its_pairs():
    model = tiny()
    clip = rc.ClipPenalty(model, pairs=8)
    x, _ = batches(1)[0]
    pen = clip(x)
    assert pen.dim() == 0 and pen.requires_grad
    P = clip.reg.P.detach()
    assert P is not None and P.shape == (16, 1, 4, 4) and float(P.min()) >= 0 and float(P.max()) <= 1
    q = pairs.quotients(model, P)
    assert torch.allclose(pen, q.max() + 1e-4 * q.sum())
    assert torch.equal(clip.quotients, q.detach())


def test_pairs_ascend_by_themselves_after_backward():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: only the pairs move
    clip = rc.ClipPenalty(model, pairs=8)
    data = batches(30)
    first = step(model, opt, clip, *data[0])
    before = clip.pairs.clone()
    for x, y in data[1:]:
        last = step(model, opt, clip, x, y)
    assert not torch.equal(clip.pairs, before)  # no after_step() call anywhere, and yet they moved
    assert float(last) > float(first)           # ... uphill


@pytest.mark.parametrize("lam", [0.0, None], ids=["scaled-by-zero", "left-out-of-the-loss"])
def test_pairs_do_not_freeze_when_no_gradient_reaches_them(lam):
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    clip = rc.ClipPenalty(model, pairs=8)
    x, y = batches(1)[0]
    seen = []
    for _ in range(4):
        pen = clip(x)
        seen.append(clip.pairs.clone())
        loss = F.cross_entropy(model(x), y) + (lam * pen if lam is not None else 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(seen, seen[1:]))


def test_fallback_direction_leaves_weight_grads_alone():
    model = tiny()
    clip = rc.ClipPenalty(model, pairs=4)
    x, _ = batches(1)[0]
    clip(x)
    clip(x)  # no backward in between: the ascent direction is computed here
    assert all(p.grad is None for p in model.parameters())


def test_resume_from_state_dict_is_bit_identical():
    data = batches(24)
    cut = 11

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, rc.ClipPenalty]:
        model = tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, rc.ClipPenalty(model, pairs=8, refresh_every=7, seed=3)

    model, opt, clip = fresh()  # uninterrupted
    pens_a = [step(model, opt, clip, x, y) for x, y in data]
    pairs_a = clip.pairs.clone()

    model, opt, clip = fresh()  # interrupted at `cut`, restored into fresh objects
    pens_b = [step(model, opt, clip, x, y) for x, y in data[:cut]]
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "clip": clip.state_dict()})
    del model, opt, clip
    model, opt, clip = fresh()
    torch.manual_seed(12345)  # resuming must not depend on the global RNG
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    clip.load_state_dict(saved["clip"])
    pens_b += [step(model, opt, clip, x, y) for x, y in data[cut:]]
    assert all(torch.equal(a, b) for a, b in zip(pens_a, pens_b))
    assert torch.equal(pairs_a, clip.pairs)


def test_state_dict_round_trips_through_torch_save(tmp_path):
    model = tiny()
    clip = rc.ClipPenalty(model, pairs=4)
    clip(batches(1)[0][0])
    torch.save(clip.state_dict(), tmp_path / "c.pt")
    other = rc.ClipPenalty(model, pairs=4)
    other.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False))
    assert torch.equal(other.pairs, clip.pairs) and other.calls == clip.calls == 1


def test_bad_settings_are_user_errors():
    with pytest.raises(rc.RobustclipError, match="reduction"):
        rc.ClipPenalty(tiny(), reduce="median")


def readme_loop() -> str:
    """The training loop the docs show (docs/training.md; it was the README's before the docs site)."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## CLIP in your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_readme_loop_runs_and_lowers_the_lipschitz_bound(tmp_path, monkeypatch, mnist_test):
    code = readme_loop()
    assert len(code.strip().splitlines()) <= 16
    for literal in (".subset(10_000)", "range(3)", "lam = 0.1"):
        assert literal in code  # the test edits these: the size of the run and λ
    monkeypatch.chdir(tmp_path)
    x_probe = mnist_test.x[:256]
    bounds = {}
    for lam in (0.0, 0.1):
        run = code.replace(".subset(10_000)", ".subset(3000)").replace("range(3)", "range(2)")
        run = run.replace("lam = 0.1", f"lam = {lam}")
        torch.manual_seed(0)
        ns: dict = {}
        exec(compile(run, "docs/training.md", "exec"), ns)
        assert (tmp_path / "run.pt").is_file()
        bounds[lam] = lower.lower_bound_quotient(ns["model"].eval(), x_probe, pairs=32, steps=30, seed=0)
    assert bounds[0.1] < bounds[0.0], bounds
