"""Adversarial training and TRADES as registry entries: the examples they build, their penalties, their
validation, and their use from the trainer, the command line and sweeps.

Small seeded models and real MNIST slices; the one training comparison uses 2,000 training images for
one epoch on one thread.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from tiny import SMALL, assert_one_line_error, one_thread, run_cli
from torch import nn

from robustclip.checkpoints import format as checkpoints
from robustclip.errors import RobustclipError, SuiteError
from robustclip.models import specs as models
from robustclip.sweeps import driver, planning
from robustclip.training.config import TrainConfig
from robustclip.training.regularizers import registry as regularizers
from robustclip.training.regularizers.adversarial import (
    KLPGD,
    AdversarialConfig,
    AdversarialRegularizer,
    TradesRegularizer,
)
from robustclip.training.trainer import Trainer, load_training_data


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def batch(mnist_test):
    """64 real MNIST test images (64, 1, 28, 28) in [0, 1] and their labels (64,)."""
    s = mnist_test.subset(64)
    return s.x.clone(), s.y.clone()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build({"arch": "fc", "sizes": [784, 32, 10], "activation": "sigmoid"})


class _ModeRecorder(nn.Module):
    """Wraps a model and records ``self.training`` at every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.inner(x)


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", ["adversarial", "trades"])
@pytest.mark.parametrize("norm,eps", [("L2", 1.5), ("Linf", 0.1)])
def test_examples_stay_in_the_ball_and_in_0_1(batch, name, norm, eps):
    x, y = batch
    reg = regularizers.make(name, norm=norm, eps=eps, steps=4)
    reg.bind(_model())
    extra = reg.extra_inputs(x, 0, y=y)
    assert extra is not None and not extra.requires_grad
    adv = extra[x.shape[0]:] if name == "trades" else extra
    if name == "trades":
        assert extra.shape == (2 * x.shape[0], *x.shape[1:])
        assert torch.equal(extra[: x.shape[0]], x)  # the clean rows come first, unchanged
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    d = (adv - x).flatten(1)
    dist = d.norm(dim=1) if norm == "L2" else d.abs().amax(dim=1)
    assert float(dist.max()) <= eps * (1 + 1e-5)
    assert float(dist.mean()) > 0.3 * eps  # the attack moved the images, not a no-op


@pytest.mark.parametrize("name", ["adversarial", "trades"])
@pytest.mark.parametrize("start_training", [True, False])
def test_attack_runs_in_eval_mode_and_restores_the_mode(batch, name, start_training):
    x, y = batch
    rec = _ModeRecorder(_model())
    rec.train(start_training)
    reg = regularizers.make(name, steps=3)
    reg.bind(rec)
    reg.extra_inputs(x, 0, y=y)
    assert rec.modes and not any(rec.modes)  # every forward of the attack saw eval mode
    assert rec.training is start_training
    assert all(p.grad is None for p in rec.parameters())  # the attack leaves no weight gradients behind


def test_pgd_raises_the_loss_and_the_penalty_is_ce_on_the_examples(batch):
    x, y = batch
    model = _model()
    reg = regularizers.make("adversarial", eps=2.0, steps=7)
    reg.bind(model)
    torch.manual_seed(5)
    adv = reg.extra_inputs(x, 0, y=y)
    out = model(adv)
    pen = reg.penalty(model, out)
    assert pen is not None and pen.requires_grad
    pen = pen.detach()
    assert float(pen.detach()) == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-6)
    with torch.no_grad():
        clean_ce = float(F.cross_entropy(model(x), y))
        noise = x + torch.randn_like(x) * 2.0 / math.sqrt(x[0].numel())
        noise_ce = float(F.cross_entropy(model(noise.clamp(0, 1)), y))
    assert float(pen) > clean_ce + 0.05 and float(pen) > noise_ce + 0.05
    # the same PGD as torchattacks' own, with the same random start
    torch.manual_seed(5)
    ref = torchattacks.PGDL2(model, eps=2.0, alpha=2.5 * 2.0 / 7, steps=7, random_start=True)(x, y)
    torch.testing.assert_close(adv, ref)


def test_trades_penalty_is_the_kl_of_clean_and_adversarial_outputs(batch):
    x, y = batch
    model = _model(1)
    reg = regularizers.make("trades", eps=2.0, steps=5)
    reg.bind(model)
    extra = reg.extra_inputs(x, 0, y=y)
    out = model(extra)
    kl = reg.penalty(model, out)
    n = x.shape[0]
    by_hand = (F.softmax(out[:n], 1) * (F.log_softmax(out[:n], 1) - F.log_softmax(out[n:], 1))).sum(1).mean()
    assert kl is not None and float(kl) == pytest.approx(float(by_hand), rel=1e-4, abs=1e-7)
    assert float(kl) > 0
    with torch.no_grad():  # the adversary did better than a random point of the same sphere
        d = torch.randn_like(x)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 2.0
        rnd = model((x + d).clamp(0, 1))
        kl_rnd = float(F.kl_div(F.log_softmax(rnd, 1), F.softmax(model(x), 1), reduction="batchmean"))
    assert float(kl) > kl_rnd


def test_klpgd_on_its_own_keeps_any_shape():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(10, 5)
    adv = KLPGD(model, eps=0.3, alpha=0.1, steps=3, norm="L2")(x)
    assert adv.shape == x.shape and float((adv - x).norm(dim=1).max()) <= 0.3 + 1e-6


@pytest.mark.parametrize("name", ["adversarial", "trades"])
def test_share_scales_the_penalty_by_s_over_1_minus_s(batch, name):
    x, y = batch
    model = _model()
    pens = []
    for share in (None, 0.75):
        reg = regularizers.make(name, steps=2, **({} if share is None else {"share": share}))
        reg.bind(model)
        torch.manual_seed(0)
        extra = reg.extra_inputs(x, 0, y=y)
        pens.append(float(reg.penalty(model, model(extra))))
    assert pens[1] == pytest.approx(3.0 * pens[0], rel=1e-5)
    assert AdversarialConfig(share=0.5).scale == 1.0


def test_penalty_without_extra_rows_is_none_and_labels_are_required(batch):
    x, _ = batch
    reg = regularizers.make("adversarial")
    reg.bind(_model())
    assert reg.penalty(_model(), None) is None
    with pytest.raises(RobustclipError, match="class labels"):
        reg.extra_inputs(x, 0, y=None)
    with pytest.raises(RobustclipError, match="class labels"):
        reg.extra_inputs(x, 0, y=torch.zeros(x.shape[0], 1))


def test_config_records_the_settings_and_the_step_used():
    c = regularizers.make("adversarial", eps=2, steps=7).config()
    assert c["name"] == "adversarial" and c["eps"] == 2 and c["steps"] == 7 and c["norm"] == "L2"
    assert c["alpha"] == pytest.approx(2.5 * 2 / 7)
    assert regularizers.make("trades", step_size=0.1).config()["alpha"] == 0.1
    assert isinstance(regularizers.make("trades"), TradesRegularizer)
    assert isinstance(regularizers.make("adversarial"), AdversarialRegularizer)


BAD = [({"norm": "L1"}, "norm"), ({"eps": 0}, "eps"), ({"eps": -1.0}, "eps"), ({"eps": float("nan")}, "eps"),
       ({"eps": float("inf")}, "eps"), ({"eps": "2"}, "eps"), ({"norm": "Linf", "eps": 2.0}, "eps"),
       ({"eps": 29.0}, "eps"), ({"steps": 0}, "steps"), ({"steps": 101}, "steps"), ({"steps": 2.5}, "steps"),
       ({"steps": True}, "steps"), ({"step_size": 0.0}, "step_size"), ({"step_size": float("nan")}, "step_size"),
       ({"share": 1.0}, "share"), ({"share": 0}, "share"), ({"random_start": "yes"}, "random_start"),
       ({"epsilon": 2}, "epsilon")]


@pytest.mark.parametrize("name", ["adversarial", "trades"])
@pytest.mark.parametrize("params,needle", BAD, ids=[f"{k}" for k, _ in BAD])
def test_bad_settings_are_one_line_user_errors(name, params, needle):
    with pytest.raises(RobustclipError) as ei:
        regularizers.make(name, **params)
    assert needle in ei.value.problem and "\n" not in str(ei.value) and ei.value.fix


def test_train_config_validates_the_adversarial_field():
    with pytest.raises(RobustclipError, match="steps"):
        TrainConfig(reg="adversarial", lam=1.0, adversarial={"steps": 1000}).validate()
    with pytest.raises(RobustclipError, match="class labels"):
        TrainConfig.for_dataset("regression", reg="trades", lam=1.0).validate()
    TrainConfig(reg="trades", lam=6.0, adversarial={"norm": "Linf", "eps": 0.3}).validate()
    assert TrainConfig(reg="adversarial", adversarial={"eps": 1}).reg_params() == {"eps": 1}


# --------------------------------------------------------------------------- training


def _robust_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    model.eval()
    torch.manual_seed(1)
    adv = torchattacks.PGDL2(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def test_adversarial_training_and_trades_beat_plain_training_under_pgd(data_dir, mnist_test):
    """Same net, data, seed and epochs: PGD-L2 training (ε = 2, 5 steps, λ = 1) and TRADES (β = 3) hold far more
    images than plain training against a 20-step PGD-L2 at ε = 2 (measured: 15% plain, 36% and 37%)."""
    splits = load_training_data(TrainConfig(dataset="mnist", n_train=3000), str(data_dir))
    test = mnist_test.subset(300)
    robust, results = {}, {}
    for reg, lam in (("none", 0.0), ("adversarial", 1.0), ("trades", 3.0)):
        cfg = TrainConfig(dataset="mnist", model=SMALL, reg=reg, lam=lam, epochs=3, n_train=3000, optimizer="adam",
                          lr=0.005, lip_probe_pairs=0, adversarial={"eps": 2.0, "steps": 5} if lam else {})
        res = Trainer(cfg, progress=False, splits=splits).run()
        assert len(res.history) == 3 and all(math.isfinite(h["train_loss"]) for h in res.history)
        robust[reg], results[reg] = _robust_acc(res.model, test.x, test.y, 2.0), res
    assert robust["adversarial"] > robust["none"] + 0.1, robust
    assert robust["trades"] > robust["none"] + 0.1, robust
    meta = results["adversarial"].meta
    assert meta.train["regularizer"]["eps"] == 2.0 and meta.train["adversarial"] == {"eps": 2.0, "steps": 5}
    assert meta.metrics["val_acc"] > 0.7 and results["trades"].meta.metrics["val_acc"] > 0.7  # still classifiers


# --------------------------------------------------------------------------- command line and sweeps


_main = run_cli


def test_cli_train_adversarial_writes_the_settings(tmp_path, data_dir):
    out = tmp_path / "at.safetensors"
    rc, so, se = _main(["train", "--reg", "adversarial", "--adv", "eps=1", "--adv", "steps=2", "--adv", "norm=L2",
                        "--model", json.dumps(SMALL), "--n-train", "256", "--epochs", "1", "--quiet",
                        "--data-dir", str(data_dir), "--out", str(out)])
    assert rc == 0, se
    _, meta = checkpoints.load(out)
    assert meta["train"]["reg"] == "adversarial" and meta["train"]["lam"] == 1.0
    assert meta["train"]["adversarial"] == {"eps": 1, "steps": 2, "norm": "L2"}


@pytest.mark.parametrize("args,needle", [
    (["--reg", "adversarial", "--adv", "eps=nan"], "eps"),
    (["--reg", "adversarial", "--adv", "steps=500"], "steps"),
    (["--reg", "trades", "--adv", "bogus=1"], "bogus"),
    (["--reg", "adversarial", "--adv", "eps"], "KEY=VALUE"),
    (["--reg", "clip", "--adv", "eps=2"], "--adv applies"),
])
def test_cli_bad_adv_settings_exit_2_with_one_line(tmp_path, args, needle):
    rc, _, err = _main(["train", *args, "--out", str(tmp_path / "m.safetensors")])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("robustclip: error:") and needle in lines[0], err


def test_sweep_plans_adversarial_methods():
    raw = {"dataset": "mnist", "seeds": [0, 1], "method": [
        {"reg": "adversarial", "lam": [1.0], "adversarial": {"eps": 2.0, "steps": 7}},
        {"reg": "trades", "lam": [1.0, 6.0], "adversarial": {"norm": "Linf", "eps": 0.3}}]}
    runs = planning.plan(raw)
    ids = {r.id for r in runs}
    assert {"mnist-adversarial-lam1-s0", "mnist-trades-lam6-s1"} <= ids and len(runs) == 6
    at = next(r for r in runs if r.id == "mnist-adversarial-lam1-s0")
    assert at.train["adversarial"] == {"eps": 2.0, "steps": 7} and at.meta["method"] == "adversarial"
    with pytest.raises(SuiteError, match="steps"):
        planning.plan({"dataset": "mnist", "method": [{"reg": "adversarial", "lam": [1.0],
                                                     "adversarial": {"steps": 0}}]}, where="s.toml")


def test_sweep_runs_and_reports_adversarial_training_like_any_method(tmp_path, data_dir):
    from tiny import SUITE_TOML

    from robustclip.reports import figures
    from robustclip.reports import pages as reports

    (tmp_path / "tiny.toml").write_text(SUITE_TOML)
    raw = {"name": "adv", "dataset": "mnist", "epochs": 1, "n_train": 300, "n_test": 64, "seeds": [0],
           "model": SMALL, "suite": str(tmp_path / "tiny.toml"), "train": {"optimizer": "adam", "lr": 0.005},
           "method": [{"reg": "none"}, {"reg": "adversarial", "lam": [1.0], "adversarial": {"eps": 2.0, "steps": 2}}]}
    table = driver.run_sweep(raw, tmp_path / "sweep", data_dir=str(data_dir), progress=False)
    assert set(table.method) == {"none", "adversarial"}
    ev = json.loads((tmp_path / "sweep" / "runs" / "mnist-adversarial-lam1-s0" / "eval.json").read_text())
    assert ev["train"]["regularizer"]["name"] == "adversarial" and ev["train"]["adversarial"]["steps"] == 2
    index = reports.render(tmp_path / "sweep", tmp_path / "rep")
    page = index.read_text(encoding="utf-8")
    head = page[page.index('id="headline"'):page.index('id="figures"')]
    assert "<td>adversarial</td>" in head and "<td>λ=1</td>" in head
    assert "adversarial training: fixed λ" in figures._family("adversarial", None)
    section = page[page.index('id="hyperparameters"'):page.index('id="provenance"')]
    assert "eps=2" in section and "steps=2" in section


# --------------------------------------------------------------------------- the hybrid clip-adversarial


def test_hybrid_rows_are_pairs_then_examples_and_its_terms_are_clip_and_ce(batch):
    from robustclip.bounds import pairs

    x, y = batch
    model = _model(2)
    reg = regularizers.make("clip-adversarial", clip={"pairs": 4, "radius": 2.0},
                            adversarial={"eps": 2.0, "steps": 2})
    reg.bind(model)
    extra = reg.extra_inputs(x, 0, y=y)
    assert extra is not None and extra.shape == (8 + x.shape[0], *x.shape[1:])
    assert float(extra.min()) >= 0.0 and float(extra.max()) <= 1.0
    out = model(extra)
    pen, fixed = reg.penalty(model, out), reg.unscaled_penalty()
    assert pen is not None and fixed is not None and pen.requires_grad and fixed.requires_grad
    q = pairs.quotients_from_outputs(out[:8], extra[:8])
    assert float(pen) == pytest.approx(float(q.max()), rel=1e-3)
    assert float(fixed) == pytest.approx(float(F.cross_entropy(out[8:], y)), rel=1e-6)
    adv_dist = (extra[8:] - x).flatten(1).norm(dim=1)
    assert float(adv_dist.max()) <= 2.0 + 1e-4 and float(adv_dist.mean()) > 0.5  # real PGD examples, not the batch
    assert reg.unscaled_penalty() is None  # handed over once per step
    (pen + fixed).backward()
    before = reg.clip.P.detach().clone()
    reg.after_step()
    assert reg.clip.P is not None and not torch.equal(before, reg.clip.P)  # the pairs ascended
    assert reg.estimate() == pytest.approx(float(q.max()), rel=1e-3)
    cfg = reg.config()
    assert cfg["name"] == "clip-adversarial" and cfg["clip"]["pairs"] == 4 and cfg["adversarial"]["steps"] == 2


def _train_small(splits, reg: str, lam: float, **kw) -> nn.Module:
    cfg = TrainConfig(dataset="mnist", model=SMALL, reg=reg, lam=lam, epochs=1, n_train=256, optimizer="adam",
                      lr=0.005, lip_probe_pairs=0, select=False, adversarial={"eps": 2.0, "steps": 2}, **kw)
    torch.manual_seed(0)
    return Trainer(cfg, progress=False, splits=splits).run().model


def test_the_trainer_adds_the_hybrids_adversarial_term_with_weight_1_whatever_lam(data_dir):
    """At a vanishing λ the hybrid trains exactly as PGD-AT at λ = 1 (same seed, same examples); at λ = 1 it does
    not; and at λ = 0 (a warm-up) it still trains adversarially instead of plainly."""
    splits = load_training_data(TrainConfig(dataset="mnist", n_train=256), str(data_dir))
    at = _train_small(splits, "adversarial", 1.0)
    tiny_lam = _train_small(splits, "clip-adversarial", 1e-12, clip={"pairs": 4})
    big_lam = _train_small(splits, "clip-adversarial", 1.0, clip={"pairs": 4})
    warm = _train_small(splits, "clip-adversarial", 1.0, clip={"pairs": 4}, warmup=1)
    plain = _train_small(splits, "none", 0.0)
    w = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    torch.testing.assert_close(w(tiny_lam), w(at), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w(warm), w(at), rtol=1e-4, atol=1e-5)
    assert float((w(big_lam) - w(at)).abs().max()) > 1e-3
    assert float((w(warm) - w(plain)).abs().max()) > 1e-3


@pytest.mark.parametrize("params,needle", [
    ({"clip": {"margin": 1.0}}, "margin"),
    ({"clip": {"pairs": 0}}, "pairs"),
    ({"adversarial": {"steps": 0}}, "steps"),
    ({"bogus": {}}, "bogus"),
])
def test_hybrid_bad_settings_are_one_line_user_errors(params, needle):
    with pytest.raises(RobustclipError, match=needle):
        regularizers.make("clip-adversarial", **params)


def test_cli_trains_the_hybrid_and_records_both_settings(tmp_path, data_dir):
    out = tmp_path / "hyb.safetensors"
    rc, _, se = _main(["train", "--reg", "clip-adversarial", "--clip", "pairs=4", "--adv", "steps=1",
                       "--model", json.dumps(SMALL), "--n-train", "256", "--epochs", "1", "--quiet",
                       "--data-dir", str(data_dir), "--out", str(out)])
    assert rc == 0, se
    _, meta = checkpoints.load(out)
    t = meta["train"]
    assert t["reg"] == "clip-adversarial" and t["lam"] == 0.3  # the CLI's default λ for the hybrid
    assert t["clip"] == {"pairs": 4} and t["adversarial"] == {"steps": 1}
    assert t["regularizer"]["clip"]["pairs"] == 4 and t["regularizer"]["adversarial"]["steps"] == 1
    assert meta["history"][0]["lip_train"] > 0


def test_cli_clip_settings_need_a_clip_method(tmp_path):
    rc, _, err = _main(["train", "--reg", "weight", "--clip", "pairs=4", "--out", str(tmp_path / "m.safetensors")])
    assert_one_line_error(rc, err, "--clip applies")


def test_sweep_plans_the_hybrid_with_both_tables():
    runs = planning.plan({"dataset": "mnist", "seeds": [0], "method": [
        {"reg": "clip-adversarial", "lam": [0.3], "clip": {"pairs": 8}, "adversarial": {"steps": 1}}]})
    (r,) = runs
    assert r.id == "mnist-clip-adversarial-lam0.3-s0" and r.meta["method"] == "clip-adversarial"
    assert r.train["clip"] == {"pairs": 8} and r.train["adversarial"] == {"steps": 1}
    with pytest.raises(SuiteError, match="margin"):
        planning.plan({"dataset": "mnist", "method": [{"reg": "clip-adversarial", "lam": [0.3],
                                                     "clip": {"margin": 1.0}}]}, where="s.toml")
