"""A user's factory module runs fenced (issue 23, item 4): SystemExit, KeyboardInterrupt and any exception while
importing it or calling the factory end in one line and exit 2, never in a silent exit 0; what it prints goes to
stderr, never into ``--json`` stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny import assert_one_line_error, run_cli

from robustclip.checkpoints import foreign as loading
from robustclip.errors import RobustclipError
from robustclip.models import specs as models

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"arch": "fc", "sizes": [784, 16, 10], "activation": "sigmoid"}
SUITE = 'name = "fence"\nn = 8\nbatch_size = 8\nseed = 0\n[eps]\nL2 = [1.0]\n[[attack]]\ntype = "clean"\n'
SUITE += '[[attack]]\ntype = "pgd"\nnorm = "L2"\nsteps = 2\n'
FACTORY = f"""
from robustclip.models import specs as models


def net():
    return models.build({SMALL!r})
"""

# (id, module source, where it fails, the words of the error)
CASES = [
    ("exit0-on-import", "import sys\nsys.exit(0)\n" + FACTORY, ["importing", "raised SystemExit(0)"]),
    ("exit3-on-import", "raise SystemExit(3)\n" + FACTORY, ["importing", "SystemExit(3)"]),
    ("argparse-help-on-import", "import argparse\nargparse.ArgumentParser().parse_args(['--help'])\n" + FACTORY,
     ["importing", "SystemExit(0)"]),
    ("ctrl-c-on-import", "raise KeyboardInterrupt\n" + FACTORY, ["importing", "KeyboardInterrupt"]),
    ("error-on-import", "raise ValueError('no GPU here')\n" + FACTORY, ["importing", "ValueError", "no GPU here"]),
    ("exit0-in-factory", FACTORY + "\ndef bad():\n    import sys\n    print('building')\n    sys.exit(0)\n",
     ["calling", "bad()", "SystemExit(0)"]),
    ("ctrl-c-in-factory", FACTORY + "\ndef bad():\n    raise KeyboardInterrupt\n", ["calling", "KeyboardInterrupt"]),
    ("error-in-factory", FACTORY + "\ndef bad():\n    return 1 / 0\n", ["calling", "ZeroDivisionError"]),
]


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a plain state_dict of the SMALL net and the suite; the test runs from it."""
    torch.manual_seed(0)
    save_file(models.build(SMALL).state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "suite.toml").write_text(SUITE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _last_line_error(rc: int, err: str, *words: str) -> None:
    assert "Traceback" not in err
    assert_one_line_error(rc, err.strip().splitlines()[-1], *words)
    assert sum("robustclip: error:" in line for line in err.splitlines()) == 1


def _module(folder: Path, source: str) -> str:
    name = f"usernet_{uuid.uuid4().hex[:10]}"  # a fresh name: a module imported once stays in sys.modules
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return name


def _ref(name: str, case_id: str) -> str:
    return f"{name}:{'bad' if case_id.endswith('in-factory') else 'net'}"


@pytest.mark.parametrize("case_id,source,words", CASES, ids=[c[0] for c in CASES])
def test_check_with_a_factory_that_exits_fails_with_one_line(case_id, source, words, user_dir):
    ref = _ref(_module(user_dir, source), case_id)
    rc, out, err = run_cli(["check", "w.safetensors", "--model", ref, "--dataset", "mnist", "--suite", "suite.toml",
                            "--baseline", "b.json", "--update-baseline", "--json", "--lipschitz", "off"])
    _last_line_error(rc, err, *words)  # what the module printed (argparse's help) comes before it, on stderr
    assert out == ""  # --json stdout: nothing but JSON, and no JSON without a result
    assert not (user_dir / "b.json").exists()


@pytest.mark.parametrize("case_id,source,words", CASES[:1] + CASES[5:6], ids=["exit0-on-import", "exit0-in-factory"])
def test_evaluate_with_a_factory_that_exits_fails_with_one_line(case_id, source, words, user_dir):
    ref = _ref(_module(user_dir, source), case_id)
    rc, out, err = run_cli(["evaluate", "w.safetensors", "--model", ref, "--dataset", "mnist", "--suite",
                            "suite.toml", "--out", "ev"])
    _last_line_error(rc, err, *words)
    assert not (user_dir / "ev").exists()


def test_factory_prints_go_to_stderr_not_json_stdout(user_dir, data_dir):
    name = _module(user_dir, "print('hello from import')\n" + FACTORY.replace(
        "def net():\n", "def net():\n    print('hello from the factory')\n"))
    rc, out, err = run_cli(["check", "w.safetensors", "--model", f"{name}:net", "--dataset", "mnist", "--suite",
                            "suite.toml", "--baseline", "b.json", "--update-baseline", "--json", "--lipschitz", "off"])
    assert rc == 0, err
    doc = json.loads(out)  # stdout is one JSON document
    assert doc["status"] == "baseline-written"
    assert "hello from import" in err and "hello from the factory" in err


def test_build_from_factory_raises_one_line_for_system_exit(user_dir):
    name = _module(user_dir, "import sys\nsys.exit(0)\n")
    with pytest.raises(RobustclipError, match=rf"importing {name} .* raised SystemExit\(0\)"):
        loading.build_from_factory(f"{name}:net")
    assert name not in sys.modules


def test_a_missing_module_still_names_where_to_run(user_dir):
    with pytest.raises(RobustclipError, match="cannot import no_such_mod_q1"):
        loading.build_from_factory("no_such_mod_q1:net")


def test_os_exit_cannot_be_caught_but_writes_no_verdict(user_dir):
    """``os._exit`` ends the process at once (documented): the exit status is the code's, and no JUnit file is
    written (here: the baseline), so a CI job that requires the verdict file fails."""
    name = _module(user_dir, "import os\nos._exit(0)\n")
    proc = subprocess.run([sys.executable, "-m", "robustclip", "check", "w.safetensors", "--model", f"{name}:net",
                           "--dataset", "mnist", "--suite", "suite.toml", "--baseline", "b.json",
                           "--update-baseline"], cwd=user_dir, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0
    assert not (user_dir / "b.json").exists()
