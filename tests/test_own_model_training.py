"""Your own model across λ (issue 34, items 1 and 2): ``robustclip train`` and ``robustclip sweep`` take a user's
factory (``--model MODULE:CALLABLE``) and data (``--data`` arrays or an image folder, ``--test-data``), with every
regulariser of the registry, a stratified seeded validation split, and a checkpoint that records where it came from
and imports nothing until the user names the factory again. Bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny import assert_one_line_error, one_thread, run_cli, suite_toml

from robustclip.checkpoints import foreign as loading
from robustclip.checkpoints import format as checkpoints
from robustclip.data import datasets as data
from robustclip.errors import CheckpointError, RobustclipError
from robustclip.training.config import TrainConfig
from robustclip.training.regularizers.registry import REGISTRY
from robustclip.training.trainer import train

NETS = '''import pathlib

import torch
from torch import nn

pathlib.Path(__file__).with_suffix(".imported").write_text("yes")


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


def res_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), Block(4),
                         nn.Flatten(), nn.Linear(4 * 14 * 14, 10))


def tab_mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def three_outputs_cnn():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))


def raises():
    raise ValueError("no GPU here")


def exits():
    raise SystemExit(3)


def not_a_module():
    return "a string"
'''


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _tabular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in [0, 1]^6, classes balanced."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[0.2] * 6, [0.5] * 6, [0.8] * 6])
    x = np.clip(centres[y] + rng.normal(0, 0.05, size=(n, 6)), 0, 1).astype(np.float32)
    return x, y.astype(np.int64)


@pytest.fixture
def user(tmp_path, monkeypatch) -> Path:
    """The user's folder (the current one): their module, tabular train/test arrays and a tiny suite."""
    (tmp_path / "mynets.py").write_text(NETS, encoding="utf-8")
    monkeypatch.delitem(sys.modules, "mynets", raising=False)  # each test imports its own folder's module
    for name, n, seed in (("tab_train.npz", 240, 0), ("tab_test.npz", 60, 1)):
        x, y = _tabular(n, seed)
        np.savez(tmp_path / name, x=x, y=y)
    (tmp_path / "tiny.toml").write_text(suite_toml(n=30, eps=(0.2,), steps=2), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def mnist_files(user, mnist_train, mnist_test) -> Path:
    """A 500-image slice of MNIST as .npz, the same slice as an image folder, and 100 test images."""
    np.savez(user / "train.npz", x=mnist_train.x[:500].numpy(), y=mnist_train.y[:500].numpy())
    np.savez(user / "test.npz", x=mnist_test.x[:100].numpy(), y=mnist_test.y[:100].numpy())
    for i in range(500):
        img = (mnist_train.x[i, 0].numpy() * 255).round().astype(np.uint8)
        folder = user / "imgs" / str(int(mnist_train.y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    return user


# --------------------------------------------------------------------------- train any model


@pytest.mark.data
@pytest.mark.parametrize("source", ["train.npz", "imgs"])
def test_train_a_users_residual_cnn_on_arrays_or_an_image_folder(mnist_files, source):
    rc_, out, err = run_cli(["train", "--model", "mynets:res_cnn", "--data", source, "--test-data", "test.npz",
                             "--reg", "clip", "--lam", "0.05", "--epochs", "3", "--optimizer", "adam", "--lr", "0.003",
                             "--seed", "3", "--out", "mine.safetensors", "--quiet"])
    assert rc_ == 0, err
    assert "test_acc" in out
    doc = checkpoints.read_meta(mnist_files / "mine.safetensors")
    assert doc["factory"] == "mynets:res_cnn" and doc["model"] is None
    assert doc["dataset"].startswith(f"{source}@")  # the data's name and content digest
    assert "validation indices sha256" in doc["data"]["validation"]
    assert doc["train"]["method"] == "clip" and doc["train"]["lam"] == 0.05 and doc["train"]["seed"] == 3
    assert len(doc["history"]) == 3 and 0.0 <= doc["metrics"]["test_acc"] <= 1.0
    assert doc["metrics"]["val_acc"] > 0.3  # three epochs of Adam on 450 digits learn something


@pytest.mark.data
def test_a_trained_users_checkpoint_imports_nothing_until_the_factory_is_named(mnist_files, monkeypatch):
    rc_, _, err = run_cli(["train", "--model", "mynets:res_cnn", "--data", "train.npz", "--epochs", "1",
                           "--out", "m.safetensors", "--quiet"])
    assert rc_ == 0, err
    marker = mnist_files / "mynets.imported"
    marker.unlink()
    monkeypatch.delitem(sys.modules, "mynets")  # as in a new process: the module is not loaded yet
    with pytest.raises(CheckpointError, match="saved with factory mynets:res_cnn"):
        loading.load_model(mnist_files / "m.safetensors")
    assert not marker.exists()
    model, meta = loading.load_model(mnist_files / "m.safetensors", model="mynets:res_cnn")
    assert marker.exists() and meta["factory"] == "mynets:res_cnn"
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("reg", list(REGISTRY))
def test_every_regulariser_trains_a_users_tabular_mlp(user, reg):
    lam = REGISTRY[reg].default_lam if REGISTRY[reg].takes_lam else 0.0
    cfg = TrainConfig.for_dataset("custom", factory="mynets:tab_mlp", data="tab_train.npz", reg=reg, lam=lam,
                                  epochs=8, batch_size=16, optimizer="adam", lr=0.02, adversarial={"eps": 0.1},
                                  settings={"margin": {"eps": 0.1}}, seed=0)
    cfg.validate()
    res = train(cfg, progress=False)
    assert len(res.history) == 8 and res.meta.factory == "mynets:tab_mlp"
    assert res.meta.metrics["val_acc"] > 0.5  # above chance (1/3) on the separable blobs, whatever the penalty


def test_certified_training_refuses_batchnorm_in_one_line_before_training(user):
    rc_, _, err = run_cli(["train", "--model", "mynets:res_cnn", "--data", "imgs_missing", "--out", "c.safetensors"])
    assert_one_line_error(rc_, err, "--data imgs_missing does not exist")
    x = np.random.default_rng(0).random((20, 1, 28, 28)).astype(np.float32)
    np.savez(user / "img.npz", x=x, y=np.arange(20) % 10)
    rc_, _, err = run_cli(["train", "--model", "mynets:res_cnn", "--data", "img.npz", "--reg", "lipschitz-margin",
                           "--out", "c.safetensors"])
    assert_one_line_error(rc_, err, "lipschitz-margin cannot bound this model", "BatchNorm2d")
    assert not (user / "c.safetensors").exists()


@pytest.mark.parametrize(("factory", "words"), [
    ("mynets:raises", ["raised ValueError", "no GPU here"]),
    ("mynets:exits", ["SystemExit"]),
    ("mynets:not_a_module", ["str", "nn.Module"]),
    ("nosuchmodule:net", ["nosuchmodule"]),
])
def test_a_factory_that_fails_is_one_line_and_writes_nothing(user, factory, words):
    rc_, _, err = run_cli(["train", "--model", factory, "--data", "tab_train.npz", "--out", "x.safetensors"])
    assert_one_line_error(rc_, err, *words)
    assert not (user / "x.safetensors").exists()


def test_labels_beyond_the_models_outputs_and_bad_numbers_are_one_line(user):
    x = np.random.default_rng(0).random((30, 1, 28, 28)).astype(np.float32)
    np.savez(user / "ten.npz", x=x, y=np.arange(30) % 10)
    cases = [
        (["--model", "mynets:three_outputs_cnn", "--data", "ten.npz"], ["label 9", "3 outputs"]),
        (["--model", "mynets:tab_mlp", "--data", "ten.npz"], ["fails on a (2, 1, 28, 28) batch"]),
        (["--model", "mynets:tab_mlp", "--data", "tab_train.npz", "--lam", "nan", "--reg", "clip"], ["nan"]),
        (["--model", "mynets:tab_mlp", "--data", "tab_train.npz", "--dataset", "mnist"], ["two training sets"]),
        (["--model", "mynets:tab_mlp", "--data", "tab_train.npz", "--test-data", "ten.npz"], ["fails on a"]),
    ]
    for flags, words in cases:
        rc_, _, err = run_cli(["train", *flags, "--epochs", "1", "--out", "x.safetensors", "--quiet"])
        assert_one_line_error(rc_, err, *words)
        assert not (user / "x.safetensors").exists()


def test_force_never_replaces_the_training_data_or_the_factory(user):
    before = {p: (user / p).read_bytes() for p in ("tab_train.npz", "mynets.py")}
    for target in before:
        rc_, _, err = run_cli(["train", "--model", "mynets:tab_mlp", "--data", "tab_train.npz", "--out", target,
                               "--force"])
        assert_one_line_error(rc_, err, "input of this command")
    assert before == {p: (user / p).read_bytes() for p in before}


def test_the_validation_split_is_seeded_and_stratified():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    s = data.Split(torch.arange(100.0).reshape(100, 1), y, "d", "train", "t")
    train_a, val_a, digest_a = data.stratified_split(s, val_fraction=0.1, seed=5)
    train_b, val_b, digest_b = data.stratified_split(s, val_fraction=0.1, seed=5)
    _, val_c, digest_c = data.stratified_split(s, val_fraction=0.1, seed=6)
    assert torch.equal(val_a.x, val_b.x) and digest_a == digest_b and digest_a != digest_c
    assert torch.bincount(val_a.y).tolist() == [5, 3, 2]  # 10% of every class
    assert len(train_a) + len(val_a) == 100
    assert not set(train_a.x.flatten().tolist()) & set(val_a.x.flatten().tolist())


# --------------------------------------------------------------------------- sweep any model


def _study(**extra: Any) -> str:
    lines = ['name = "tab-study"', 'model = "mynets:tab_mlp"', 'data = "tab_train.npz"',
             'test_data = "tab_test.npz"', 'suite = "tiny.toml"', "epochs = 8", "seeds = [0]",
             'train = { optimizer = "adam", lr = 0.02, batch_size = 16 }', "n_val = 0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ['\n[[method]]\nreg = "none"', '\n[[method]]\nreg = "clip"\nlam = [0.01, 0.1]',
              '\n[[method]]\nreg = "weight"\nlam = [0.001]']
    return "\n".join(lines) + "\n"


def test_a_sweep_of_a_users_model_runs_lists_and_reports(user):
    (user / "study.toml").write_text(_study(), encoding="utf-8")
    rc_, out, err = run_cli(["sweep", "study.toml", "--out", "sw", "--list"])
    assert rc_ == 0, err
    assert out.count("\ttodo") == 4 and "custom-clip-lam0.1-s0" in out
    rc_, out, err = run_cli(["sweep", "study.toml", "--out", "sw", "--run-index", "1", "--quiet"])
    assert rc_ == 0, err
    rc_, out, err = run_cli(["sweep", "study.toml", "--out", "sw", "--quiet"])
    assert rc_ == 0, err
    table = pd.read_csv(user / "sw" / "results.csv")
    assert sorted(set(table.run)) == ["custom-clip-lam0.01-s0", "custom-clip-lam0.1-s0", "custom-none-s0",
                                      "custom-weight-lam0.001-s0"]
    clean = table[table.attack == "clean"]
    assert (clean.n == 30).all() and (clean.accuracy > 0.5).all()  # evaluated on the held-out test arrays
    ckpt = next((user / "sw" / "runs").glob("custom-clip-lam0.1-s0/model.safetensors"))
    assert checkpoints.read_meta(ckpt)["factory"] == "mynets:tab_mlp"
    rc_, _, err = run_cli(["report", "sw", "--out", "rep"])
    assert rc_ == 0, err
    assert (user / "rep" / "index.html").is_file()


def test_a_module_missing_for_one_experiment_is_a_recorded_failure_while_the_rest_finish(user):
    text = _study() + '\n[[experiment]]\nlabel = "gone"\nmodel = "vanished_module:net"\n\n[[experiment]]\n' \
                      'label = "here"\n'
    (user / "study.toml").write_text(text, encoding="utf-8")
    rc_, out, err = run_cli(["sweep", "study.toml", "--out", "sw", "--quiet"])
    assert rc_ == 1
    failures = list((user / "sw" / "runs").glob("gone-*/failure.json"))
    assert len(failures) == 4
    message = json.loads(failures[0].read_text())["error"]
    assert "vanished_module" in message and "\n" not in message
    assert len(set(pd.read_csv(user / "sw" / "results.csv").run)) == 4  # the "here" runs all finished


def test_sweep_flags_take_a_users_model_and_data(user):
    rc_, out, err = run_cli(["sweep", "--model", "mynets:tab_mlp", "--data", "tab_train.npz", "--test-data",
                             "tab_test.npz", "--method", "clip:0.1", "--suite", "tiny.toml", "--out", "fl", "--list"])
    assert rc_ == 0, err
    assert "custom-clip-lam0.1-s0\ttodo" in out


@pytest.mark.parametrize(("extra", "words"), [
    ({"dataset": "mnist"}, ["two training sets"]),
    ({"test_data": 3}, ["test_data must be a path"]),
    ({"model": "fc"}, ["data needs a model"]),
    ({"model": "not a ref"}, ["model"]),
    ({"lipschitz": "slow"}, ["lipschitz must be full, fast or off"]),
])
def test_bad_sweep_sources_are_one_line(user, extra, words):
    text = _study().replace('model = "mynets:tab_mlp"\n', "").replace('test_data = "tab_test.npz"\n', "")
    text = "\n".join([*(f"{k} = {json.dumps(v)}" for k, v in extra.items())]) + "\n" + text
    if "test_data" not in extra:
        text = 'test_data = "tab_test.npz"\n' + text
    if "model" not in extra:
        text = 'model = "mynets:tab_mlp"\n' + text
    (user / "bad.toml").write_text(text, encoding="utf-8")
    rc_, _, err = run_cli(["sweep", "bad.toml", "--out", "sw", "--list"])
    assert_one_line_error(rc_, err, *words)


def test_plain_training_rejects_an_unknown_dataset_without_data():
    with pytest.raises(RobustclipError, match="dataset custom needs the training data"):
        TrainConfig(dataset="custom").validate()


def test_a_sweep_never_writes_into_its_data(user):
    folder = user / "imgs"
    for k in range(3):
        (folder / f"c{k}").mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 40 * k, np.uint8)).save(folder / f"c{k}" / "0.png")
    (user / "study.toml").write_text(_study().replace('data = "tab_train.npz"', 'data = "imgs"'), encoding="utf-8")
    rc_, _, err = run_cli(["sweep", "study.toml", "--out", "imgs/runs", "--quiet"])
    assert_one_line_error(rc_, err, "--out imgs/runs", "input of this sweep")
    assert sorted(p.name for p in folder.iterdir()) == ["c0", "c1", "c2"]
