"""Bounded memory and devices in the evaluation: batch caps, out-of-memory back-off, chunked predict,
``--device`` on evaluate and check, and the runtime settings recorded in the result's meta."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustclip.attacks.kinds import AttackSpec
from robustclip.attacks.suites import parse_suite
from robustclip.cli import main
from robustclip.core.devices import resolve_device
from robustclip.errors import RobustclipError
from robustclip.evaluation import attacking
from robustclip.evaluation import runner as evaluation


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).eval()


def tiny_data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


class Starved(nn.Module):
    """Wraps a model; any forward pass on more than ``limit`` rows raises ``error``."""

    def __init__(self, inner: nn.Module, limit: int, error: BaseException) -> None:
        super().__init__()
        self.inner, self.limit, self.error, self.refused = inner, limit, error, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            self.refused += 1
            raise self.error
        return self.inner(x)


PGD = AttackSpec("pgd", "pgd", "L2", 0.5, {"steps": 3})


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   MemoryError(), torch.cuda.OutOfMemoryError("out of memory")],
                         ids=["runtime", "memoryerror", "cuda-oom"])
def test_out_of_memory_halves_the_batch_retries_and_records_it(error):
    x, y = tiny_data(32)
    starved = Starved(tiny_model(), limit=8, error=error)
    log: dict = {}
    ok, size = attacking.run_attack(starved, PGD, x, y, n_classes=4, seed=3, batch_size=32, log=log)
    assert log["batch_size"] == 8
    assert [(b["from"], b["to"]) for b in log["backoffs"]] == [(32, 16), (16, 8)]
    assert starved.refused == 2
    # the same as asking for batches of 8 in the first place: nothing was lost or attacked twice
    ref, ref_size = attacking.run_attack(tiny_model(), PGD, x, y, n_classes=4, seed=3, batch_size=8)
    assert torch.equal(ok, ref) and size == ref_size


def test_other_errors_are_not_swallowed():
    x, y = tiny_data(16)
    starved = Starved(tiny_model(), limit=4, error=RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes"):
        attacking.run_attack(starved, PGD, x, y, n_classes=4, seed=0, batch_size=16)


def test_out_of_memory_at_batch_one_gives_up():
    x, y = tiny_data(4)
    with pytest.raises(MemoryError):
        attacking.run_attack(Starved(tiny_model(), limit=0, error=MemoryError()), PGD, x, y, n_classes=4, seed=0,
                              batch_size=4)


def test_memory_heavy_attacks_run_in_capped_batches_on_the_cpu():
    x, y = tiny_data(300)
    log: dict = {}
    spec = AttackSpec("fabt", "fab-t", "L2", 0.5, {"steps": 2})
    attacking.run_attack(tiny_model(), spec, x, y, n_classes=4, seed=0, batch_size=1000, log=log)
    assert log["batch_size"] == attacking.ATTACK_BATCH_CAP["fabt"] < 1000
    for cheap in (PGD, AttackSpec("apgdt", "apgdt", "L2", 0.5, {"steps": 2})):
        log2: dict = {}
        attacking.run_attack(tiny_model(), cheap, x, y, n_classes=4, seed=0, batch_size=1000, log=log2)
        assert log2["batch_size"] == 1000  # PGD, and APGD once its assignments are untracked, keep the suite's batch


def test_untracked_item_assignment_keeps_the_graph_out_of_bookkeeping():
    from robustclip.evaluation.memory import untracked_item_assignment

    x = torch.rand(4, 3, requires_grad=True)
    best = torch.zeros(4, 3)
    best[[0, 2]] = x[[0, 2]] + 0.0
    assert best.requires_grad  # what torchattacks' APGD does: the record joins the graph of every iterate
    best = torch.zeros(4, 3)
    with untracked_item_assignment():
        best[[0, 2]] = x[[0, 2]] + 0.0
        y = (x * 2).sum()  # everything else is still tracked
    assert not best.requires_grad and y.requires_grad
    assert torch.equal(best[[0, 2]], x.detach()[[0, 2]])


@pytest.mark.parametrize("kind,label", [("apgd", "apgd-ce"), ("apgdt", "apgdt")])
def test_untracked_assignment_leaves_apgd_examples_bit_identical(kind, label):
    import torchattacks

    from robustclip.evaluation.memory import untracked_item_assignment

    x, y = tiny_data(48)
    model = tiny_model(2)
    for p_ in model.parameters():
        p_.requires_grad_(False)
    cls = torchattacks.APGD if kind == "apgd" else torchattacks.APGDT
    kw = {"n_classes": 4} if kind == "apgdt" else {}
    plain = cls(model, norm="L2", eps=0.5, steps=10, seed=0, **kw)(x.view(48, 1, 4, 4), y)
    with untracked_item_assignment():
        fixed = cls(model, norm="L2", eps=0.5, steps=10, seed=0, **kw)(x.view(48, 1, 4, 4), y)
    assert torch.equal(plain, fixed)
    assert not torch.equal(plain, x.view(48, 1, 4, 4))  # the attack moved the inputs


def test_predict_in_chunks_equals_one_pass():
    model = tiny_model()
    x, _ = tiny_data(50)
    with torch.no_grad():
        whole = model(x)
    chunked = attacking.predict(model, x, batch_size=7)
    assert chunked.device.type == "cpu" and torch.allclose(chunked, whole, atol=1e-6)


def test_evaluation_meta_records_device_determinism_threads_and_batches():
    x, y = tiny_data(40)
    suite = parse_suite({"name": "t", "batch_size": 16, "attack": [{"type": "clean"},
                                                                   {"type": "pgd", "norm": "L2", "eps": 0.5,
                                                                    "steps": 2}]})
    res = evaluation.evaluate(tiny_model(), x, y, suite=suite, n_classes=4, progress=False, sanity=False,
                              lip_upper=float("inf"))
    m = res.meta
    assert m["device"] == "cpu" and m["torch_threads"] == torch.get_num_threads()
    assert m["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    got = m["attack_batches"]["pgd|L2|0.5"]
    n_clean = int(res.correct[("clean", None, None)].sum())
    assert {k: got[k] for k in ("batch_size", "backoffs", "samples")} == {"batch_size": 16, "backoffs": [],
                                                                         "samples": n_clean}
    assert got["seconds"] >= 0


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(RobustclipError, match="unknown device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(RobustclipError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["evaluate", "reports/paper/checkpoints/mnist-clip-best.safetensors", "--suite", "ci-quick", "--out", "OUT"],
    ["check", "reports/paper/checkpoints/mnist-clip-best.safetensors", "--suite", "ci-quick", "--baseline",
     "OUT/b.json", "--update-baseline"],
], ids=["evaluate", "check"])
def test_cli_device_without_cuda_is_a_one_line_usage_error(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    code = main([a.replace("OUT", str(tmp_path)) for a in argv] + ["--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # failed before writing anything


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_evaluate_model_on_the_gpu_matches_the_cpu(data_dir):
    from robustclip.checkpoints import format as checkpoints
    from robustclip.evaluation import pipeline

    root = Path(__file__).resolve().parent.parent
    model, meta = checkpoints.load(root / "reports" / "paper" / "checkpoints" / "mnist-clip-best.safetensors")
    suite = parse_suite({"name": "g", "n": 64, "batch_size": 32,
                         "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "L2", "eps": 1.0}]})
    ev = pipeline.evaluate_model(model, meta, suite=suite, data_dir=str(data_dir), progress=False, device="cuda")
    assert ev.result is not None and ev.result.meta["device"].startswith("cuda")
    ref = pipeline.evaluate_model(model.cpu(), meta, suite=suite, data_dir=str(data_dir), progress=False)
    assert ev.result.accuracy("clean") == ref.result.accuracy("clean")  # type: ignore[union-attr]
