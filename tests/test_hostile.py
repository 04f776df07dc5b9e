"""Hostile input and faults: every bad input ends in one line ``robustclip: error: <problem> -- <fix>`` and exit 2,
within bounded time and memory, and nothing outside the named output paths is written.

A table of CLI cases per class of defect (non-finite numbers, unbounded reads, divergence, work before failure,
silent coercions, unchecked types), run in-process through ``cli.main``; the cases that could hang (a FIFO,
``/dev/zero``, an 8 GB sparse file) run as real processes under ``subprocess`` timeouts. Hypothesis fuzzes suite
parsing and checkpoint headers: the answer is a result or the module's own error, never another exception.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import assert_one_line_error, run_cli, suite_toml

from robustclip.attacks.kinds import AttackSpec
from robustclip.attacks.suites import Suite, parse_suite
from robustclip.checkpoints import format as checkpoints
from robustclip.checkpoints.format import CheckpointMeta
from robustclip.core import files as _io
from robustclip.core import validate
from robustclip.data import datasets as data
from robustclip.data import idx
from robustclip.errors import CheckpointError, DataError, RobustclipError, SuiteError
from robustclip.evaluation.attacking import run_attack
from robustclip.evaluation.runner import evaluate
from robustclip.models import specs as models

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"arch": "fc", "sizes": [784, 16, 10], "activation": "sigmoid"}
SUITE = suite_toml("hostile", n=16, eps=(1.0,), steps=2)


_main = run_cli




def _save(path: Path, spec: dict[str, Any] = SMALL, *, fill: float | None = None, name: str | None = None) -> Path:
    torch.manual_seed(0)
    m = models.build(spec)
    if fill is not None:
        with torch.no_grad():
            next(m.parameters()).view(-1)[0] = fill
    checkpoints.save(m, path, CheckpointMeta(dataset="mnist", name=name))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    (d / "suite.toml").write_text(SUITE, encoding="utf-8")
    _save(d / "ok.safetensors")
    return {"dir": d, "suite": d / "suite.toml", "ckpt": d / "ok.safetensors"}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if training or an evaluation starts: the bad input must be caught before any work."""
    from robustclip.evaluation import pipeline

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("work started before the bad input was refused")

    monkeypatch.setattr(pipeline, "train_to_checkpoint", boom)
    monkeypatch.setattr(pipeline, "evaluate_checkpoint", boom)


def _suite(tmp_path: Path, *edits: str) -> Path:
    """The tiny suite with each ``old`` of the (old, new) pairs replaced by ``new`` (appended when ``old`` is "")."""
    text = SUITE
    for old, new in zip(edits[::2], edits[1::2]):
        text = text.replace(old, new) if old else text + new
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    return p


TRAIN = ["train", "--dataset", "mnist", "--epochs", "1", "--n-train", "128", "--batch-size", "64", "--quiet"]

# (id, how to build the argv from (work, tmp_path), words the error line must hold)
SUITE_CASES = [
    ("nan-eps", ("L2 = [1.0]", "L2 = [nan]"), ["eps.L2", "finite"]),
    ("inf-eps", ("L2 = [1.0]", "L2 = [inf]"), ["finite"]),
    ("eps-beyond-domain", ("L2 = [1.0]", "L2 = [1e9]"), ["eps.L2"]),
    ("nan-step-size", ("steps = 2", "steps = 2\nstep_size = nan"), ["step_size", "finite"]),
    ("nan-sigma", ("", '\n[[attack]]\ntype = "noise"\nsigma = nan\n'), ["sigma"]),
    ("batch-size-negative", ("batch_size = 16", "batch_size = -1"), ["batch_size"]),
    ("steps-1e9", ("steps = 2", "steps = 1000000000"), ["steps", "10000"]),
    ("budget", ("steps = 2", "steps = 2000", "n = 16", "n = 1000000"), ["sample-steps", "--n"]),
    ("string-steps", ("steps = 2", 'steps = "20"'), ["steps", "'20'"]),
    ("string-eps", ("L2 = [1.0]", 'L2 = ["1.0"]'), ["eps.L2"]),
    ("bool-n", ("n = 16", "n = true"), ["n must be"]),
    ("list-type", ('type = "pgd"', 'type = ["pgd"]'), ["unknown attack type"]),
    ("int-label", ("steps = 2", "steps = 2\nlabel = 3"), ["label"]),
    ("huge-seed", ("seed = 0", "seed = 9223372036854775807"), ["seed"]),
    ("nested-deep", ("", "\nx = " + "[" * 3000 + "]" * 3000 + "\n"), ["suite"]),
]


@pytest.mark.parametrize("edit,words", [(c[1], c[2]) for c in SUITE_CASES], ids=[c[0] for c in SUITE_CASES])
def test_bad_suite_values_end_in_one_line(work, tmp_path, no_work, edit, words):
    suite = _suite(tmp_path, *edit)
    rc, _, err = _main(["evaluate", str(work["ckpt"]), "--suite", str(suite), "--out", str(tmp_path / "o"),
                        "--quiet"])
    assert_one_line_error(rc, err, *words)
    assert not (tmp_path / "o").exists()


TRAIN_CASES = [
    ("nan-lam-step", ["--reg", "clip", "--target-acc", "0.9", "--lam-step", "nan"], ["--lam-step", "finite"]),
    ("inf-lam", ["--reg", "clip", "--lam", "inf"], ["--lam", "finite"]),
    ("nan-target", ["--reg", "clip", "--target-acc", "nan"], ["--target-acc"]),
    ("nan-clip-radius", ["--reg", "clip", "--clip", "radius=NaN"], ["radius", "finite"]),
    ("inf-clip-cap", ["--reg", "clip", "--clip", "cap=1e999"], ["cap", "finite"]),
    ("string-clip-pairs", ["--reg", "clip", "--clip", "pairs=many"], ["pairs"]),
    ("nan-lr", ["--lr", "nan"], ["--lr", "finite"]),
    ("huge-seed", ["--seed", str(10**30)], ["--seed"]),
    ("negative-seed", ["--seed", "-1"], ["--seed"]),
    ("device-foo", ["--device", "foo"], ["device", "cpu"]),
    ("wide-spec", ["--model", '{"arch": "fc", "sizes": [784, 1000000, 10]}'], ["1,000,000"]),
    ("many-params", ["--model", '{"arch": "fc", "sizes": [784, 90000, 90000, 10]}'], ["parameters"]),
    ("deep-spec", ["--model", "{" + '"a":[' * 100 + "]" * 100 + "}"], ["--model", "deep"]),
    ("negative-warmup", ["--warmup", "-1"], ["--warmup"]),
    ("bad-flag-value", ["--lr", "abc"], ["--lr"]),
]


@pytest.mark.parametrize("extra,words", [(c[1], c[2]) for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_flags_end_in_one_line_before_any_work(tmp_path, no_work, extra, words):
    out = tmp_path / "m.safetensors"
    rc, _, err = _main([*TRAIN, *extra, "--out", str(out)])
    assert_one_line_error(rc, err, *words)
    assert list(tmp_path.iterdir()) == []


EVAL_CASES = [
    ("n-negative", ["--n", "-5"], ["--n"]),
    ("n-zero", ["--n", "0"], ["--n"]),
    ("n-huge", ["--n", str(10**9)], ["--n"]),
    ("batch-negative", ["--batch-size", "-1"], ["--batch-size"]),
    ("seed-huge", ["--seed", str(10**30)], ["--seed"]),
    ("n-budget", ["--n", "1000000", "--suite", "paper-mnist"], ["sample-steps"]),
]


@pytest.mark.parametrize("extra,words", [(c[1], c[2]) for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_bad_evaluate_flags_end_in_one_line_before_any_work(work, tmp_path, no_work, extra, words, monkeypatch):
    monkeypatch.chdir(ROOT)  # suite names resolve under ./attacks
    argv = ["evaluate", str(work["ckpt"]), "--suite", str(work["suite"]), "--out", str(tmp_path / "o"), "--quiet"]
    rc, _, err = _main([*argv, *extra])
    assert_one_line_error(rc, err, *words)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- checkpoints


def _raw_checkpoint(header: Any, body: bytes = b"") -> bytes:
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h)) + h + body


def test_checkpoint_with_infinite_weights_is_refused(work, tmp_path):
    bad = _save(tmp_path / "inf.safetensors", fill=float("inf"))
    rc, _, err = _main(["evaluate", str(bad), "--suite", str(work["suite"]), "--out", str(tmp_path / "o"), "--quiet"])
    assert_one_line_error(rc, err, "NaN or infinite weights", "learning rate")
    with pytest.raises(CheckpointError, match="infinite"):
        checkpoints.load(_save(tmp_path / "nan.safetensors", fill=float("nan")))


def test_deeply_nested_header_is_refused_without_recursion(tmp_path):
    p = tmp_path / "deep.safetensors"
    p.write_bytes(_raw_checkpoint(b"[" * 200_000 + b"]" * 200_000))
    with pytest.raises(CheckpointError, match="nested 200000 levels"):
        checkpoints.load(p)
    meta = '{"format": "robustclip-checkpoint", "model": ' + "[" * 5000 + "]" * 5000 + "}"
    p.write_bytes(_raw_checkpoint({"__metadata__": {"robustclip": meta}}))
    with pytest.raises(CheckpointError, match="nested"):
        checkpoints.load(p)


def test_huge_spec_in_a_header_is_refused_before_allocation(tmp_path):
    m = models.build(SMALL)
    state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    doc = {"format": "robustclip-checkpoint", "format_version": 1, "dataset": "mnist",
           "model": {"arch": "fc", "sizes": [784, 1_000_000, 10]}, "weights_sha256": checkpoints.weights_digest(state)}
    from safetensors.torch import save as st_save

    p = tmp_path / "wide.safetensors"
    p.write_bytes(st_save(state, metadata={"robustclip": json.dumps(doc)}))
    with pytest.raises(CheckpointError, match="invalid model spec"):
        checkpoints.load(p)


def test_folder_and_device_as_checkpoint(work, tmp_path):
    rc, _, err = _main(["evaluate", str(tmp_path), "--suite", str(work["suite"]), "--out", str(tmp_path / "o")])
    assert_one_line_error(rc, err, "folder")
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoints.load("/dev/zero")


# --------------------------------------------------------------------------- hangs and huge reads: real processes


def _run_cli(args: list[str], timeout: float = 60) -> tuple[int, str, int]:
    """``python -m robustclip ARGS`` under a timeout: (status, stderr, peak child RSS in bytes so far)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "robustclip", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return proc.returncode, proc.stderr, peak


@pytest.mark.parametrize("kind", ["fifo-checkpoint", "dev-zero-checkpoint", "sparse-8gb-checkpoint", "fifo-suite"])
def test_unbounded_inputs_end_in_one_line_in_bounded_time_and_memory(work, tmp_path, kind):
    ckpt, suite = str(work["ckpt"]), str(work["suite"])
    if kind.startswith("fifo"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)  # opening it for reading would block forever: nobody writes
        if kind == "fifo-checkpoint":
            ckpt = str(fifo)
        else:
            suite = str(fifo)
    elif kind == "dev-zero-checkpoint":
        ckpt = "/dev/zero"
    else:
        sparse = tmp_path / "sparse.safetensors"
        with open(sparse, "wb") as fh:
            fh.truncate(8 << 30)  # 8 GB of holes: no disk used
        ckpt = str(sparse)
    rc, err, peak = _run_cli(["evaluate", ckpt, "--suite", suite, "--out", str(tmp_path / "o"), "--quiet"])
    assert_one_line_error(rc, err)
    assert peak < 4 << 30, peak
    assert not (tmp_path / "o").exists()


def test_gzip_bomb_posing_as_idx_is_refused(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (d / stem).write_bytes(b"")
    header = struct.pack(">iiii", 2051, 10000, 28, 28)
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb", compresslevel=9) as fh:
        fh.write(header)
        zeros = bytes(1 << 20)
        for _ in range(64):  # 64 MB inflated from about 64 kB: more than any official IDX file
            fh.write(zeros)
    assert (d / "t10k-images-idx3-ubyte.gz").stat().st_size < 1 << 20
    with pytest.raises(DataError, match="inflates to more than"):
        data.load("mnist", "test", data_dir=tmp_path)


def test_idx_file_that_is_a_fifo_is_refused(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (d / stem).write_bytes(b"")
    os.mkfifo(d / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="not a regular file"):
        idx._read_bytes(d / "t10k-images-idx3-ubyte")


# --------------------------------------------------------------------------- divergence and interruption


def test_exploding_learning_rate_stops_the_run_and_saves_nothing(tmp_path, data_dir):
    out = tmp_path / "m.safetensors"
    rc, _, err = _main([*TRAIN, "--lr", "1e30", "--out", str(out), "--data-dir", str(data_dir)])
    assert_one_line_error(rc, err, "diverged", "epoch 1", "--lr")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_before_the_first_epoch_saves_nothing_and_exits_130(tmp_path, data_dir, monkeypatch):
    from robustclip.training import trainer as training

    def interrupted(self: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "epoch", interrupted)
    out = tmp_path / "m.safetensors"
    rc, _, err = _main([*TRAIN, "--out", str(out), "--data-dir", str(data_dir)])
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_after_an_epoch_saves_a_checkpoint_marked_partial(tmp_path, data_dir, monkeypatch):
    from robustclip.training import trainer as training

    real = training.Trainer.epoch

    def second_interrupted(self: Any) -> dict[str, Any]:
        if self.history:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(training.Trainer, "epoch", second_interrupted)
    out = tmp_path / "m.safetensors"
    rc, _, err = _main([*TRAIN, "--epochs", "3", "--out", str(out), "--data-dir", str(data_dir)])
    assert rc == 130, err
    meta = checkpoints.read_meta(out)
    assert meta["status"] == "partial" and meta.train["interrupted"] is True
    assert meta.train["epochs_run"] == 1 and meta.train["best_epoch"] == 1


# --------------------------------------------------------------------------- outputs checked before the work


def test_output_paths_are_checked_before_any_work(work, tmp_path, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc, _, err = _main([*TRAIN, "--out", str(a_file / "m.safetensors")])
    assert_one_line_error(rc, err, "not a folder")
    rc, _, err = _main([*TRAIN, "--out", str(tmp_path)])
    assert_one_line_error(rc, err, "folder")
    rc, _, err = _main(["evaluate", str(work["ckpt"]), "--suite", str(work["suite"]), "--out", str(a_file)])
    assert_one_line_error(rc, err, "is a file")
    assert a_file.read_text() == "x"


def test_existing_outputs_are_not_overwritten_without_force(work, tmp_path, no_work):
    ckpt = _save(tmp_path / "old.safetensors")
    before = ckpt.read_bytes()
    rc, _, err = _main([*TRAIN, "--out", str(ckpt)])
    assert_one_line_error(rc, err, "already exists", "--force")
    assert ckpt.read_bytes() == before
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "results.csv").write_text("mine")
    rc, _, err = _main(["evaluate", str(work["ckpt"]), "--suite", str(work["suite"]), "--out", str(tmp_path / "ev")])
    assert_one_line_error(rc, err, "results.csv", "--force")
    assert (tmp_path / "ev" / "results.csv").read_text() == "mine"
    assert validate.output_file(ckpt, force=True) == ckpt


def test_unwritable_output_folder_is_refused_first(tmp_path, monkeypatch):
    import tempfile

    def denied(*a: Any, **k: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # what a read-only folder does (root ignores chmod)
    with pytest.raises(RobustclipError, match="cannot write"):
        validate.output_file(tmp_path / "m.safetensors")
    with pytest.raises(RobustclipError, match="cannot write"):
        validate.output_dir(tmp_path / "new" / "eval", ("results.csv",))


def test_checkpoints_with_the_same_name_keep_distinct_rows(work, tmp_path, data_dir):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _save(tmp_path / sub / "clip.safetensors", fill=0.5 if sub == "a" else -0.5)
    out = tmp_path / "ev"
    rc, _, err = _main(["evaluate", str(tmp_path / "a" / "clip.safetensors"), str(tmp_path / "b" / "clip.safetensors"),
                        "--suite", str(work["suite"]), "--out", str(out), "--quiet", "--data-dir", str(data_dir)])
    assert rc == 0, err
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {r["model"] for r in rows} == {"a/clip", "b/clip"}
    lips = json.loads((out / "lipschitz.json").read_text(), parse_constant=_no_constant)
    assert [lp["model"] for lp in lips] == ["a/clip", "b/clip"]
    rc, _, err = _main(["evaluate", str(work["ckpt"]), str(work["ckpt"]), "--suite", str(work["suite"]),
                        "--out", str(tmp_path / "twice")])
    assert_one_line_error(rc, err, "twice")


# --------------------------------------------------------------------------- honest output


def _no_constant(name: str) -> None:
    raise AssertionError(f"invalid JSON token {name}")


def test_json_output_is_always_valid_json(tmp_path):
    p = tmp_path / "x.json"
    _io.write_json(p, {"upper": float("inf"), "lower": float("nan"), "ok": [1.0, torch.tensor(float("nan"))]})
    doc = json.loads(p.read_text(), parse_constant=_no_constant)
    assert doc == {"upper": None, "lower": None, "ok": [1.0, None]}


def test_outputs_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        _io.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_nan_adversarial_examples_count_as_wrong_and_are_flagged():
    torch.manual_seed(0)
    m = models.build(SMALL).eval()
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))
    stats: dict[str, int] = {}
    ok, _ = run_attack(m, AttackSpec("pgd", "pgd", "L2", float("nan"), {"steps": 2}), x, y, n_classes=10, seed=0,
                       batch_size=5, stats=stats)
    assert not ok.any() and stats["nonfinite"] == 12

    class NanOffData(torch.nn.Module):
        """Right on the clean inputs, NaN on anything else: argmax of NaN logits must never count as right."""

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            match = (z.flatten(1)[:, None, :] == x.flatten(1)[None]).all(2)  # (len(z), len(x))
            logits = torch.nn.functional.one_hot(y[match.int().argmax(1)], 10).float()
            return torch.where(match.any(1, keepdim=True), logits, torch.full_like(logits, float("nan")))

    suite = parse_suite({"n": 12, "batch_size": 12, "attack": [{"type": "clean"}, {"type": "noise", "sigma": 0.1}]})
    with pytest.warns(UserWarning):
        res = evaluate(NanOffData(), x, y, suite=suite, n_classes=10, sanity=False, progress=False, lip_upper=1.0)
    assert res.accuracy("clean") == 1.0 and res.accuracy("noise") == 0.0
    assert any("ATTACK MALFUNCTION" in f and "12 samples" in f for f in res.flags), res.flags
    assert res.meta["nonfinite_outputs"] == {"noise|None|0.1": 12}


# --------------------------------------------------------------------------- reports


def _fake_sweep(tmp_path: Path, eval_text: str) -> Path:
    sw = tmp_path / "sweep"
    (sw / "runs" / "r1").mkdir(parents=True)
    (sw / "sweep.json").write_text(json.dumps({"sweep": {"name": "s"}, "digests": {"r1": "d"}}))
    (sw / "runs" / "r1" / "eval.json").write_text(eval_text)
    (sw / "runs" / "r1" / "model.safetensors").write_bytes(b"weights")
    files = {n: _io.sha256_file(sw / "runs" / "r1" / n) for n in ("model.safetensors", "eval.json")}
    (sw / "runs" / "r1" / "manifest.json").write_text(json.dumps({"digest": "d", "files": files}))  # as written
    return sw


ROW = {"run": "r1", "label": "none", "dataset": "mnist", "method": "none", "lam": 0.0, "tau": None, "seed": 0,
       "attack": "clean", "norm": "none", "eps": 0.0, "accuracy": 0.9, "n": 16}


@pytest.mark.parametrize("text,words", [
    (json.dumps({"rows": [ROW]})[:25], ["not valid JSON"]),
    (json.dumps({"rows": [{k: v for k, v in ROW.items() if k != "seed"}]}), ["lacks seed"]),
    (json.dumps({"rows": [{**ROW, "seed": "zero"}]}), ["seed"]),
    (json.dumps({"rows": []}), ["no result rows"]),
    ("[" * 100_000 + "]" * 100_000, ["nested"]),
], ids=["truncated", "row-without-seed", "string-seed", "no-rows", "deep"])
def test_report_on_a_broken_run_file_is_one_line(tmp_path, text, words):
    sw = _fake_sweep(tmp_path, text)
    rc, _, err = _main(["report", str(sw), "--out", str(tmp_path / "rep")])
    assert_one_line_error(rc, err, "eval.json", *words)
    assert not (tmp_path / "rep").exists()


# --------------------------------------------------------------------------- fuzzing

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.sampled_from(["L2", "Linf", "pgd", "clean", "noise", "fgsm", "apgd", "ce", "dlr", "standard"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=8)
_attack_keys = st.sampled_from(["type", "norm", "eps", "steps", "step_size", "restarts", "sigma", "samples", "label",
                                "loss", "version", "bogus"])
_attack = st.dictionaries(_attack_keys, _values, max_size=6) | st.fixed_dictionaries(
    {"type": st.sampled_from(["pgd", "fgsm", "noise", "apgd", "apgdt", "autoattack", "authors_pgd", "clean"]),
     "norm": st.sampled_from(["L2", "Linf"]) | _scalars},
    optional={"eps": _values, "steps": _values, "step_size": _values, "restarts": _values, "sigma": _values})
_suite_dict = st.fixed_dictionaries({}, optional={
    "name": _values, "description": _values, "n": _values, "batch_size": _values, "seed": _values,
    "eps": st.dictionaries(st.sampled_from(["L2", "Linf", "L1"]), _values, max_size=2) | _values,
    "attack": st.lists(_attack, max_size=3) | _values, "headline": _values, "extra": _values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_suite_dict)
def test_fuzzed_suites_parse_or_raise_suite_error(raw):
    try:
        s = parse_suite(raw)
    except SuiteError as exc:
        assert exc.fix and "\n" not in str(exc)
    else:
        assert isinstance(s, Suite) and s.attacks
        assert all(a.eps is None or 0 < a.eps < float("inf") for a in s.attacks)
        assert s.budget() <= 1_000_000_000


_meta_keys = st.sampled_from(["format", "format_version", "model", "dataset", "train", "history", "extra", "name",
                              "metrics", "weights_sha256"])


@pytest.fixture(scope="module")
def good_doc(work) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    meta = checkpoints._read(work["ckpt"])[1]
    return load_file(work["ckpt"]), meta


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_meta_keys, _values, max_size=4),
       st.dictionaries(st.sampled_from(["arch", "sizes", "activation", "output_activation", "mean", "std",
                                        "num_classes"]), _values, max_size=4))
def test_fuzzed_checkpoint_metadata_loads_or_raises_checkpoint_error(good_doc, tmp_path_factory, meta_edit, spec_edit):
    from safetensors.torch import save as st_save

    state, meta = good_doc
    doc = {**meta, **meta_edit}
    if isinstance(doc.get("model"), dict):
        doc["model"] = {**doc["model"], **spec_edit}
    p = tmp_path_factory.mktemp("fuzz") / "c.safetensors"
    p.write_bytes(st_save(state, metadata={"robustclip": json.dumps(doc)}))
    try:
        model, m = checkpoints.load(p)
    except CheckpointError as exc:
        assert exc.fix and "\n" not in str(exc)
    else:
        assert isinstance(m, CheckpointMeta) and isinstance(model, torch.nn.Module)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_values, st.dictionaries(st.text(max_size=8), st.dictionaries(st.sampled_from(
    ["dtype", "shape", "data_offsets", "robustclip"]), _values, max_size=3), max_size=3)), st.binary(max_size=64))
def test_fuzzed_safetensors_headers_raise_checkpoint_error(tmp_path_factory, header, body):
    p = tmp_path_factory.mktemp("fuzz") / "h.safetensors"
    p.write_bytes(_raw_checkpoint(header, body))
    with pytest.raises(CheckpointError):
        checkpoints.load(p)
