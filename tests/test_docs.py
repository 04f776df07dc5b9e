"""The README and the documentation site: short, current, and true to what CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_figures", ROOT / "docs" / "sync_figures.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_short_and_leads_with_your_own_model():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 10 * 1024
    first_screen = "\n".join(text.splitlines()[:50])
    assert "## Evaluate your own model" in first_screen
    assert "--model" in first_screen


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]" "torch==2.13.0"' in readme
    assert 'pip install -q -e ".[dev]" "torch==2.13.0"' in ci
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci


def test_generated_figures_are_current():
    mod = _sync_module()
    for path in mod.TARGETS:
        text = path.read_text(encoding="utf-8")
        assert mod.sync(text, path.name) == text, f"{path.name} is out of date: run python docs/sync_figures.py"


def test_a_stale_table_is_found(tmp_path):
    mod = _sync_module()
    stale = "<!-- BEGIN generated: full-test -->\n| made up | 99 |\n<!-- END generated: full-test -->\n"
    fresh = mod.sync(stale, "x.md")
    assert fresh != stale and "mnist-clip-best" in fresh
    assert mod.sync(fresh, "x.md") == fresh


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert set(nav) == pages
