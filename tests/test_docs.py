"""The README and the documentation site: short, current, and true to what CI runs."""

from __future__ import annotations

import importlib
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


# --- Every figure traces to a generated file -------------------------------------------------------------------
# Measured figures live in files that benchmarks and reports write (benchmarks/results/, reports/); the pages include
# them with snippets (--8<-- "FILE") or fill them in with docs/sync_figures.py. A page that types a measured figure
# itself fails here. What a page may state in its own words are settings, limits, thresholds and citations; each is
# allowed by name below, per page, with the reason.

SNIPPET = re.compile(r'^-{2}8<-{2} "([^"]+)"\s*$', re.M)
GENERATED = re.compile(r"<!-- BEGIN generated: ([a-z0-9-]+) -->.*?<!-- END generated: \1 -->", re.S)
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
# a number with a unit of time, memory, cost or share: "41 s", "44.8%", "2.53x", "786 MiB", "1.5 M", "4 points"
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:%|×|x\b|ms\b|s\b|sec\b|seconds?\b|min\b|minutes?\b|h\b|hours?\b"
                    r"|[KMGT]i?B\b|GMAC\b|M\b|points?\b|pp\b)")
TABLE_ROW = re.compile(r"^\|.*\|[ \t]*$", re.M)  # a decimal in a table row: a typed results table
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
ALLOWED = {
    "bad-input.md": ["above 50 M parameters",  # a limit
                     "1e20, 3.7, NaN",  # bad labels, as examples
                     "less than 64 KiB a minute",  # a download's floor, a setting
                     "`rc.benchmark(n=0)`, `n=-1`, `n=2.5`, `n=True`"],  # bad sample counts, as examples
    "bounds.md": ["`full` 30 GMAC, `fast` 5 GMAC",  # the budgets, settings
                  "its own budget (60 GMAC)"],  # the refinement's budget, a setting
    "gate.md": ["at 5% / (number of rows)", "at most 5% of the time",  # the test's level
                "(30 GMAC `full`, 5 GMAC `fast`)",  # the budgets
                "one plain line every 30 s",  # how often progress prints
                "sees a 1–2 point drop at n = 500"],  # the paired test's power, a property of the statistics
    "getting-started.md": ["more than 5% in its last epoch", "+ 10 points", "more than 0.2 points below"],  # warnings
    "own-model.md": ["at most 2 GiB"],  # a limit
    "suites.md": ["the 95% Wilson interval", "more than 1% of samples",  # an interval's level, a flag's threshold
                  # the format of a message, as an example
                  "worst case Linf ε=0.0313725 12.0% (95% Wilson interval 7.0-19.8%)",
                  "(95% interval [L, U], p = P)",  # the form of compare's sentence: the interval's level
                  "at 1280 × 900 the first screen",  # the page test's viewport, a setting
                  "with their 95% intervals"],  # an interval's level
    "sweeps.md": ["`$ROBUSTCLIP_CLAIM_TIMEOUT`, 120 s"],  # a default
    "training.md": ["at least 97% clean accuracy", "with a 95% t-interval",  # the benchmark's bar, an interval's level
                    "GloRo reports 62.8% certified"],  # a published figure (Leino et al. 2021), cited
}


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blank(m: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))  # keeps offsets and line numbers


def typed_figures(text: str, allowed: list[str]) -> list[str]:
    """The measured figures ``text`` (a Markdown page) types itself: outside generated blocks, code fences and
    snippet lines, and not inside an ``allowed`` phrase (matched across line breaks)."""
    prose = SNIPPET.sub(_blank, FENCE.sub(_blank, GENERATED.sub(_blank, text)))
    flat = prose.replace("\n", " ")
    spans = [(m.start(), m.end()) for phrase in allowed for m in re.finditer(re.escape(phrase), flat)]
    hits = [(m.start(), m.end()) for m in FIGURE.finditer(flat)]
    hits += [(row.start() + m.start(), row.start() + m.end()) for row in TABLE_ROW.finditer(prose)
             for m in DECIMAL.finditer(row.group(0))]
    return [flat[max(0, i - 30):j + 10].strip() for i, j in sorted(hits)
            if not any(a <= i and j <= b for a, b in spans)]


def test_no_page_types_a_measured_figure():
    found = {p.name: typed_figures(p.read_text(encoding="utf-8"), ALLOWED.get(p.name, [])) for p in _pages()}
    found = {k: v for k, v in found.items() if v}
    assert not found, ("figures typed by hand (write them to benchmarks/results/ and include the file with a --8<-- "
                       f"snippet, or fill them with docs/sync_figures.py; settings go into ALLOWED): {found}")


def test_every_allowed_phrase_is_still_on_its_page():
    for page, phrases in ALLOWED.items():
        text = " ".join((ROOT / "docs" / page).read_text(encoding="utf-8").split())
        stale = [p for p in phrases if p not in text]
        assert not stale, f"{page}: ALLOWED names text that is no longer there: {stale}"


def test_the_figure_check_catches_a_typed_figure():
    hits = typed_figures("Training took 41 s on 2 cores.\n", [])
    assert len(hits) == 1 and "took 41 s" in hits[0]
    assert len(typed_figures("The model certifies 44.8% at\nL2 ε = 1.58, a 2.53x bracket.\n", [])) == 2
    assert len(typed_figures("| CLIP | 1.74 | 97.0 / 49.0 |\n", [])) == 3
    assert len(typed_figures("Peak memory 786 MiB, 1.5 M gradient evaluations, 4 points better.\n", [])) == 3
    quiet = ("<!-- BEGIN generated: x -->\nIt took 41 s and 44.8%.\n<!-- END generated: x -->\n"
             "```text\n--8<-- \"benchmarks/results/x.txt\"\n41 s\n```\n"
             "A limit of 2 GiB, with ε = 1.58 and 1000 images, torch 2.2.\n")
    assert typed_figures(quiet, ["of 2 GiB"]) == []
    assert len(typed_figures("A limit of 2 GiB.\n", [])) == 1


def test_every_included_file_is_generated_and_says_how():
    """Snippets include files that exist, from the generated places only; a benchmark's result file starts with a
    provenance line: the command and a date (benchmarks/record.py writes it; hand-recorded ones say so)."""
    included = set()
    for page in _pages():
        for path in SNIPPET.findall(page.read_text(encoding="utf-8")):
            assert (ROOT / path).is_file(), f"{page.name} includes {path}, which does not exist"
            # example code is no figure: tests/test_lambda_study.py runs every file a page includes from examples/
            assert path == "CHANGELOG.md" or path.startswith(("benchmarks/results/", "reports/", "examples/")), \
                (page.name, path)
            included.add(path)
    results = {p for p in included if p.startswith("benchmarks/results/")}
    assert results, "no page includes a benchmark result"
    for path in sorted(results):
        first = (ROOT / path).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(("# ", "*")), f"{path}: the first line is not a provenance line"
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", first), f"{path}: the provenance line gives no date"
        assert re.search(r"python benchmarks/\w+\.py|robustclip \w+", first), f"{path}: the provenance names no command"


def test_a_benchmark_keeps_its_output_only_when_it_succeeds(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    record = importlib.import_module("record")
    stdout = sys.stdout
    out = tmp_path / "r.txt"

    def ok(n: int) -> int:
        print(f"measured {n} things")
        return 0

    assert record.keep(str(out), ["--n", "3"], ok, 3) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# python ") and "--n 3" in lines[0] and "torch " in lines[0]
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", lines[0]) and "shared machine" in lines[0]
    assert lines[1:] == ["measured 3 things"]
    assert "measured 3 things" in capsys.readouterr().out  # still printed
    out.unlink()
    assert record.keep(str(out), [], lambda: print("half") or 2) == 2
    assert not out.exists()
    try:
        record.keep(str(tmp_path / "missing" / "r.txt"), [], ok, 1)
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("a missing folder was not refused")
    assert "missing" in capsys.readouterr().err
    assert sys.stdout is stdout  # given back after every run
