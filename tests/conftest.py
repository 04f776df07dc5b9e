"""Shared fixtures. The data folder comes from ROBUSTCLIP_DATA, else ../shared/data.

No test skips for want of data: if the folder is missing, data tests fail with
the toolkit's own error, which names the fix.
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
    from robustclip import data

    return data.load("mnist", "test", data_dir=data_dir)


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    from robustclip import data

    return data.load("mnist", "train", data_dir=data_dir)
