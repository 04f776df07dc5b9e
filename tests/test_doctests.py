"""The examples in the public docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["robustclip.core.results", "robustclip.training.regularizers.registry", "robustclip.evaluation.pipeline",
           "robustclip.stats", "robustclip.reports.labels"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctests: the test could not fail"
    assert result.failed == 0
