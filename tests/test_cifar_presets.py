"""The CIFAR model presets (a small CNN and a ResNet-8) build from specs, carry CIFAR normalisation inside, have
finite sound Lipschitz upper bounds, and work with ``train`` (every regulariser), ``evaluate``, ``check`` and
sweeps. Runs on synthetic CIFAR-shaped data (the real loader is not needed): ``data.load('cifar10')`` is replaced
by coloured noise whose colour depends on the class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny import run_cli, suite_toml

from robustclip.bounds import lower, upper
from robustclip.data import datasets as data
from robustclip.errors import RobustclipError
from robustclip.evaluation import pipeline
from robustclip.models import cifar as cifar_models
from robustclip.models import specs as models
from robustclip.sweeps import driver
from robustclip.training.config import TrainConfig
from robustclip.training.regularizers import registry as regularizers

SMALL = {"cifar_cnn": {"arch": "cifar_cnn", "width": 4}, "resnet8": {"arch": "resnet8", "width": 4}}
SUITE = suite_toml("tiny-cifar", n=16, eps=(0.1,), steps=2)


@pytest.fixture(autouse=True)
def _one_thread():
    from tiny import one_thread

    with one_thread():
        yield


def synthetic(split: str, n: int | None = None) -> data.Split:
    """``(N, 3, 32, 32)`` in [0,1]: half a class colour, half uniform noise; 10 classes."""
    n = n or (300 if split == "train" else 64)
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    y = torch.randint(0, 10, (n,), generator=g)
    colours = torch.rand(10, 3, generator=torch.Generator().manual_seed(5))
    x = (0.5 * colours[y].view(n, 3, 1, 1) + 0.5 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return data.Split(x, y, "cifar10", split, "synthetic")


@pytest.fixture
def cifar(monkeypatch):
    """``cifar10`` served from :func:`synthetic` (whatever the real loader does)."""
    real = data.load

    def load(name, split="train", **kw):
        return synthetic(split) if name == "cifar10" else real(name, split, **kw)

    monkeypatch.setattr(data, "load", load)
    assert data.REGISTRY["cifar10"].classes == 10  # registered: the command line and the checks know it


@pytest.mark.parametrize("arch", ["cifar_cnn", "resnet8"])
def test_presets_build_with_normalisation_inside_and_finite_bounds(arch):
    torch.manual_seed(0)
    spec = models.default_spec(arch, "cifar10")
    net = models.build(spec).eval()
    assert models.input_shape(spec) == (3, 32, 32) and models.output_size(spec) == 10
    assert models.default_spec(arch, "cifar100")["num_classes"] == 100
    first = net[0] if isinstance(net, torch.nn.Sequential) else net.normalize
    assert isinstance(first, cifar_models.ChannelNormalize)
    mean = torch.tensor(cifar_models.CIFAR_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert first(mean).abs().max() < 1e-6  # the CIFAR mean image normalises to zero
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    ups, reason = upper.upper_bounds(net, (3, 32, 32))
    assert reason is None and math.isfinite(ups[0].value)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert lower.lower_bound_quotient(net, x, pairs=4, steps=5) <= ups[0].value
    assert "mean" not in net.state_dict() and not any("normalize" in k for k in net.state_dict())


def test_specs_are_validated_before_anything_is_allocated():
    for bad, words in [({"arch": "resnet8", "width": 0}, "width"), ({"arch": "cifar_cnn", "num_classes": 1.5},
                                                                      "num_classes"),
                       ({"arch": "cifar_cnn", "width": 256}, "parameters"),
                       ({"arch": "resnet8", "mean": [0.5], "std": [0.0]}, "std")]:
        with pytest.raises(RobustclipError, match=words):
            models.build(bad)


@pytest.mark.parametrize(("arch", "reg"), [("resnet8", reg) for reg in regularizers.REGISTRY]
                         + [("cifar_cnn", "clip"), ("cifar_cnn", "trades")])
def test_every_regulariser_trains_the_presets(cifar, reg, arch, tmp_path):
    lam = 0.0 if not regularizers.REGISTRY[reg].takes_lam else 0.1
    cfg = TrainConfig(dataset="cifar10", model=SMALL[arch], reg=reg, lam=lam, epochs=1, n_train=32, batch_size=32,
                      optimizer="adam", lr=0.003, lip_probe_pairs=2, clip={"pairs": 4, "ascent_steps": 1},
                      adversarial={"steps": 1} if "adversarial" in regularizers.REGISTRY[reg].fields else {})
    if "margin" in regularizers.REGISTRY[reg].fields:  # certified training bounds nn.Sequential chains only
        with pytest.raises(RobustclipError, match="lipschitz-margin cannot bound this model.*ResNet8"):
            pipeline.train_to_checkpoint(cfg, tmp_path / "m.safetensors", progress=False)
        assert not (tmp_path / "m.safetensors").exists()
        return
    res = pipeline.train_to_checkpoint(cfg, tmp_path / "m.safetensors", progress=False)
    assert res is not None and (tmp_path / "m.safetensors").exists()
    net, meta = pipeline.loading.load_model(tmp_path / "m.safetensors")
    assert meta.dataset == "cifar10" and meta.model["arch"] == arch
    up = upper.upper_bound(net, (3, 32, 32))
    x = synthetic("test", 16).x
    assert math.isfinite(up) and up >= lower.lower_bound_quotient(net, x, pairs=8, steps=10)


@pytest.fixture
def trained(cifar, tmp_path) -> dict[str, Path]:
    out = {}
    for arch, spec in SMALL.items():
        cfg = TrainConfig(dataset="cifar10", model=spec, reg="clip", lam=0.1, epochs=1, n_train=100, batch_size=50,
                          optimizer="adam", lr=0.003, lip_probe_pairs=0, clip={"pairs": 4})
        pipeline.train_to_checkpoint(cfg, tmp_path / f"{arch}.safetensors", progress=False)
        out[arch] = tmp_path / f"{arch}.safetensors"
    (tmp_path / "tiny.toml").write_text(SUITE, encoding="utf-8")
    return out


def test_evaluate_and_check_the_presets(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arch, path in trained.items():
        ev = pipeline.evaluate_checkpoint(path, suite="tiny.toml", progress=False, lipschitz="off")
        assert ev.lipschitz.upper is not None and math.isfinite(ev.lipschitz.upper)
        common = [path, "--suite", "tiny.toml", "--baseline", f"b-{arch}.json", "--lipschitz", "off", "--quiet"]
        code, out, err = run_cli(["check", *common, "--update-baseline"])
        assert code == 0, out + err
        code, out, err = run_cli(["check", *common])
        assert code == 0, out + err
    path = trained["cifar_cnn"]  # the full Lipschitz estimate (what evaluate runs) costs a minute: one model
    code, out, err = run_cli(["evaluate", path, "--suite", "tiny.toml", "--out", "ev", "--quiet"])
    assert code == 0, out + err
    lip = json.loads(Path("ev/lipschitz.json").read_text())[0]
    assert lip["upper_method"] == "graph_product" and 0 < lip["lower"] <= lip["upper"] < math.inf


@pytest.mark.data
def test_a_sweep_trains_and_evaluates_a_preset(tmp_path, data_dir):
    """A sweep on real data (MNIST: the tests carry no CIFAR files): a one-channel preset at 28×28 runs there with
    every piece of the CIFAR one (a ResNet-8 costs twice the time here; both train above)."""
    (tmp_path / "tiny.toml").write_text(SUITE, encoding="utf-8")
    spec = {"arch": "cifar_cnn", "width": 4, "image_size": 28, "mean": [0.1307], "std": [0.3081]}
    assert models.input_shape(spec) == (1, 28, 28)
    raw = {"name": "preset", "dataset": "mnist", "epochs": 1, "n_train": 64, "n_test": 16, "n_val": 16,
           "model": spec, "suite": str(tmp_path / "tiny.toml"), "seeds": [0],
           "method": [{"reg": "clip", "lam": [0.1]}]}
    table = driver.run_sweep(raw, tmp_path / "out", data_dir=str(data_dir), progress=False)
    assert len(set(table.run)) == 1
    runs = list((tmp_path / "out" / "runs").glob("*/eval.json"))
    assert len(runs) == 1
    for f in runs:
        text = f.read_text()
        assert '"upper": null' not in text
