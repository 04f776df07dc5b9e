"""Architecture rules, checked on the source: what each layer may import (the table below, which the package
docstrings state too), no import cycles, argparse only in the CLI, a purpose line per module.

The cycle check counts every import, deferred ones inside functions too: a deferred import hides a cycle from
Python, not from the reader.
"""

from __future__ import annotations

import ast
import re
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


def _import_targets(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(module, [imported names])`` of every import in ``name`` (deferred ones inside functions too), with
    relative imports resolved; ``import a.b`` gives ``("a.b", [])``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names]))
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (deferred imports inside functions count too)."""
    found: set[str] = set()
    for mod, names in _import_targets(name, path):
        found.add(mod)
        found.update(f"{mod}.{n}" for n in names)
    return {m for m in found if m in MODULES and m != name}


# What each layer may import, beyond itself and the leaf modules. A layer is a subpackage, or a module named here
# (the longest name that matches wins). The package docstrings say the same ("May import ..."; checked below).
LEAVES = {"robustclip.errors", "robustclip.exitcodes", "robustclip.stats", "robustclip._version"}
ENTRANCES = {"robustclip", "robustclip.__main__"}  # import robustclip and python -m robustclip: they reach everything
_EVALUATION = {"core", "data", "models", "bounds", "attacks", "checkpoints", "training", "training.regularizers",
               "training.schedule"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "attacks": {"core"},
    "bounds": {"core", "models"},
    "checkpoints": {"core", "data", "models"},
    "training.schedule": {"core"},
    "training.regularizers": {"core", "models", "bounds", "attacks", "training.schedule"},
    "training": {"core", "data", "models", "checkpoints", "bounds", "attacks", "training.regularizers",
                 "training.schedule"},
    "evaluation": _EVALUATION,
    "gate": _EVALUATION | {"evaluation"},
    "sweeps": _EVALUATION | {"evaluation"},
    "testing": _EVALUATION | {"evaluation"},
    "api": _EVALUATION | {"evaluation"},
    "reports": _EVALUATION | {"evaluation", "sweeps"},
    "cli": _EVALUATION | {"evaluation", "gate", "sweeps", "reports"},
}


def _layer(module: str) -> str | None:
    """The layer (a key of MAY_IMPORT) that ``module`` belongs to; None for the leaves and the entrances."""
    rel = module.removeprefix("robustclip.")
    keys = [k for k in MAY_IMPORT if rel == k or rel.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _imported_modules(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports (``from .. import stats`` is robustclip.stats, not robustclip)."""
    found: set[str] = set()
    for mod, names in _import_targets(name, path):
        subs = {f"{mod}.{n}" for n in names} & MODULES.keys()
        found.update(subs if subs else {mod})
    return {m for m in found if m in MODULES and m != name}


def test_every_module_belongs_to_a_layer_a_leaf_or_an_entrance():
    assert [n for n in MODULES if _layer(n) is None and n not in LEAVES | ENTRANCES] == []
    assert {f"robustclip.{k}" for k in MAY_IMPORT} <= MODULES.keys()


def test_the_leaves_import_nothing_of_the_package():
    assert {n: sorted(_imported_modules(n, MODULES[n])) for n in LEAVES if _imported_modules(n, MODULES[n])} == {}


def test_every_import_follows_the_layer_table():
    bad = []
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer is None:
            continue
        for dep in sorted(_imported_modules(name, path)):
            to = _layer(dep)
            if dep in LEAVES or to == layer or to in MAY_IMPORT[layer]:
                continue
            bad.append(f"{name} imports {dep} (layer {to}; {layer} may import {sorted(MAY_IMPORT[layer]) or 'none'})")
    assert bad == [], "\n".join(bad)


def _stated_rule(doc: str) -> set[str] | None:
    """The layers a package docstring's "May import ..." sentence names ("X and below" adds what X may import)."""
    if "Imports nothing of robustclip" in doc:
        return set()
    flat = " ".join(doc.split())
    if "May import " not in flat:
        return None
    sentence = re.sub(r"\([^)]*\)", "", flat.split("May import ", 1)[1])
    sentence = re.split(r"\.(\s|$)", sentence, maxsplit=1)[0]
    named = {w for w in re.findall(r"[a-z_.]+", sentence) if w in MAY_IMPORT}
    named |= {k for k in MAY_IMPORT for w in named if k.startswith(w + ".")}  # training holds training.schedule
    below = {d for w in named for d in MAY_IMPORT[w]} if "and below" in sentence else set()
    return named | below


PACKAGE_LAYERS = sorted(k for k in MAY_IMPORT if (PKG / k.replace(".", "/") / "__init__.py").is_file())


@pytest.mark.parametrize("layer", PACKAGE_LAYERS)
def test_every_package_docstring_states_its_row_of_the_table(layer):
    doc = ast.get_docstring(ast.parse(MODULES[f"robustclip.{layer}"].read_text(encoding="utf-8"))) or ""
    stated = _stated_rule(doc)
    assert stated is not None, f"robustclip/{layer}'s docstring says nothing of what it may import"
    # a package may import its own subpackages without naming them
    own = {k for k in MAY_IMPORT if k.startswith(layer + ".")}
    assert stated | own == MAY_IMPORT[layer] | own, (sorted(stated), sorted(MAY_IMPORT[layer]))


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
