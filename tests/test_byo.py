"""Bring your own model: a user's CNN (its own class and forward, in its own module file) saved as a state_dict is
evaluated and gated through the CLI with ``--model``; a factory a file names is imported only when the user names
it; suites resolve by name from any folder, also from an installed wheel.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from tiny import assert_one_line_error, run_cli, suite_toml
from torch import nn

import robustclip as rc
from experiments.paper import experiment as paper_experiment
from robustclip.attacks.library import find_suite, shipped_suites_dir
from robustclip.attacks.suites import load_suite
from robustclip.checkpoints import foreign as loading
from robustclip.data import userdata
from robustclip.errors import CheckpointError, RobustclipError, SuiteError
from robustclip.models.specs import build

ROOT = Path(__file__).resolve().parent.parent

USER_MODULE = '''\
"""A researcher's own network: an nn.Module subclass with its own forward."""
import pathlib

import torch
from torch import nn

MARKER = pathlib.Path(__file__).with_suffix(".imported")
MARKER.write_text("imported")  # lets the tests see whether robustclip imported (ran) this module


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.flat(h))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN()


def five_classes() -> nn.Module:
    return SmallCNN(classes=5)


def not_a_model() -> int:
    return 3
'''

TINY_SUITE = suite_toml(eps=(1.0,))


_main = run_cli




def _write_module(folder: Path) -> str:
    """A fresh user module in ``folder`` (a unique name, so no test sees another's import); returns its name."""
    name = f"usernets_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(USER_MODULE, encoding="utf-8")
    return name


def _import(folder: Path, name: str) -> Any:
    sys.path.insert(0, str(folder))
    try:
        import importlib

        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    from tiny import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="module")
def user(tmp_path_factory, mnist_train) -> dict[str, Any]:
    """The user's folder: their module, trained weights as .pt and .safetensors, random weights, a tiny suite."""
    d = tmp_path_factory.mktemp("byo")
    name = _write_module(d)
    mod = _import(d, name)
    net = mod.small_cnn()
    g = torch.Generator().manual_seed(0)
    x, y = mnist_train.x[:4000], mnist_train.y[:4000]
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    net.train()
    for _ in range(300):  # a few hundred steps of plain training
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.eval()
    torch.save(net.state_dict(), d / "trained.pt")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "trained.safetensors"))
    torch.manual_seed(1)
    torch.save(mod.SmallCNN().state_dict(), d / "random.pt")  # same architecture, untrained weights
    (d / "tiny.toml").write_text(TINY_SUITE, encoding="utf-8")
    (d / f"{name}.imported").unlink()
    return {"dir": d, "name": name, "ref": f"{name}:small_cnn", "mod": mod, "net": net}


@pytest.fixture
def in_user_dir(user, monkeypatch) -> Path:
    """Run from the user's folder, as they would (their module is importable from the current folder)."""
    monkeypatch.chdir(user["dir"])
    return Path(user["dir"])


# --------------------------------------------------------------------------- evaluate and check through the CLI


def test_cli_evaluates_a_users_state_dict(user, in_user_dir, data_dir):
    out, weights = in_user_dir / "ev", "trained.pt"
    code, stdout, err = _main(["evaluate", weights, "--model", user["ref"], "--dataset", "mnist", "--suite",
                               "tiny.toml", "--out", out, "--quiet", "--data-dir", data_dir])
    assert code == 0, err
    frame = pd.read_csv(out / "results.csv")
    acc = dict(zip(frame.attack, frame.accuracy))
    assert acc["clean"] > 0.8, acc  # the user's trained CNN, evaluated as it is
    assert acc["worst_case"] <= acc["clean"]
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["model_factory"] == user["ref"] and run["checkpoint"] == weights
    assert set(frame.dataset) == {"mnist"}


def test_both_state_dict_formats_give_the_same_model(user, in_user_dir):
    a, meta_a = loading.load_model("trained.pt", model=user["ref"], dataset="mnist")
    b, meta_b = loading.load_model("trained.safetensors", model=user["ref"], dataset="mnist")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), user["net"](x))
    assert meta_a.weights_sha256 == meta_b.weights_sha256 and meta_a.dataset == "mnist"
    assert not a.training


def test_check_gates_a_users_model(user, in_user_dir, data_dir):
    common = ["--model", user["ref"], "--dataset", "mnist", "--suite", "tiny.toml", "--baseline", "base.json",
              "--data-dir", data_dir]
    code, out, err = _main(["check", "trained.safetensors", *common, "--update-baseline"])
    assert code == 0, err
    assert json.loads(Path("base.json").read_text())["dataset"] == "mnist"
    code, out, err = _main(["check", "trained.pt", *common])  # the same weights, saved with torch.save
    assert code == 0, out + err
    assert "OK: nothing regressed" in out
    code, out, err = _main(["check", "random.pt", *common])  # same architecture, untrained weights
    assert code == 1, out + err
    assert "REGRESSED" in out and "clean" in out


def test_state_dict_without_model_names_the_fix(user, in_user_dir):
    for weights in ("trained.pt", "trained.safetensors"):
        code, _, err = _main(["evaluate", weights, "--dataset", "mnist", "--suite", "tiny.toml", "--out", "x"])
        assert_one_line_error(code, err, weights, "--model MODULE:CALLABLE")


def test_state_dict_without_dataset_names_the_fix(user, in_user_dir):
    code, _, err = _main(["evaluate", "trained.pt", "--model", user["ref"], "--suite", "tiny.toml", "--out", "x"])
    assert_one_line_error(code, err, "--dataset mnist")


# --------------------------------------------------------------------------- the factory trust rule


def test_a_factory_named_in_a_file_is_imported_only_when_the_user_names_it(tmp_path, monkeypatch, user):
    monkeypatch.chdir(tmp_path)
    name = _write_module(tmp_path)
    marker = tmp_path / f"{name}.imported"
    ref = f"{name}:small_cnn"
    path = rc.save(user["net"], tmp_path / "mine.safetensors", {"dataset": "mnist"}, factory=ref)
    assert not marker.exists()  # saving records the factory, never imports it

    with pytest.raises(CheckpointError) as info:
        rc.load(path)
    assert str(info.value).startswith(f"{path} was saved with factory {ref} -- pass --model {ref} to import it "
                                      "(importing runs its code)")
    code, _, err = _main(["evaluate", path, "--suite", "demo", "--out", "ev"])
    assert_one_line_error(code, err, f"was saved with factory {ref}", f"pass --model {ref}", "importing runs its code")
    assert not marker.exists(), "robustclip imported a module only the file named"

    model, meta = rc.load(path, trust_factory=True)
    assert marker.exists()
    assert meta.dataset == "mnist" and meta["factory"] == ref and meta.model is None
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), user["net"](x))

    named, _ = loading.load_model(path, model=ref)  # what --model does
    assert torch.equal(named(x), user["net"](x))


def test_save_needs_a_spec_or_a_factory(user, tmp_path):
    with pytest.raises(RobustclipError, match="factory="):
        rc.save(user["net"], tmp_path / "a.safetensors")
    with pytest.raises(RobustclipError, match="MODULE:CALLABLE"):
        rc.save(user["net"], tmp_path / "a.safetensors", factory="not a reference")
    assert not (tmp_path / "a.safetensors").exists()


def test_spec_checkpoints_load_as_before(tmp_path):
    model = build({"arch": "fc", "sizes": [784, 16, 10], "activation": "relu"})
    path = rc.save(model, tmp_path / "spec.safetensors", {"dataset": "mnist"})
    a, meta = loading.load_model(path)
    b, _ = rc.load(path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(a(x), model(x)) and torch.equal(b(x), model(x)) and meta.model is not None
    with pytest.raises(CheckpointError, match="mnist model, --dataset says fashion-mnist"):
        loading.load_model(path, dataset="fashion-mnist")


# --------------------------------------------------------------------------- wrong files, wrong models


def test_weights_that_do_not_fit_name_the_mismatch(user, in_user_dir, tmp_path):
    state = user["net"].state_dict()
    bad_shape = {**state, "fc.weight": torch.zeros(10, 99)}
    save_file({k: v.contiguous() for k, v in bad_shape.items()}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError) as info:
        loading.load_model(tmp_path / "shape.safetensors", model=user["ref"])
    assert "fc.weight is (10, 99) in the file, (10, 784) in the model" in str(info.value)

    renamed = {("module." + k): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    code, _, err = _main(["evaluate", tmp_path / "renamed.pt", "--model", user["ref"], "--dataset", "mnist",
                          "--suite", "tiny.toml", "--out", "x"])
    assert_one_line_error(code, err, "missing keys conv1.weight", "unexpected keys module.conv1.weight")


def test_model_output_must_be_logits_per_class(user, in_user_dir):
    code, _, err = _main(["evaluate", "trained.pt", "--model", f"{user['name']}:five_classes", "--dataset", "mnist",
                          "--suite", "tiny.toml", "--out", "x"])
    assert_one_line_error(code, err, "does not fit")  # the fc layer has 5 rows: caught as a shape mismatch first
    net = user["mod"].SmallCNN(classes=5)
    with pytest.raises(RobustclipError, match=r"return \(2, 10\) logits"):
        loading.check_classifier(net, torch.rand(4, 1, 28, 28), 10)
    with pytest.raises(RobustclipError, match="fails on a"):
        loading.check_classifier(net, torch.rand(4, 3, 32, 32), 5)


@pytest.mark.parametrize("ref, words", [
    ("no_such_module_xyz:f", ["cannot import no_such_module_xyz"]),
    ("NAME:missing", ["has no missing"]),
    ("NAME:not_a_model", ["returned a int, not a torch.nn.Module"]),
    ("just-a-name", ["is not of the form MODULE:CALLABLE"]),
])
def test_bad_model_references_are_one_line_errors(user, in_user_dir, ref, words):
    ref = ref.replace("NAME", user["name"])
    code, _, err = _main(["evaluate", "trained.pt", "--model", ref, "--dataset", "mnist", "--suite", "tiny.toml",
                          "--out", "x"])
    assert_one_line_error(code, err, *words)


class _Payload:
    """Runs code when unpickled (by an unsafe loader)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_in_a_pt_file_are_never_run(user, in_user_dir, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    for f in ("evil.pt", "evil.pkl"):
        with pytest.raises(CheckpointError, match="weights_only=True"):
            loading.load_model(tmp_path / f, model=user["ref"])
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="'step' is a int, not a tensor"):
        loading.load_model(tmp_path / "mixed.pt", model=user["ref"])
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="--model MODULE:CALLABLE"):
        rc.load(tmp_path / "evil.pt")  # the advice of the plain loader now leads somewhere
    with pytest.raises(CheckpointError, match="not a regular file"):
        loading.load_model(tmp_path, model=user["ref"])


def test_non_finite_weights_are_refused(user, in_user_dir, tmp_path):
    state = {**user["net"].state_dict(), "fc.bias": torch.full((10,), float("nan"))}
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="fc.bias has non-finite values"):
        loading.load_model(tmp_path / "nan.pt", model=user["ref"])


# --------------------------------------------------------------------------- suites by name, from anywhere


def test_suites_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./attacks here
    shipped = shipped_suites_dir()
    assert shipped is not None
    for name in ("ci-quick", "paper-mnist", "curve-l2", "curve-linf", "cifar10-linf-8", "cifar10-l2-0.5"):
        assert Path(find_suite(name)) == shipped / f"{name}.toml"
        assert load_suite(name).name == name
    assert find_suite("demo") == "demo"  # built-in
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "ci-quick.toml").write_text(TINY_SUITE.replace('"tiny"', '"mine"'), encoding="utf-8")
    assert load_suite("ci-quick").name == "mine"  # ./attacks/NAME.toml comes before the shipped suite
    with pytest.raises(SuiteError, match="ci-quick, cifar10-l2-0.5, cifar10-linf-8, curve-l2"):
        find_suite("no-such-suite")
    with pytest.raises(SuiteError, match="not found"):
        find_suite("../attacks/ci-quick")  # names are names, not paths


def test_preset_suites_resolve_from_any_folder(tmp_path, monkeypatch):
    from robustclip.core import files as _io

    monkeypatch.chdir(tmp_path)

    def suites(node: Any) -> set[str]:
        if isinstance(node, dict):
            return {v for k, v in node.items() if k == "suite" and isinstance(v, str)} | \
                set().union(*(suites(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(suites(v) for v in node))
        return set()

    named = suites(paper_experiment.preset()) | suites(_io.preset("demo"))
    assert "paper-mnist" in named
    for name in named:
        assert load_suite(name).name == name


def _built_wheel(tmp: Path) -> Path:
    """A wheel built from a copy of the project's packaging inputs (the checkout itself stays untouched)."""
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        (src / f).write_bytes((ROOT / f).read_bytes())
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "robustclip", src / "robustclip", ignore=ignore)
    shutil.copytree(ROOT / "attacks", src / "attacks", ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(src), "-w", str(tmp / "whl")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp / "whl").glob("robustclip-*.whl")
    return wheel


@pytest.mark.slow  # building and installing a wheel is the test (pip, about 15 s): .ci/run runs it with -m slow
def test_installed_wheel_evaluates_with_suite_names_from_outside(tmp_path, user, data_dir):
    wheel = _built_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {p.relative_to(ROOT).as_posix() for p in (ROOT / "robustclip").rglob("*.py")}
    want |= {f"robustclip/suites/{p.name}" for p in (ROOT / "attacks").glob("*.toml")}
    want |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "robustclip" / "presets").glob("*.toml")}
    assert want <= names, sorted(want - names)  # every module, suite and preset ships
    assert "robustclip/py.typed" in names and any(n.endswith("/LICENSE") for n in names), sorted(names)[-8:]
    paper = {"robustclip/paper.py", "robustclip/presets/paper.toml"}
    assert not any(n.startswith("experiments/") or n in paper for n in names), \
        "the wheel holds the toolkit only; the paper is an experiment of the checkout"
    removed = {"robustclip/pipeline.py", "robustclip/loading.py", "robustclip/lipschitz.py"}
    assert not names & removed, f"the wheel holds modules removed in 0.1.0's relayout: {sorted(names & removed)}"

    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ckpt = rc.save(build({"arch": "fc", "sizes": [784, 16, 10], "activation": "relu"}),
                   elsewhere / "ckpt.safetensors", {"dataset": "mnist"})
    name = _write_module(elsewhere)
    torch.save(user["net"].state_dict(), elsewhere / "mine.pt")
    script = (
        "import sys, robustclip\n"
        "from robustclip.cli import main\n"
        "print(robustclip.__file__)\n"
        "a = main(['evaluate', sys.argv[1], '--suite', 'ci-quick', '--n', '20', '--out', 'ev1', '--quiet'])\n"
        "b = main(['evaluate', 'mine.pt', '--model', sys.argv[2], '--dataset', 'mnist', '--suite', 'ci-quick',\n"
        "          '--n', '20', '--out', 'ev2', '--quiet'])\n"
        "sys.exit(a or b)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "ROBUSTCLIP_DATA": str(data_dir),
           "ROBUSTCLIP_NO_DOWNLOAD": "1", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(ckpt), f"{name}:small_cnn"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.splitlines()[0]).resolve().is_relative_to(site.resolve())
    for out in ("ev1", "ev2"):
        doc = json.loads((elsewhere / out / "results.json").read_text())
        assert doc["suite"] == "ci-quick" and Path(doc["suite_file"]).resolve().is_relative_to(site.resolve())
        assert doc["runs"][0]["n"] == 20


def test_a_safetensors_header_that_starts_like_pickle_magic_still_loads(tmp_path):
    """A header length of 0x280 (or 0x380, ...) writes the bytes 80 02 first: a pickle's magic, but not a pickle."""
    model = build({"arch": "fc", "sizes": [784, 4, 10], "activation": "relu"})
    path = tmp_path / "m.safetensors"
    for k in range(0, 1200, 8):
        rc.save(model, path, {"dataset": "mnist", "pad": "x" * k})
        if path.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
            break
    else:
        pytest.fail("no padding gave a header length that looks like pickle magic")
    loaded, meta = rc.load(path)
    assert meta["pad"] and torch.equal(loaded(torch.ones(1, 1, 28, 28)), model(torch.ones(1, 1, 28, 28)))
    assert loading.load_model(path)[1].weights_sha256 == meta.weights_sha256


# --------------------------------------------------------------------------- your own data (--data FILE)

COLOUR_MODULE = '''\
"""A model for 3x8x8 colour patches and 4 classes."""
from torch import nn


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
'''


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> dict[str, Any]:
    """A non-28x28 problem: x (96, 3, 8, 8) in [0,1], labels given by a linear model, which is saved as .pt."""
    import numpy as np

    d = tmp_path_factory.mktemp("colour")
    name = f"colournets_{uuid.uuid4().hex[:10]}"
    (d / f"{name}.py").write_text(COLOUR_MODULE, encoding="utf-8")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(96, 3, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    torch.save(net.state_dict(), d / "linear.pt")
    np.savez(d / "patches.npz", x=x.numpy(), y=y.numpy())
    save_file({"x": x, "y": y}, str(d / "patches.safetensors"))
    (d / "tiny.toml").write_text(TINY_SUITE, encoding="utf-8")
    return {"dir": d, "ref": f"{name}:linear", "x": x, "y": y}


@pytest.mark.parametrize("data_file", ["patches.npz", "patches.safetensors"])
def test_cli_evaluates_own_data_of_any_shape(colour, monkeypatch, data_file):
    monkeypatch.chdir(colour["dir"])
    code, out, err = _main(["evaluate", "linear.pt", "--model", colour["ref"], "--data", data_file, "--suite",
                            "tiny.toml", "--out", f"ev-{data_file}", "--quiet"])
    assert code == 0, err
    frame = pd.read_csv(colour["dir"] / f"ev-{data_file}" / "results.csv")
    acc = dict(zip(frame.attack, frame.accuracy))
    assert acc["clean"] == 1.0 and acc["worst_case"] < 1.0  # labels are the model's own: clean is exact
    assert frame.n.iloc[0] == 64 and frame.dataset.iloc[0].startswith(f"{data_file}@")


def test_check_gates_on_own_data(colour, monkeypatch):
    monkeypatch.chdir(colour["dir"])
    common = ["--model", colour["ref"], "--suite", "tiny.toml", "--baseline", "b.json"]
    assert _main(["check", "linear.pt", "--data", "patches.npz", *common, "--update-baseline"])[0] == 0
    code, out, err = _main(["check", "linear.pt", "--data", "patches.safetensors", *common, "--json"])
    assert_one_line_error(code, err, "was made on patches.npz@")  # other data file: not compared like with like


def _npz(path: Path, **arrays: Any) -> Path:
    import numpy as np

    np.savez(path, **arrays)
    return path


def test_own_data_is_validated_where_it_enters(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((5, 2, 3, 3)).astype(np.float32)
    y = np.arange(5)
    split = userdata.load_data_file(_npz(tmp_path / "ok.npz", x=x, y=y.astype(np.float64)))  # whole floats pass
    assert split.x.shape == (5, 2, 3, 3) and split.y.dtype == torch.int64 and split.y.tolist() == [0, 1, 2, 3, 4]
    cases = {
        "no array 'y'": dict(x=x),
        "not in [0,1]": dict(x=x * 2, y=y),
        "non-finite": dict(x=np.where(x > 0.5, np.nan, x), y=y),
        "negative label -1": dict(x=x, y=y - 1),
        "not whole numbers": dict(x=x, y=y + 0.5),
        "y has shape (4,)": dict(x=x, y=y[:4]),
        "must be floating point": dict(x=(x * 255).astype(np.uint8), y=y),
        "not integer labels": dict(x=x, y=np.array(["a"] * 5)),
    }
    for words, arrays in cases.items():
        with pytest.raises(RobustclipError, match=re_escape(words)):
            userdata.load_data_file(_npz(tmp_path / "bad.npz", **arrays))
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:  # an object array needs pickle: refused, not loaded
        z.write(tmp_path / "obj.npy", "x.npy")
        z.write(tmp_path / "obj.npy", "y.npy")
    with pytest.raises(RobustclipError, match="cannot be read as .npz"):
        userdata.load_data_file(tmp_path / "pickled.npz")
    with pytest.raises(RobustclipError, match="has no class subfolders"):  # a folder is read as an image folder
        userdata.load_data_file(tmp_path)


def test_labels_beyond_the_models_outputs_are_refused(colour, monkeypatch, tmp_path):
    monkeypatch.chdir(colour["dir"])
    bad = _npz(tmp_path / "seven.npz", x=colour["x"].numpy(), y=(colour["y"] + 3).numpy())
    code, _, err = _main(["evaluate", "linear.pt", "--model", colour["ref"], "--data", bad, "--suite", "tiny.toml",
                          "--out", tmp_path / "ev"])
    assert_one_line_error(code, err, "has 4 outputs")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# --------------------------------------------------------------------------- the field's usual threat models


@pytest.mark.parametrize("name, norm, eps, attacks", [
    ("mnist-linf-0.3", "Linf", 0.3, {"clean", "apgd-ce", "apgdt", "fabt", "square"}),
    ("mnist-l2-1.58", "L2", 1.58, {"clean", "pgd", "apgd-ce", "apgdt"}),
])
def test_threat_model_suites_parse_and_run(user, name, norm, eps, attacks, mnist_test):
    s = load_suite(name)
    assert s.headline == (norm, eps) and {a.label for a in s.attacks} == attacks
    x, y = mnist_test.x[:4], mnist_test.y[:4]
    res = rc.evaluate(user["net"], x, y, suite=s, n_classes=10, progress=False, sanity=False)
    rows = {(r["attack"], r["eps"]): r["accuracy"] for r in res.frame.to_dict(orient="records")}
    assert rows[("worst_case", eps)] <= min(rows[(a, eps)] for a in attacks - {"clean"})
    assert all(v <= rows[("clean", 0.0)] for v in rows.values())


def test_square_queries_are_configurable_and_validated():
    raw = {"attack": [{"type": "square", "norm": "Linf", "eps": 0.1, "n_queries": 50}]}
    from robustclip.attacks.suites import parse_suite

    spec = parse_suite(raw).attacks[0]
    atk = spec.build(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), n_classes=3, seed=0)
    assert atk.n_queries == 50 and atk.eps == 0.1
    default = parse_suite({"attack": [{"type": "square", "norm": "Linf", "eps": 0.1}]}).attacks[0]
    assert default.build(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), n_classes=3, seed=0).n_queries == 5000
    with pytest.raises(SuiteError, match="n_queries must be a whole number"):
        parse_suite({"attack": [{"type": "square", "norm": "Linf", "eps": 0.1, "n_queries": 1.5}]})


def test_corrupt_robustclip_metadata_is_a_one_line_error(user, in_user_dir, tmp_path):
    for text in ("{not json", "[1, 2]"):
        save_file({k: v.contiguous() for k, v in user["net"].state_dict().items()}, str(tmp_path / "c.safetensors"),
                  metadata={"robustclip": text})
        with pytest.raises(CheckpointError, match="robustclip"):
            loading.load_model(tmp_path / "c.safetensors", model=user["ref"])
