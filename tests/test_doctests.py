"""The examples in the docstrings run and give what they show.

They run as pytest's own doctest items (``--doctest-modules`` over the package, set in pyproject.toml), so the
README's ``python -m pytest -q`` runs every module's examples and no list of modules is kept by hand; these tests
check that setting, and that every ``>>>`` in the package is an example doctest actually finds.
"""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "robustclip"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


WITH_EXAMPLES = sorted(_module_name(p) for p in PKG.rglob("*.py") if ">>> " in p.read_text(encoding="utf-8"))


def test_the_readme_command_collects_the_package_doctests():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in ini["addopts"].split()
    assert {"tests", "robustclip"} <= set(ini["testpaths"])
    assert {"ELLIPSIS", "NORMALIZE_WHITESPACE"} <= set(ini["doctest_optionflags"])


def test_the_modules_with_examples_include_the_ones_once_listed_by_hand():
    assert {"robustclip.core.results", "robustclip.training.regularizers.registry", "robustclip.evaluation.pipeline",
            "robustclip.stats", "robustclip.bounds.budget", "robustclip.core.validate"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_every_example_in_the_package_is_one_doctest_finds(name):
    module = importlib.import_module(name)
    found = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert found > 0, f"{name} has a '>>> ' that is no docstring example: it would never run"
