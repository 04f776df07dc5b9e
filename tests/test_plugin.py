"""The pytest plugin, run in pytester sessions: fresh tensors per test, a skip (no download) without data,
and assertion helpers that keep their own frames out of the traceback."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_each_test_gets_fresh_tensors(pytester: pytest.Pytester, data_dir) -> None:
    pytester.makepyfile("""
        def test_vandal(robustclip_eval_set):
            x, y = robustclip_eval_set
            x.mul_(0)
            y.fill_(3)

        def test_sees_them_intact(robustclip_eval_set):
            x, y = robustclip_eval_set
            assert float(x.max()) == 1.0 and y[:3].tolist() == [7, 2, 1]
            assert x.shape == (32, 1, 28, 28)

        def test_and_so_does_the_loader():
            from robustclip.data import datasets as data
            assert float(data.load("mnist", "test").x[:32].max()) == 1.0
    """)
    res = pytester.runpytest("-p", "no:cacheprovider", f"--robustclip-data-dir={data_dir}", "--robustclip-n=32")
    res.assert_outcomes(passed=3)


def test_missing_data_skips_with_a_reason_and_downloads_nothing(pytester: pytest.Pytester, tmp_path,
                                                                 monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(cache))
    monkeypatch.delenv("ROBUSTCLIP_NO_DOWNLOAD", raising=False)  # only the plugin's own rule stops the download
    monkeypatch.delenv("ROBUSTCLIP_DOWNLOAD", raising=False)
    pytester.makepyfile("""
        def test_needs_data(robustclip_eval_set):
            raise AssertionError("must not run")
    """)
    res = pytester.runpytest("-p", "no:cacheprovider", "-rs", f"--robustclip-data-dir={empty}")
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines(["*SKIPPED*MNIST test data not found*--robustclip-data-dir*ROBUSTCLIP_DATA*"
                              "--robustclip-download*"])
    assert not cache.exists()  # no download was attempted


def test_default_suite_is_ci_quick_by_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_suite(robustclip_suite):
            from robustclip.attacks.suites import load_suite
            assert robustclip_suite == "ci-quick"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_helpers_hide_their_frames(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import torch
        from torch import nn
        from robustclip.testing import assert_lipschitz_below

        def test_too_steep():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
            with torch.no_grad():
                model[1].weight.mul_(100)
            assert_lipschitz_below(model, torch.rand(8, 1, 2, 2), 0.5)
    """)
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "assert_lipschitz_below(model, torch.rand(8, 1, 2, 2), 0.5)" in out and "EXCEEDS" in out
    assert "rep = lipschitz.estimate" not in out  # the helper's own lines are hidden
