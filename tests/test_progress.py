"""Progress bars off without a terminal or with TQDM_DISABLE; output that survives a cp1252 console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustclip.core import progress

ROOT = Path(__file__).resolve().parent.parent


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty, env, enabled, drawn", [
    (False, None, True, False),   # piped into a CI log: no \r frames
    (True, None, True, True),
    (True, "1", True, False),     # TQDM_DISABLE honoured
    (True, "0", True, True),      # ... and "0" means not disabled
    (True, None, False, False),   # the caller's switch
])
def test_bar_draws_only_on_a_terminal_and_honours_tqdm_disable(monkeypatch, tty, env, enabled, drawn):
    err = FakeTTY() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert progress.enabled_here(enabled) is drawn
    b = progress.bar(range(5), enabled=enabled, desc="x", file=err, mininterval=0)
    assert list(b) == list(range(5))
    b.close()
    assert ("\r" in err.getvalue()) is drawn


def test_explicit_disable_wins(monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress.bar(range(2), disable=True).disable


def test_train_survives_a_cp1252_console(tmp_path):
    """λ in the epoch line used to crash train under cp1252 after epoch 1, leaving no checkpoint."""
    out = tmp_path / "r.safetensors"
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONPATH": str(ROOT)}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run([sys.executable, "-m", "robustclip", "train", "--dataset", "regression", "--reg", "clip",
                           "--lam", "0.01", "--epochs", "3", "--out", str(out)],
                          env=env, capture_output=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode("cp1252", "replace")
    assert out.is_file()
    assert b"\\u03bb" in proc.stdout  # the λ came out escaped, not as a crash
