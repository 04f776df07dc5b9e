"""pytest plugin (auto-registered): small evaluation sets as fixtures, fresh for every test.

``robustclip_eval_set`` gives the first n (``--robustclip-n``, default 256) MNIST test images ``(n,1,28,28)``
float32 in [0,1] and their int64 labels ``(n,)``. The data is found through ``--robustclip-data-dir D`` or the
``ROBUSTCLIP_DATA`` environment variable (then the cache and Debian's folder). When it is nowhere, the tests
that ask for it are skipped with a reason that says how to point at it: nothing is downloaded inside a test
unless asked with ``--robustclip-download``, the ini option ``robustclip_download = true`` or
``ROBUSTCLIP_DOWNLOAD=1``.

Each test gets its own copy of the tensors (function scope): a test that writes into them (``x.mul_(0)``)
cannot change what the next test sees. ``robustclip_suite`` names the attack suite for ``assert_robust``
(``--robustclip-suite``, default ``ci-quick``).
"""

from __future__ import annotations

import os

import pytest
import torch

_TRUE = ("1", "true", "yes", "on")
DEFAULT_SUITE = "ci-quick"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustclip")
    group.addoption("--robustclip-data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    group.addoption("--robustclip-n", type=int, default=256, help="samples in robustclip_eval_set (default 256)")
    group.addoption("--robustclip-download", action="store_true", default=False,
                    help="allow downloading MNIST from the official mirrors when it is not found (default: skip)")
    group.addoption("--robustclip-suite", default=None, help=f"suite for robustclip_suite (default {DEFAULT_SUITE})")
    parser.addini("robustclip_download", type="bool", default=False,
                  help="allow robustclip's fixtures to download MNIST when it is not found")


def download_allowed(config: pytest.Config) -> bool:
    """True when the run asked for downloads: ``--robustclip-download``, ini ``robustclip_download`` or
    ``ROBUSTCLIP_DOWNLOAD=1``."""
    __tracebackhide__ = True
    return bool(config.getoption("--robustclip-download") or config.getini("robustclip_download")
                or os.environ.get("ROBUSTCLIP_DOWNLOAD", "").strip().lower() in _TRUE)


@pytest.fixture(scope="session")
def robustclip_data_dir(request: pytest.FixtureRequest) -> str | None:
    """The data folder from --robustclip-data-dir or ROBUSTCLIP_DATA (None: default search)."""
    return request.config.getoption("--robustclip-data-dir") or os.environ.get("ROBUSTCLIP_DATA")


@pytest.fixture(scope="session")
def robustclip_suite(request: pytest.FixtureRequest) -> str:
    """The attack suite's name (or path) for ``assert_robust``: ``--robustclip-suite``, default ``ci-quick``."""
    return str(request.config.getoption("--robustclip-suite") or DEFAULT_SUITE)


@pytest.fixture(scope="session")
def _robustclip_eval_master(request: pytest.FixtureRequest,
                            robustclip_data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loaded once per session, never handed out: tests get clones. Skips when the data is missing."""
    __tracebackhide__ = True
    from robustclip.data import datasets as data
    from robustclip.errors import DataError

    n = request.config.getoption("--robustclip-n")
    try:
        split = data.load("mnist", "test", data_dir=robustclip_data_dir,
                          download=True if download_allowed(request.config) else False)
    except DataError as exc:
        pytest.skip(f"robustclip: MNIST test data not found ({exc.problem}); point at it with "
                    "--robustclip-data-dir D or ROBUSTCLIP_DATA=D (D/mnist/ holding the four IDX files), "
                    "or allow a download with --robustclip-download")
    split = split.subset(n)
    return split.x.clone(), split.y.clone()  # our own copy, not a view of the loader's process-wide cache


@pytest.fixture
def robustclip_eval_set(_robustclip_eval_master: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """``(x, y)``: the first n MNIST test samples, x ``(n,1,28,28)`` float32 in [0,1], y int64 ``(n,)``.

    A fresh copy for every test: writing into it changes nothing for other tests.
    """
    x, y = _robustclip_eval_master
    return x.clone(), y.clone()
