"""The GitHub Actions example: valid workflows, actions pinned by commit SHA, a read-only gate that fails without its
verdict file, and publishing from a separate ``workflow_run`` workflow (never ``pull_request_target``).

The install line itself is run against a locally built wheel by ``.ci/run`` (it replaces the editable install, so
it runs there, after the tests, in CI's throwaway environment).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / "examples" / "github-actions.yml"
PUBLISH = ROOT / "examples" / "github-actions-publish.yml"


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _steps(doc: dict) -> list[dict]:
    return [s for job in doc["jobs"].values() for s in job["steps"]]


@pytest.mark.parametrize("path", [GATE, PUBLISH], ids=lambda p: p.name)
def test_every_action_is_pinned_by_a_commit_sha(path):
    uses = [s["uses"] for s in _steps(_load(path)) if "uses" in s]
    assert uses
    for u in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u), u
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if "uses:" in line:
            assert re.search(r"#\s*v\d", line), line  # the tag it stands for, for the reader and for updates


def test_the_gate_runs_with_a_read_only_token_and_needs_its_verdict_file():
    doc = _load(GATE)
    assert doc["on"] == ["pull_request"] and doc["permissions"] == {"contents": "read"}
    steps = _steps(doc)
    install = next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    assert 'pip install "$ROBUSTCLIP_SPEC"' in install and "pip install robustclip\n" not in install
    spec = doc["env"]["ROBUSTCLIP_SPEC"]
    assert spec.startswith("robustclip @ git+https://github.com/") and "PLACEHOLDER" in GATE.read_text()
    gate = next(i for i, s in enumerate(steps) if "robustclip check" in s.get("run", ""))
    assert "--junit-xml robustness.xml" in steps[gate]["run"]
    verdict = steps[gate + 1]
    assert verdict["if"] == "always()" and "! -s robustness.xml" in verdict["run"] and "exit 1" in verdict["run"]
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["if-no-files-found"] == "error" and upload["with"]["path"] == "robustness.xml"
    assert not any("junit-report" in s.get("uses", "") for s in steps)  # publishing needs checks: write


def test_publishing_is_a_separate_workflow_run_that_runs_no_pull_request_code():
    gate, pub = _load(GATE), _load(PUBLISH)
    for doc in (gate, pub):  # named in a comment of the example, never as a trigger
        assert "pull_request_target" not in (doc["on"] if isinstance(doc["on"], (list, dict)) else [doc["on"]])
    assert pub["on"]["workflow_run"]["workflows"] == [gate["name"]]
    assert pub["permissions"]["checks"] == "write" and pub["permissions"]["actions"] == "read"
    steps = _steps(pub)
    assert not any("checkout" in s.get("uses", "") or "run" in s for s in steps)  # no code of the PR, no scripts
    dl = next(s for s in steps if "download-artifact" in s.get("uses", ""))
    assert dl["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    upload = next(s for s in _steps(gate) if "upload-artifact" in s.get("uses", ""))
    assert dl["with"]["name"] == upload["with"]["name"]
    rep = next(s for s in steps if "junit-report" in s.get("uses", ""))
    assert rep["with"]["commit"] == "${{ github.event.workflow_run.head_sha }}"


@pytest.mark.skipif(shutil.which("check-jsonschema") is None,
                    reason="check-jsonschema is not installed (pip install -e '.[dev]')")
def test_the_workflows_are_valid_against_the_github_workflow_schema():
    proc = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(GATE),
                           str(PUBLISH)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
