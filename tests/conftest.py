"""Shared fixtures. The data folder comes from ROBUSTCLIP_DATA, else ../shared/data.

No test skips for want of data: if the folder is missing, data tests fail with
the toolkit's own error, which names the fix.

Two tiers: every test that reads MNIST or Fashion-MNIST carries the ``data`` marker (set here for tests that use a
data fixture, and by ``pytestmark`` or a decorator for tests that reach the data another way). The fast tier,
``python -m pytest -m "not data"``, runs on synthetic data and needs no dataset; the full tier is all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("ROBUSTCLIP_DATA") or ROOT.parent / "shared" / "data").resolve()


def pytest_configure(config):
    """Before any fixture: tests see only DATA_DIR, never download, and use a private cache."""
    import tempfile

    os.environ["ROBUSTCLIP_DATA"] = str(DATA_DIR)
    os.environ["ROBUSTCLIP_NO_DOWNLOAD"] = "1"
    os.environ["ROBUSTCLIP_CACHE"] = tempfile.mkdtemp(prefix="robustclip-cache-")
    torch.set_num_threads(min(2, torch.get_num_threads()))


DATA_FIXTURES = {"data_dir", "mnist_test", "mnist_train", "robustclip_eval_set", "robustclip_data_dir"}


def pytest_collection_modifyitems(config, items):
    """Mark every test whose fixtures (direct or indirect) read the datasets as ``data``."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """Undo any test's changes to the data settings."""
    for key in ("ROBUSTCLIP_DATA", "ROBUSTCLIP_NO_DOWNLOAD", "ROBUSTCLIP_CACHE"):
        monkeypatch.setenv(key, os.environ[key])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    from robustclip.data import datasets as data

    return data.load("mnist", "test", data_dir=data_dir)


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    from robustclip.data import datasets as data

    return data.load("mnist", "train", data_dir=data_dir)
