"""Attacks and attack suites.

* Every attack type the suites can name, built through ``AttackSpec.build``,
  returns inputs of the clean input's shape, inside [0,1] and within ε in its
  norm: a property test over seeds, batch sizes, ε and two image shapes.
* The CLIP authors' PGD-L2 variant is a valid, and weaker, attack than
  torchattacks' PGD-L2 on a real MNIST model.
* Suite files are validated: every mistake raises :class:`SuiteError` naming
  the file, the key and the allowed values; the shipped suites all load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st

from robustclip.attacks.custom import AuthorsPGDL2, BallNoise
from robustclip.attacks.kinds import ATTACK_TYPES, AttackSpec
from robustclip.attacks.suites import Suite, load_suite, parse_suite
from robustclip.errors import SuiteError
from robustclip.evaluation.attacking import run_attack
from robustclip.models import specs as models

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "attacks"

# (type, norm, params): every norm-bounded attack a suite can build, with few steps
BOUNDED = [
    pytest.param("fgsm", "Linf", {}, id="fgsm-Linf"),
    pytest.param("fgsm", "L2", {}, id="fgsm-L2"),
    pytest.param("pgd", "Linf", {"steps": 4}, id="pgd-Linf"),
    pytest.param("pgd", "L2", {"steps": 4}, id="pgd-L2"),
    pytest.param("pgd", "L2", {"steps": 3, "step_size": 5.0}, id="pgd-L2-huge-step"),
    pytest.param("apgd", "Linf", {"steps": 4, "loss": "ce"}, id="apgd-ce-Linf"),
    pytest.param("apgd", "L2", {"steps": 4, "loss": "ce"}, id="apgd-ce-L2"),
    pytest.param("apgd", "L2", {"steps": 4, "loss": "dlr"}, id="apgd-dlr-L2"),
    pytest.param("apgdt", "L2", {"steps": 3}, id="apgdt-L2"),
    pytest.param("apgdt", "Linf", {"steps": 3}, id="apgdt-Linf"),
    pytest.param("authors_pgd", "L2", {"steps": 4, "step_size": 0.5}, id="authors_pgd-L2"),
    pytest.param("noise", "L2", {}, id="noise-L2"),
    pytest.param("noise", "Linf", {}, id="noise-Linf"),
]

SHAPES = [
    pytest.param((1, 28, 28), [784, 32, 10], id="28x28"),
    pytest.param((1, 8, 8), [64, 32, 10], id="8x8"),
]


def _random_model(sizes: list[int], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build({"arch": "fc", "sizes": sizes, "activation": "relu"}).eval()


def _random_batch(shape: tuple[int, ...], n: int, seed: int) -> torch.Tensor:
    """Uniform images with some pixels exactly at 0 and 1 (the box edges)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    edge = torch.rand(x.shape, generator=g)
    x = torch.where(edge < 0.15, torch.zeros_like(x), x)
    return torch.where(edge > 0.85, torch.ones_like(x), x)


def _size(norm: str, d: torch.Tensor) -> torch.Tensor:
    d = d.flatten(1)
    return d.norm(dim=1) if norm == "L2" else d.abs().max(dim=1).values


def _check_bounded(norm: str, eps: float, x: torch.Tensor, adv: torch.Tensor) -> None:
    adv = adv.detach()  # torchattacks' APGD returns a tensor that still requires grad
    assert adv.shape == x.shape
    assert torch.isfinite(adv).all()
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0, "left [0,1]"
    size = _size(norm, adv - x)
    limit = eps * (1 + 1e-4) + 1e-6
    assert float(size.max()) <= limit, f"{norm} perturbation {float(size.max())} > eps {eps}"


# --------------------------------------------------------------------------- property: within ε and [0,1]


@pytest.mark.parametrize("shape,sizes", SHAPES)
@pytest.mark.parametrize("atype,norm,params", BOUNDED)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), eps_frac=st.floats(0.05, 1.0))
def test_every_attack_stays_within_eps_and_box(atype, norm, params, shape, sizes, seed, n, eps_frac):
    # ε up to 3 in L2 and 0.3 in L∞: large enough for the box clipping to matter
    eps = (3.0 if norm == "L2" else 0.3) * eps_frac
    model = _random_model(sizes, seed)
    x = _random_batch(shape, n, seed)
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly "classified", so every attack really runs
    if seed % 2:  # and sometimes wrong labels too
        y = (y + 1 + seed % 9) % 10
    spec = AttackSpec(atype, atype, norm, eps, params)
    assert spec.bounded
    torch.manual_seed(seed)
    atk = spec.build(model, n_classes=10, seed=seed)
    adv = atk(x, y)
    _check_bounded(norm, eps, x, adv)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), sigma=st.floats(0.01, 2.0))
def test_gaussian_noise_stays_in_box_and_is_unbounded_spec(seed, n, sigma):
    model = _random_model([64, 32, 10], seed)
    x = _random_batch((1, 8, 8), n, seed)
    spec = AttackSpec("noise", "noise", None, sigma, {"sigma": sigma})
    assert not spec.bounded
    torch.manual_seed(seed)
    adv = spec.build(model, n_classes=10, seed=seed)(x, torch.zeros(n, dtype=torch.long))
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("norm,eps", [("L2", 0.7), ("Linf", 0.05)])
def test_ball_noise_has_norm_exactly_eps_away_from_the_box_edges(norm, eps):
    x = torch.full((16, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    adv = BallNoise(_random_model([64, 32, 10], 0), eps=eps, norm=norm)(x, torch.zeros(16, dtype=torch.long))
    size = _size(norm, adv - x)
    assert torch.allclose(size, torch.full_like(size, eps), rtol=1e-5)


def test_build_returns_the_documented_torchattacks_objects():
    model = _random_model([64, 32, 10], 0)

    def b(t, norm=None, eps=None, **p):
        return AttackSpec(t, t, norm, eps, p).build(model, n_classes=10, seed=3)

    assert b("clean") is None
    assert isinstance(b("noise", sigma=0.3), torchattacks.GN)
    assert isinstance(b("noise", "L2", 1.0), BallNoise)
    assert isinstance(b("fgsm", "Linf", 0.1), torchattacks.FGSM)
    l2 = b("fgsm", "L2", 1.5)
    assert isinstance(l2, torchattacks.PGDL2) and l2.steps == 1 and l2.alpha == 1.5 and not l2.random_start
    pgd = b("pgd", "L2", 2.0, steps=20)
    assert isinstance(pgd, torchattacks.PGDL2) and pgd.alpha == pytest.approx(0.25) and pgd.random_start
    assert isinstance(b("pgd", "Linf", 0.1, steps=10), torchattacks.PGD)
    apgd = b("apgd", "L2", 2.0, steps=7, loss="dlr")
    assert isinstance(apgd, torchattacks.APGD) and apgd.loss == "dlr" and apgd.steps == 7
    apgdt = b("apgdt", "L2", 2.0)
    assert isinstance(apgdt, torchattacks.APGDT) and apgdt.n_target_classes == 9
    ap = b("authors_pgd", "L2", 2.0, steps=5)
    assert isinstance(ap, AuthorsPGDL2) and ap.alpha == 0.5 and ap.steps == 5 and ap.eps == 2.0
    assert AttackSpec("pgd", "pgd", "L2", 1.0, {"restarts": 3}).restarts == 3
    assert AttackSpec("apgd", "apgd", "L2", 1.0, {"restarts": 3}).restarts == 1


# --------------------------------------------------------------------------- the authors' PGD-L2


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), eps=st.floats(0.05, 4.0),
       alpha=st.sampled_from([0.01, 0.5, 2.0]), small=st.booleans())
def test_authors_pgd_outputs_in_box_and_within_eps(seed, n, eps, alpha, small):
    shape, sizes = ((1, 8, 8), [64, 32, 10]) if small else ((1, 28, 28), [784, 32, 10])
    model = _random_model(sizes, seed)
    x = _random_batch(shape, n, seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    torch.manual_seed(seed)
    adv = AuthorsPGDL2(model, eps=eps, alpha=alpha, steps=5)(x, y)
    _check_bounded("L2", eps, x, adv)


@pytest.fixture(scope="module")
def plain_mnist(data_dir):
    """A 1-epoch plain (unregularised) MNIST net and 200 test images."""
    from robustclip.data import datasets as data
    from robustclip.training.config import TrainConfig
    from robustclip.training.trainer import train

    full = data.load("mnist", "train", data_dir=data_dir)
    val = data.Split(full.x[-500:], full.y[-500:], "mnist", "train", "test-slice")
    cfg = TrainConfig(dataset="mnist", reg="none", epochs=1, model={"arch": "fc", "sizes": [784, 64, 10],
                      "activation": "relu"}, optimizer="adam", lr=0.003, batch_size=64, lip_probe_pairs=0)
    res = train(cfg, progress=False, splits=(full.subset(3000), val))
    test = data.load("mnist", "test", data_dir=data_dir).subset(200)
    return res.model.eval(), test.x, test.y


def test_authors_pgd_is_weaker_than_pgd_l2_on_a_plain_model(plain_mnist):
    model, x, y = plain_mnist
    clean = float((model(x).argmax(1) == y).float().mean())
    assert clean > 0.7, "the fixture model should have learned something"
    accs = {}
    for spec in (AttackSpec("authors_pgd", "authors_pgd", "L2", 2.0, {"steps": 20, "step_size": 0.5}),
                 AttackSpec("pgd", "pgd", "L2", 2.0, {"steps": 20})):
        ok, worst = run_attack(model, spec, x, y, n_classes=10, seed=0, batch_size=200)
        assert worst <= 2.0 * (1 + 1e-4) + 1e-6
        accs[spec.type] = float(ok.float().mean())
    assert accs["pgd"] < clean, "PGD-L2 at eps=2 should break some samples of a plain net"
    assert accs["authors_pgd"] >= accs["pgd"], accs


# --------------------------------------------------------------------------- suite validation


def _write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


BAD_SUITES = [
    # (id, toml text, words the message must contain: the key and the allowed values)
    pytest.param('[[attack]]\ntype = "deepfool"\nnorm = "L2"\neps = 1.0\n',
                 ["deepfool", "type", "pgd", "apgd", "authors_pgd"], id="unknown-type"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\n', ["eps", "L2"], id="missing-eps-no-grid"),
    pytest.param('[eps]\nLinf = [0.1]\n[[attack]]\ntype = "pgd"\nnorm = "L2"\n', ["eps", "L2"],
                 id="missing-eps-other-norm-grid"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = 1.0\nsteps = -5\n', ["steps", "-5", "positive"],
                 id="negative-steps"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = 1.0\nsteps = 0\n', ["steps", "positive"],
                 id="zero-steps"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = 1.0\nsteps = "ten"\n', ["steps", "ten", "number"],
                 id="steps-string"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = 1.0\nsteps = 2.5\n', ["steps", "whole number"],
                 id="steps-float"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = true\n', ["eps", "True", "number"], id="eps-bool"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = -1.0\n', ["eps", "positive"], id="eps-negative"),
    pytest.param('[eps]\nL2 = [1.0, "two"]\n[[attack]]\ntype = "pgd"\nnorm = "L2"\n', ["eps.L2", "two", "number"],
                 id="grid-string"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L2"\neps = 1.0\nstepz = 3\n',
                 ["stepz", "steps", "step_size", "restarts"], id="unknown-attack-key"),
    pytest.param('nmae = "x"\n[[attack]]\ntype = "clean"\n', ["nmae", "name", "batch_size", "attack"],
                 id="unknown-top-key"),
    pytest.param('[[attack]]\ntype = "pgd"\nnorm = "L3"\neps = 1.0\n', ["norm", "L3", "L2", "Linf"], id="bad-norm"),
    pytest.param('[eps]\nL1 = [1.0]\n[[attack]]\ntype = "clean"\n', ["L1", "L2", "Linf"], id="bad-grid-norm"),
    pytest.param('[[attack]]\ntype = "authors_pgd"\nnorm = "Linf"\neps = 0.1\n', ["authors_pgd", "norm", "L2"],
                 id="authors-pgd-linf"),
    pytest.param('[[attack]]\ntype = "apgd"\nnorm = "L2"\neps = 1.0\nloss = "hinge"\n', ["loss", "hinge", "ce", "dlr"],
                 id="bad-loss"),
    pytest.param('[[attack]]\ntype = "noise"\nsigma = 0.3\nnorm = "L2"\neps = 1.0\n', ["sigma", "norm", "eps"],
                 id="noise-sigma-and-eps"),
    pytest.param('name = "x"\n', ["attack"], id="no-attacks"),
    pytest.param('n = 0\n[[attack]]\ntype = "clean"\n', ["n", "positive"], id="n-zero"),
    pytest.param('batch_size = true\n[[attack]]\ntype = "clean"\n', ["batch_size", "True"], id="batch-size-bool"),
    pytest.param('headline = "L2"\n[[attack]]\ntype = "clean"\n', ["headline", "norm", "eps"], id="bad-headline"),
]


@pytest.mark.parametrize("text,words", BAD_SUITES)
def test_bad_suite_file_raises_suite_error_naming_file_key_and_allowed_values(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert "\n" not in msg  # one line for the CLI


@pytest.mark.parametrize("text,words", BAD_SUITES)
def test_parse_suite_raises_the_same_errors_on_dicts(text, words):
    import tomllib

    with pytest.raises(SuiteError) as ei:
        parse_suite(tomllib.loads(text), where="<mine>")
    assert "<mine>" in str(ei.value)
    for w in words:
        assert w in str(ei.value)


def test_eps_that_is_not_a_table_raises_suite_error():
    # `eps = 2.0` at the top level instead of an [eps] table
    with pytest.raises(SuiteError) as ei:
        parse_suite({"eps": 2.0, "attack": [{"type": "pgd", "norm": "L2"}]}, where="s.toml")
    assert "eps" in str(ei.value) and "s.toml" in str(ei.value)


@pytest.mark.parametrize("raw", [
    pytest.param({"attack": [{"type": "pgd", "norm": "L2", "eps": []}]}, id="attack-eps-empty"),
    pytest.param({"eps": {"L2": []}, "attack": [{"type": "pgd", "norm": "L2"}]}, id="grid-empty"),
])
def test_empty_eps_list_is_an_error_not_a_silently_dropped_attack(raw):
    with pytest.raises(SuiteError) as ei:
        parse_suite(raw, where="s.toml")
    assert "eps" in str(ei.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path, '[[attack]\ntype = "pgd"\n')
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    assert str(path) in str(ei.value) and "TOML" in str(ei.value)


def test_undecodable_file_raises_suite_error(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("name", ["nope/missing.toml", "no-such-suite"])
def test_missing_suite_raises_suite_error_naming_it_and_the_builtins(name):
    with pytest.raises(SuiteError) as ei:
        load_suite(name)
    assert name in str(ei.value) and "demo" in str(ei.value)


def test_a_valid_suite_parses_with_grids_labels_and_headline(tmp_path):
    path = _write(tmp_path, """
name = "mine"
n = 64
batch_size = 32
seed = 5
[eps]
L2 = [0.5, 1.0]
Linf = 0.1
[[attack]]
type = "clean"
[[attack]]
type = "noise"
sigma = 0.3
[[attack]]
type = "apgd"
norm = "L2"
loss = "dlr"
steps = 10
[[attack]]
type = "pgd"
norm = "Linf"
label = "pgd-linf"
[[attack]]
type = "fgsm"
norm = "L2"
eps = 3.0
""")
    s = load_suite(path)
    assert (s.name, s.n, s.batch_size, s.seed, s.path) == ("mine", 64, 32, 5, str(path))
    got = [(a.type, a.label, a.norm, a.eps) for a in s.attacks]
    assert got == [("clean", "clean", None, None), ("noise", "noise", None, 0.3),
                   ("apgd", "apgd-dlr", "L2", 0.5), ("apgd", "apgd-dlr", "L2", 1.0),
                   ("pgd", "pgd-linf", "Linf", 0.1), ("fgsm", "fgsm", "L2", 3.0)]
    assert list(s.grid()) == [("L2", 0.5), ("L2", 1.0), ("L2", 3.0), ("Linf", 0.1)]
    assert s.headline == ("L2", 3.0)
    assert load_suite(s) is s


def test_builtin_demo_suite_loads():
    s = load_suite("demo")
    assert s.name == "demo" and s.headline == ("L2", 2.0)
    assert {a.type for a in s.attacks} == {"clean", "noise", "fgsm", "pgd"}


@pytest.mark.parametrize("name", ["paper-mnist", "curve-l2", "curve-linf", "ci-quick"])
def test_shipped_suites_load(name):
    s = load_suite(SHIPPED / f"{name}.toml")
    assert isinstance(s, Suite) and s.name == name
    assert s.attacks and s.headline is not None
    assert s.headline in s.grid(), "the headline must be a (norm, eps) cell that is attacked"
    assert all(a.type in ATTACK_TYPES for a in s.attacks)


def test_paper_mnist_is_l2_eps2_with_100_steps_and_the_strong_attacks():
    s = load_suite(SHIPPED / "paper-mnist.toml")
    assert s.headline == ("L2", 2.0)
    types = {a.type for a in s.attacks}
    assert {"authors_pgd", "pgd", "apgd", "apgdt", "square"} <= types
    assert {a.params.get("loss", "ce") for a in s.attacks if a.type == "apgd"} == {"ce", "dlr"}
    for a in s.attacks:
        if a.type in ("clean", "noise"):
            continue
        assert (a.norm, a.eps) == ("L2", 2.0), a
        if a.type == "square":
            assert a.params["n_queries"] == 5000  # the black-box check against gradient masking
        elif a.type != "fgsm":
            assert a.params.get("steps") == 100, a
    assert list(s.grid()) == [("L2", 2.0)]
    # AutoAttack's cascade, with the authors' PGD first so that its own column is comparable with theirs
    assert s.cascade
    bounded = [a.type for a in s.attacks if a.bounded and a.type != "fgsm"]
    assert bounded[0] == "authors_pgd" and bounded[-1] == "square"
