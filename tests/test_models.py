"""Model specs: build, forward shapes, JSON round trip, normalisation, invalid specs."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from robustclip.errors import RobustclipError
from robustclip.models import specs as models


def _structure(model: nn.Module) -> list[tuple[str, str, tuple]]:
    """Layer names, layer reprs and parameter shapes: what 'same structure' means."""
    layers = [(name, repr(mod)) for name, mod in model.named_children()]
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return [*layers, *shapes]


# --------------------------------------------------------------------------- fc


def test_paper_spec_is_784_200_80_10_sigmoid():
    spec = models.paper_spec()
    assert spec["arch"] == "fc"
    assert spec["sizes"] == [784, 200, 80, 10]
    assert spec["activation"] == "sigmoid"
    assert spec["output_activation"] is None

    model = models.build(spec)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(784, 200), (200, 80), (80, 10)]
    assert models.count_parameters(model) == 784 * 200 + 200 + 200 * 80 + 80 + 80 * 10 + 10
    assert models.input_shape(spec) == (1, 28, 28)
    assert models.output_size(spec) == 10


def test_paper_spec_forward_shape_and_logits_unbounded_without_output_sigmoid():
    torch.manual_seed(0)
    model = models.build(models.paper_spec())
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    assert out.shape == (5, 10)
    assert out.dtype == torch.float32
    # The last layer is linear: scaling its bias pushes the logits outside (0, 1).
    with torch.no_grad():
        model[-1].bias.fill_(5.0)
    assert (model(x) > 1.0).all()


def test_paper_spec_with_output_sigmoid():
    spec = models.paper_spec(output_sigmoid=True)
    assert spec["output_activation"] == "sigmoid"
    model = models.build(spec)
    assert isinstance(model[-1], nn.Sigmoid)
    assert isinstance(model[-2], nn.Linear) and model[-2].out_features == 10
    with torch.no_grad():
        model[-2].bias.fill_(5.0)
    out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("act,cls", [("sigmoid", nn.Sigmoid), ("relu", nn.ReLU), ("tanh", nn.Tanh)])
def test_fc_hidden_activation_choice(act, cls):
    model = models.build({"arch": "fc", "sizes": [6, 5, 4, 3], "activation": act})
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, cls, nn.Linear, cls, nn.Linear]
    assert model(torch.rand(2, 6)).shape == (2, 3)


def test_fc_two_sizes_is_a_single_linear_layer():
    model = models.build({"arch": "fc", "sizes": [3, 2]})
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear]
    assert model(torch.rand(7, 3)).shape == (7, 2)
    assert models.input_shape(model.spec) == (3,)


# --------------------------------------------------------------------------- cnn / mlp1d


def test_cnn_forward_shape_default_and_custom_classes():
    model = models.build({"arch": "cnn"})
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(1, 16, (2, 2)), (16, 32, (2, 2))]
    hidden = [m for m in model if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in hidden] == [(32 * 7 * 7, 100), (100, 10)]
    assert all(isinstance(m, nn.ReLU) for m in model if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Flatten)))

    model7 = models.build({"arch": "cnn", "num_classes": 7, "activation": "tanh"})
    assert model7(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert any(isinstance(m, nn.Tanh) for m in model7)
    assert models.output_size(model7.spec) == 7
    assert models.input_shape(model7.spec) == (1, 28, 28)


def test_mlp1d_defaults():
    model = models.build({"arch": "mlp1d"})
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(1, 64), (64, 64), (64, 1)]
    assert model(torch.rand(11, 1)).shape == (11, 1)
    assert models.input_shape(model.spec) == (1,)
    assert models.output_size(model.spec) == 1


def test_mlp1d_overrides():
    model = models.build({"arch": "mlp1d", "sizes": [1, 8, 1], "activation": "relu"})
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert model(torch.rand(4, 1)).shape == (4, 1)


def test_default_specs():
    assert models.default_spec("fc", "mnist") == models.paper_spec()
    assert models.default_spec("cnn", "fashion-mnist")["arch"] == "cnn"
    assert models.default_spec("mlp1d", "regression")["arch"] == "mlp1d"
    with pytest.raises(RobustclipError):
        models.default_spec("cnn", "regression")
    with pytest.raises(RobustclipError):
        models.default_spec("mlp1d", "mnist")


# --------------------------------------------------------------------------- spec round trip


ROUND_TRIP_SPECS = [
    models.paper_spec(),
    models.paper_spec(output_sigmoid=True),
    {"arch": "fc", "sizes": [784, 50, 10], "activation": "relu", "mean": 0.1307, "std": 0.3081},
    {"arch": "cnn", "num_classes": 10},
    {"arch": "cnn", "num_classes": 5, "activation": "tanh", "mean": 0.2860, "std": 0.3530},
    {"arch": "mlp1d"},
    {"arch": "mlp1d", "sizes": [1, 16, 16, 1], "activation": "tanh"},
]


@pytest.mark.parametrize("spec", ROUND_TRIP_SPECS, ids=lambda s: json.dumps(s, sort_keys=True))
def test_spec_json_round_trip_gives_identical_structure(spec):
    model = models.build(spec)
    text = json.dumps(model.spec)  # must not raise: specs are plain JSON
    again = json.loads(text)
    assert again == spec
    rebuilt = models.build(again)
    assert rebuilt.spec == model.spec
    assert _structure(rebuilt) == _structure(model)
    # Same weights give the same function.
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(3, *models.input_shape(spec))
    assert torch.equal(rebuilt(x), model(x))


def test_model_spec_is_a_private_copy():
    spec = {"arch": "fc", "sizes": [4, 3, 2], "activation": "relu"}
    original = copy.deepcopy(spec)
    model = models.build(spec)
    assert model.spec == original
    spec["sizes"].append(99)
    spec["activation"] = "tanh"
    assert model.spec == original


def test_build_does_not_mutate_the_spec():
    spec = {"arch": "mlp1d"}
    models.build(spec)
    assert spec == {"arch": "mlp1d"}


# --------------------------------------------------------------------------- normalisation


def test_no_normalize_layer_without_mean_std():
    for spec in ROUND_TRIP_SPECS:
        if "mean" not in spec and "std" not in spec:
            assert not any(isinstance(m, models.Normalize) for m in models.build(spec).modules())


def test_fc_normalize_layer_inside_model():
    spec = {"arch": "fc", "sizes": [784, 20, 10], "mean": 0.1307, "std": 0.3081}
    torch.manual_seed(1)
    model = models.build(spec)
    assert isinstance(model[0], nn.Flatten)
    assert isinstance(model[1], models.Normalize)
    assert model[1].mean == pytest.approx(0.1307) and model[1].std == pytest.approx(0.3081)
    assert sum(isinstance(m, models.Normalize) for m in model.modules()) == 1
    # Normalisation has no parameters: the state dict equals the plain model's.
    plain = models.build({"arch": "fc", "sizes": [784, 20, 10]})
    assert [tuple(t.shape) for t in model.state_dict().values()] == [
        tuple(t.shape) for t in plain.state_dict().values()
    ]
    plain_layers = nn.Sequential(*[m for m in model if not isinstance(m, models.Normalize)])
    x = torch.rand(6, 1, 28, 28)
    expected = plain_layers((x - 0.1307) / 0.3081)
    torch.testing.assert_close(model(x), expected)


def test_cnn_normalize_is_first_layer():
    spec = {"arch": "cnn", "mean": 0.5, "std": 0.25}
    model = models.build(spec)
    assert isinstance(model[0], models.Normalize)
    x = torch.rand(2, 1, 28, 28)
    rest = nn.Sequential(*list(model)[1:])
    torch.testing.assert_close(model(x), rest((x - 0.5) / 0.25))


def test_normalize_with_only_mean_or_only_std():
    m_mean = models.build({"arch": "fc", "sizes": [3, 2], "mean": 0.5})
    norm = [m for m in m_mean if isinstance(m, models.Normalize)]
    assert len(norm) == 1 and norm[0].mean == 0.5 and norm[0].std == 1.0
    m_std = models.build({"arch": "fc", "sizes": [3, 2], "std": 2.0})
    norm = [m for m in m_std if isinstance(m, models.Normalize)]
    assert len(norm) == 1 and norm[0].mean == 0.0 and norm[0].std == 2.0


def test_normalize_module_values():
    layer = models.Normalize(0.25, 0.5)
    x = torch.tensor([[0.0, 0.25, 1.0]])
    assert torch.equal(layer(x), torch.tensor([[-0.5, 0.0, 1.5]]))
    assert "mean=0.25" in repr(layer) and "std=0.5" in repr(layer)


# --------------------------------------------------------------------------- invalid specs


INVALID_SPECS = {
    "not a dict": ["fc", 784],
    "no arch": {"sizes": [784, 10]},
    "unknown arch": {"arch": "resnet"},
    "fc without sizes": {"arch": "fc"},
    "fc sizes one entry": {"arch": "fc", "sizes": [784]},
    "fc sizes empty": {"arch": "fc", "sizes": []},
    "fc size zero": {"arch": "fc", "sizes": [784, 0, 10]},
    "fc size negative": {"arch": "fc", "sizes": [784, -5, 10]},
    "fc size float": {"arch": "fc", "sizes": [784, 2.5, 10]},
    "fc sizes string": {"arch": "fc", "sizes": "784,10"},
    "mlp1d size zero": {"arch": "mlp1d", "sizes": [1, 0, 1]},
    "fc unknown activation": {"arch": "fc", "sizes": [4, 3, 2], "activation": "swish"},
    "fc unknown output activation": {"arch": "fc", "sizes": [4, 2], "output_activation": "softmax"},
    "cnn unknown activation": {"arch": "cnn", "activation": "gelu"},
    "mlp1d unknown activation": {"arch": "mlp1d", "activation": "elu"},
    "std zero": {"arch": "fc", "sizes": [4, 2], "mean": 0.1, "std": 0.0},
    "std negative": {"arch": "fc", "sizes": [4, 2], "mean": 0.1, "std": -0.3},
    "cnn std negative": {"arch": "cnn", "std": -1.0},
}


@pytest.mark.parametrize("name", list(INVALID_SPECS))
def test_invalid_spec_raises_robustclip_error(name):
    with pytest.raises(RobustclipError) as info:
        models.build(INVALID_SPECS[name])
    assert info.value.problem  # the message names the problem
    assert "\n" not in str(info.value)


def test_normalize_rejects_non_positive_std_directly():
    for std in (0.0, -1.0):
        with pytest.raises(RobustclipError, match="std"):
            models.Normalize(0.0, std)


# Specs the builder should refuse but does not (package bugs; see the report).
BUGGY_INVALID_SPECS = {
    # models.py _cnn: num_classes is never validated; 0 builds a model with no outputs.
    "cnn num_classes zero": {"arch": "cnn", "num_classes": 0},
    # ... and a negative count escapes as torch's RuntimeError.
    "cnn num_classes negative": {"arch": "cnn", "num_classes": -3},
    # ... and a non-number escapes as ValueError from int().
    "cnn num_classes string": {"arch": "cnn", "num_classes": "ten"},
    # models.py _fc: activation=None puts None into nn.Sequential; forward then
    # fails with "TypeError: 'NoneType' object is not callable".
    "fc hidden activation None": {"arch": "fc", "sizes": [4, 3, 2], "activation": None},
    # models.py Normalize: std=None with a mean reaches `None <= 0` -> TypeError.
    "std None": {"arch": "fc", "sizes": [4, 2], "mean": 0.1, "std": None},
    # models.py Normalize: NaN is not positive, but `nan <= 0` is False, so it is accepted.
    "std NaN": {"arch": "fc", "sizes": [4, 2], "mean": 0.1, "std": math.nan},
}


@pytest.mark.parametrize("name", list(BUGGY_INVALID_SPECS))
def test_invalid_spec_bugs_raise_robustclip_error(name):
    with pytest.raises(RobustclipError):
        models.build(BUGGY_INVALID_SPECS[name])
