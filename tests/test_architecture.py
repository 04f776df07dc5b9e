"""Architecture rules, checked on the source: no import cycles, argparse only in the CLI, a purpose line per module.

The cycle check counts every import, deferred ones inside functions too: a deferred import hides a cycle from
Python, not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "robustclip"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (deferred imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name}


def test_the_package_has_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n)


def test_argparse_lives_only_in_the_cli_package():
    offenders = [n for n, p in MODULES.items() if not n.startswith("robustclip.cli")
                 and "argparse" in {a for a in _all_imported_names(p)}]
    assert offenders == [], f"argparse outside robustclip/cli: {offenders}"


def _all_imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_in_its_first_line_what_it_is_for(name):
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()[0].split()) >= 3, f"{name} has no purpose line"


def test_every_command_module_registers_a_handler():
    from robustclip.cli import COMMAND_MODULES, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert len(sub.choices) == len(COMMAND_MODULES)
    for name, p in sub.choices.items():
        assert callable(p.get_default("handler")), f"{name} has no handler"


def test_a_broken_install_exits_3_with_one_line(tmp_path):
    """A dependency that cannot be imported is an internal error (3), never 1 (a regression) or a traceback."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torchattacks'] = None\n"
            "from robustclip.cli import main\n"
            "sys.exit(main(['evaluate', 'x.safetensors', '--suite', 'ci-quick', '--out', 'o']))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "torchattacks" in lines[0] and "Traceback" not in res.stderr


def test_importing_the_package_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, robustclip, robustclip.cli; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr
