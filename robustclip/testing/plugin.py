"""pytest plugin (auto-registered): seeded, small evaluation sets as fixtures.

``robustclip_eval_set`` gives the first 256 MNIST test images ``(256,1,28,28)``
in [0,1] and their labels, found through ``--robustclip-data-dir`` or the
``ROBUSTCLIP_DATA`` environment variable (then the usual search order).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustclip")
    group.addoption("--robustclip-data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    group.addoption("--robustclip-n", type=int, default=256, help="samples in robustclip_eval_set (default 256)")


@pytest.fixture(scope="session")
def robustclip_data_dir(request: pytest.FixtureRequest) -> str | None:
    """The data folder from --robustclip-data-dir or ROBUSTCLIP_DATA (None: default search)."""
    return request.config.getoption("--robustclip-data-dir") or os.environ.get("ROBUSTCLIP_DATA")


@pytest.fixture(scope="session")
def robustclip_eval_set(request: pytest.FixtureRequest, robustclip_data_dir):
    """``(x, y)``: the first n MNIST test samples, x ``(n,1,28,28)`` in [0,1], y int64 ``(n,)``."""
    from robustclip import data

    n = request.config.getoption("--robustclip-n")
    split = data.load("mnist", "test", data_dir=robustclip_data_dir).subset(n)
    return split.x, split.y
