"""The trainer: config validation, reproducibility, the regularisers' effect, λ schedule,
checkpoints of a real run and a clean Ctrl-C.

Runs are short (a few hundred MNIST training samples, a small net, 1-3 epochs)
except one run of the paper's net on 2,000 samples for the checkpoint test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustclip.bounds import lower
from robustclip.checkpoints import format as checkpoints
from robustclip.core.devices import resolve_device
from robustclip.errors import RobustclipError
from robustclip.training import trainer as training
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import train

SMALL = {"arch": "fc", "sizes": [784, 32, 10], "activation": "sigmoid"}
SMALL_RELU = {"arch": "fc", "sizes": [784, 32, 10], "activation": "relu"}


def _run(data_dir, on_epoch=None, **kw) -> training.TrainResult:
    kw.setdefault("model", SMALL)
    kw.setdefault("n_train", 500)
    kw.setdefault("epochs", 2)
    return train(TrainConfig(dataset="mnist", **kw), data_dir=str(data_dir), progress=False, on_epoch=on_epoch)


def _weight_sq_norm(model: nn.Module) -> float:
    return sum(float(m.weight.detach().double().square().sum()) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)))


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kw", [
    pytest.param({"dataset": "imagenet"}, id="unknown-dataset"),
    pytest.param({"reg": "lasso"}, id="unknown-reg"),
    pytest.param({"reg": "clip", "lam": -0.1}, id="negative-lam-clip"),
    pytest.param({"reg": "weight", "lam": -1e-6}, id="negative-lam-weight"),
    pytest.param({"reg": "none", "lam": -0.1}, id="negative-lam-none"),
    pytest.param({"reg": "clip", "lam": math.nan}, id="nan-lam"),
    pytest.param({"reg": "clip", "lam": 0.1, "target_acc": 0.0}, id="tau-0"),
    pytest.param({"reg": "clip", "lam": 0.1, "target_acc": 1.5}, id="tau-1.5"),
    pytest.param({"reg": "clip", "lam": 0.1, "target_acc": -0.1}, id="tau-neg"),
    pytest.param({"dataset": "regression", "reg": "clip", "lam": 0.1, "target_acc": 0.9}, id="regression-tau"),
    pytest.param({"reg": "none", "lam": 0.1}, id="none-with-lam"),
    pytest.param({"reg": "none", "target_acc": 0.9}, id="none-with-tau"),
    pytest.param({"optimizer": "rmsprop"}, id="unknown-optimizer"),
    pytest.param({"epochs": 0}, id="zero-epochs"),
    pytest.param({"batch_size": 0}, id="zero-batch"),
    pytest.param({"lr": 0.0}, id="zero-lr"),
    pytest.param({"n_train": 0}, id="zero-n-train"),
    pytest.param({"reg": "clip", "lam": 0.1, "clip": {"pairs": 0}}, id="clip-pairs-0"),
    pytest.param({"reg": "clip", "lam": 0.1, "clip": {"bogus": 1}}, id="clip-unknown-field"),
    pytest.param({"reg": "clip", "lam": 0.1, "lam_every": 0}, id="lam-every-0"),
    pytest.param({"reg": "clip", "lam": 0.1, "warmup": -1}, id="warmup-neg"),
])
def test_validate_rejects(kw):
    cfg = TrainConfig(**kw)
    with pytest.raises(RobustclipError):
        cfg.validate()
    # train() validates before it loads data or builds anything
    with pytest.raises(RobustclipError):
        train(cfg, progress=False, data_dir="/nonexistent/robustclip-data")


def test_validate_rejects_regression_tau_via_for_dataset():
    with pytest.raises(RobustclipError):
        TrainConfig.for_dataset("regression", reg="clip", lam=0.1, target_acc=0.9).validate()


@pytest.mark.parametrize("kw", [
    {},
    {"reg": "none", "lam": 0.0},
    {"reg": "weight", "lam": 1e-3},
    {"reg": "clip", "lam": 0.1, "target_acc": 1.0},
    {"reg": "clip", "lam": 0.0, "target_acc": 0.97, "warmup": 2, "lam_every": 3},
    {"reg": "clip", "lam": 0.1, "clip": {"pairs": 4, "init": "plain", "every": 1}},
    {"dataset": "fashion-mnist", "reg": "clip", "lam": 0.1},
])
def test_validate_accepts(kw):
    TrainConfig(**kw).validate()


def test_for_dataset_regression_defaults():
    cfg = TrainConfig.for_dataset("regression", reg="clip", lam=0.1, epochs=None)
    cfg.validate()
    assert cfg.dataset == "regression" and cfg.optimizer == "adam" and cfg.epochs == 600
    assert cfg.clip["init"] == "noise"
    assert cfg.model_spec()["arch"] == "mlp1d"
    assert TrainConfig.for_dataset("mnist").model_spec()["sizes"] == [784, 200, 80, 10]


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("reg,lam,clip", [
    ("none", 0.0, {}),
    ("clip", 0.1, {}),
    ("clip", 0.1, {"ascent_steps": 2, "every": 1, "init": "plain", "refresh_every": 3}),
])
def test_same_seed_gives_bit_identical_weights(data_dir, reg, lam, clip):
    kw = dict(reg=reg, lam=lam, clip=clip, seed=3)
    a = _run(data_dir, **kw)
    b = _run(data_dir, **kw)
    assert _same_state(a.model, b.model)
    for ha, hb in zip(a.history, b.history, strict=True):
        for key in ("lam", "train_loss", "train_acc", "val_acc", "lip_probe", "lip_train"):
            assert ha[key] == hb[key], key
    c = _run(data_dir, **{**kw, "seed": 4})
    assert not _same_state(a.model, c.model)
    sa, sc = a.model.state_dict(), c.model.state_dict()
    assert all(not torch.equal(sa[k], sc[k]) for k in sa), "a different seed left some tensor unchanged"


def test_clip_changes_training(data_dir):
    """λ > 0 with CLIP must change the weights relative to plain training with the same seed."""
    plain = _run(data_dir, reg="none", seed=5, epochs=1)
    clip = _run(data_dir, reg="clip", lam=0.5, seed=5, epochs=1, clip={"every": 1})
    assert not _same_state(plain.model, clip.model)
    assert clip.history[0]["lip_train"] is not None and clip.history[0]["lip_train"] > 0
    assert plain.history[0]["lip_train"] is None


# --------------------------------------------------------------------------- weight decay


def test_weight_regulariser_shrinks_weights(data_dir):
    kw = dict(n_train=1000, epochs=2, seed=1, select=False)
    plain = _run(data_dir, reg="none", **kw)
    decayed = _run(data_dir, reg="weight", lam=0.05, **kw)
    n_plain, n_decayed = _weight_sq_norm(plain.model), _weight_sq_norm(decayed.model)
    assert n_decayed < 0.8 * n_plain, (n_decayed, n_plain)
    assert [h["lam"] for h in decayed.history] == [0.05, 0.05]
    assert decayed.meta["train"]["regularizer"] == {"name": "weight"}


# --------------------------------------------------------------------------- λ schedule in training


def test_discrepancy_principle_drives_lambda_in_training(data_dir):
    tau = 0.3
    res = _run(data_dir, model=SMALL_RELU, optimizer="adam", lr=3e-3, reg="clip", lam=0.05, target_acc=tau,
               lam_step=0.02, warmup=1, epochs=4, clip={"every": 1})
    lams = [h["lam"] for h in res.history]
    assert res.meta["train"]["lam_history"] == lams
    assert lams[0] == 0.0 and lams[1] == 0.05
    assert res.history[0]["lip_train"] is None  # no CLIP during warm-up
    for e in range(1, 3):
        acc = res.history[e]["train_acc"]
        expected = lams[e] + 0.02 if acc >= tau else max(0.0, lams[e] - 0.02)
        assert lams[e + 1] == pytest.approx(expected)
    final = lams[3] + 0.02 if res.history[3]["train_acc"] >= tau else max(0.0, lams[3] - 0.02)
    assert res.meta["train"]["final_lam"] == pytest.approx(final)


def test_require_target_selects_best_among_epochs_that_reached_tau(data_dir, monkeypatch):
    """``select`` with ``require_target`` keeps the best epoch among those whose training
    accuracy reached τ. An earlier epoch below τ may be the fallback while no epoch
    qualifies, but its score must not shut out the qualifying epochs that follow.
    """
    base = dict(model=SMALL_RELU, optimizer="adam", lr=3e-3, reg="clip", lam=0.0, lam_step=0.0, epochs=3, seed=0)
    ref = _run(data_dir, select=False, **base)
    accs = [h["train_acc"] for h in ref.history]
    assert accs[1] > accs[0] and accs[2] > accs[0], accs  # premise: epoch 1 trails the others
    tau = (accs[0] + min(accs[1], accs[2])) / 2
    fake_val = iter([0.9, 0.5, 0.4])
    monkeypatch.setattr(training, "score", lambda *a, **k: next(fake_val))
    res = _run(data_dir, target_acc=tau, require_target=True, **base)
    assert [h["train_acc"] for h in res.history] == accs
    assert [h["val_acc"] for h in res.history] == [0.9, 0.5, 0.4]
    # epochs 2 and 3 reached τ; of those, epoch 2 has the better validation accuracy
    assert res.meta["train"]["best_epoch"] == 2
    assert res.meta["metrics"]["val_acc"] == 0.5


# --------------------------------------------------------------------------- regression


@pytest.fixture
def one_thread():
    """The 1-D net is tiny: a second intra-op thread only adds overhead (and contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_larger_lambda_gives_smaller_lipschitz_constant_on_regression(one_thread):
    lips, losses = {}, {}
    for lam in (0.0001, 0.05, 0.5):
        # select=False: compare the fitted functions, not an early epoch picked by validation
        cfg = TrainConfig.for_dataset("regression", reg="clip", lam=lam, epochs=200, select=False,
                                      lip_probe_pairs=0)
        res = train(cfg, progress=False)
        assert res.model(torch.rand(5, 1)).shape == (5, 1)
        lips[lam] = lower.exact_1d(res.model)
        losses[lam] = res.history[-1]["train_loss"]
        assert all("val_mse" in h for h in res.history)
    # the weakly regularised net fits the noisy data and is steep
    assert losses[0.0001] < 0.1 and lips[0.0001] > 5.0
    assert lips[0.0001] > 1.5 * lips[0.05] > 1.5 * 1.5 * lips[0.5], lips
    # the price: a worse fit
    assert losses[0.0001] < losses[0.05] < losses[0.5]


# --------------------------------------------------------------------------- checkpoint of a real run


def test_mnist_clip_run_checkpoint_roundtrip(data_dir, mnist_test, tmp_path):
    cfg = TrainConfig(dataset="mnist", reg="clip", lam=0.1, epochs=2, n_train=2000, device="auto")
    res = train(cfg, data_dir=str(data_dir), progress=False)
    assert not res.interrupted
    assert len(res.history) == 2
    path = checkpoints.save(res.model, tmp_path / "clip.safetensors", res.meta)
    model, meta = checkpoints.load(path)
    assert meta["dataset"] == "mnist"
    assert meta["model"] == {"arch": "fc", "sizes": [784, 200, 80, 10], "activation": "sigmoid",
                             "output_activation": None}
    hist = meta["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    for rec, orig in zip(hist, res.history, strict=True):
        for key in ("lam", "train_acc", "val_acc", "lip_probe"):
            assert key in rec
            assert rec[key] == pytest.approx(orig[key])
        assert rec["lam"] == 0.1
        assert 0.0 <= rec["train_acc"] <= 1.0 and 0.0 <= rec["val_acc"] <= 1.0
        assert rec["lip_probe"] > 0 and math.isfinite(rec["lip_probe"])
    assert meta["train"]["lam_history"] == [0.1, 0.1]
    assert meta["train"]["method"] == "clip"
    assert meta["train"]["regularizer"]["name"] == "clip"
    assert meta["train"]["epochs_run"] == 2 and meta["train"]["interrupted"] is False
    # the device it ran on, not the "auto" it was asked for
    assert meta["train"]["device"] == str(resolve_device("auto")) in ("cpu", "cuda", "cuda:0")
    assert meta["train"]["device_requested"] == "auto"
    assert meta["data"]["n_train"] == 2000 and meta["data"]["n_val"] == 6000
    assert checkpoints.read_meta(path)["history"] == hist
    x = mnist_test.x[:128]
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    assert not model.training


# --------------------------------------------------------------------------- Ctrl-C


def test_keyboard_interrupt_returns_usable_model(data_dir):
    seen = []

    def stop_after_first(rec):
        seen.append(rec["epoch"])
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    res = _run(data_dir, reg="clip", lam=0.1, epochs=3, seed=2, on_epoch=stop_after_first)
    assert seen == [1]
    assert res.interrupted is True
    assert len(res.history) == 1
    assert res.meta["train"]["interrupted"] is True
    assert res.meta["train"]["epochs_run"] == 1
    assert res.meta["train"]["lam_history"] == [0.1]
    assert res.meta["train"]["best_epoch"] == 1
    assert not res.model.training
    # the model is the one after epoch 1: identical to a one-epoch run
    one = _run(data_dir, reg="clip", lam=0.1, epochs=1, seed=2)
    assert _same_state(res.model, one.model)
    out = res.model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- learning-rate schedule


def test_cosine_learning_rate_decays_from_lr_to_near_zero():
    from robustclip.training.trainer import learning_rate

    cfg = TrainConfig(epochs=10, lr=0.1, lr_schedule="cosine")
    rates = [learning_rate(cfg, e) for e in range(10)]
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(rates, rates[1:])) and 0 < rates[-1] < 0.01
    assert learning_rate(TrainConfig(epochs=10, lr=0.1), 7) == 0.1
    with pytest.raises(RobustclipError, match="learning-rate schedule"):
        TrainConfig(lr_schedule="step").validate()


def test_training_applies_and_records_the_cosine_schedule(data_dir):
    res = _run(data_dir, reg="none", epochs=3, lr_schedule="cosine", lr=0.01)
    assert [h["lr"] for h in res.history] == pytest.approx([0.01, 0.0075, 0.0025])
    flat = _run(data_dir, reg="none", epochs=3, lr=0.01)
    assert [h["lr"] for h in flat.history] == [0.01, 0.01, 0.01]
    assert not _same_state(res.model, flat.model)
