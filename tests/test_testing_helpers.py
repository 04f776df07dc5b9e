"""robustclip.testing: assert_robust, assert_lipschitz_below and the pytest fixture."""

from __future__ import annotations

import pytest

from robustclip.testing import assert_lipschitz_below, assert_robust
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import train


@pytest.fixture(scope="module")
def small_model(data_dir):
    return train(TrainConfig(dataset="mnist", epochs=1, n_train=2000, optimizer="adam", lr=0.002, lip_probe_pairs=0),
                 data_dir=str(data_dir), progress=False).model


def test_fixture_gives_seeded_small_set(robustclip_eval_set):
    x, y = robustclip_eval_set
    assert x.shape == (256, 1, 28, 28) and y.shape == (256,) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y[:3].tolist() == [7, 2, 1]  # the first MNIST test labels


def test_assert_robust_passes_and_fails_with_a_table(small_model, robustclip_eval_set):
    x, y = robustclip_eval_set
    res = assert_robust(small_model, (x[:128], y[:128]), suite="ci-quick", min_accuracy={"clean": 0.3})
    assert res.accuracy("clean") >= 0.3
    with pytest.raises(AssertionError) as info:
        assert_robust(small_model, (x[:128], y[:128]), suite="ci-quick",
                      min_accuracy={"clean": 0.3, "worst_case@L2:2": 0.99})
    msg = str(info.value)
    assert "worst_case@L2:2" in msg and "TOO LOW" in msg and "clean" in msg
    with pytest.raises(AssertionError, match="no result named"):
        assert_robust(small_model, (x[:64], y[:64]), suite="ci-quick", min_accuracy={"pgd@L2:7": 0.1})


def test_assert_lipschitz_below(small_model, robustclip_eval_set):
    x, _ = robustclip_eval_set
    bounds = assert_lipschitz_below(small_model, x[:64], 1e6, certify=True)
    assert bounds["lower"] <= bounds["upper"] < 1e6
    with pytest.raises(AssertionError, match="EXCEEDS"):
        assert_lipschitz_below(small_model, x[:64], bounds["lower"] / 2)
    assert bounds["upper"] > bounds["lower"] * 1.01  # a sigmoid net: the bounds are not tight
    mid = (bounds["lower"] + bounds["upper"]) / 2
    assert assert_lipschitz_below(small_model, x[:64], mid) == bounds  # the lower bound does not disprove it
    with pytest.raises(AssertionError, match="upper bound"):
        assert_lipschitz_below(small_model, x[:64], mid, certify=True)  # but it is not certified either
