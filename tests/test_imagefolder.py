"""``--data DIR``: a folder of class folders of PNG/JPEG images, read with Pillow. Class order, grey vs colour,
hidden entries, and every bad input (a non-image, an empty class, nested folders, mixed sizes, a decompression
bomb) as one line; and the folder evaluated and gated end to end through the CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny import assert_one_line_error, run_cli, suite_toml

from robustclip.data import imagefolder, userdata
from robustclip.errors import DataError


def _img(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _rgb(seed: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _grey(seed: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


def test_classes_follow_sorted_folder_names_and_hidden_entries_are_skipped(tmp_path):
    root = tmp_path / "imgs"
    arrays = {}
    for i, cls in enumerate(["zebra", "Ant", "cat", "10", "2"]):  # sorted: 10, 2, Ant, cat, zebra
        arrays[cls] = _rgb(i)
        _img(root / cls / "a.png", arrays[cls])
    _img(root / ".hidden" / "x.png", _rgb(9))  # a hidden folder: not a class
    _img(root / "cat" / ".thumb.png", _rgb(10, (3, 3)))  # a hidden file, even of another size
    (root / "README.txt").write_text("loose files next to the class folders are not images of a class")
    assert imagefolder.classes(root) == ["10", "2", "Ant", "cat", "zebra"]
    s = userdata.load_data_file(root)
    assert s.x.shape == (5, 3, 6, 5) and s.x.dtype == torch.float32 and s.y.tolist() == [0, 1, 2, 3, 4]
    for k, cls in enumerate(["10", "2", "Ant", "cat", "zebra"]):
        want = torch.from_numpy(arrays[cls].astype(np.float32) / 255).permute(2, 0, 1)
        assert torch.equal(s.x[k], want)
    assert s.dataset.startswith("imgs@") and "5 classes" in s.source


def test_all_grey_stays_one_channel_and_mixed_becomes_rgb(tmp_path):
    grey = tmp_path / "grey"
    g0, g1 = _grey(0), _grey(1)
    _img(grey / "a" / "1.png", g0)
    _img(grey / "b" / "1.png", g1)
    s = imagefolder.load(grey)
    assert s.x.shape == (2, 1, 6, 5)
    assert torch.equal(s.x[1, 0], torch.from_numpy(g1.astype(np.float32) / 255))
    mixed = tmp_path / "mixed"
    _img(mixed / "a" / "1.png", g0)
    _img(mixed / "b" / "1.png", _rgb(2))
    s = imagefolder.load(mixed)
    assert s.x.shape == (2, 3, 6, 5)
    for c in range(3):  # a grey image in a colour set repeats its channel
        assert torch.equal(s.x[0, c], torch.from_numpy(g0.astype(np.float32) / 255))


def test_jpeg_palette_alpha_and_16_bit_images(tmp_path):
    root = tmp_path / "kinds"
    _img(root / "a" / "photo.jpg", _rgb(0, (8, 8)), fmt="JPEG")
    Image.fromarray(_rgb(1, (8, 8))).convert("P").save(root / "a" / "palette.png")
    (root / "b").mkdir()
    Image.fromarray(np.dstack([_rgb(2, (8, 8)), np.full((8, 8), 128, np.uint8)])).save(root / "b" / "rgba.png")
    s = imagefolder.load(root)
    assert s.x.shape == (3, 3, 8, 8) and 0 <= float(s.x.min()) and float(s.x.max()) <= 1
    deep = tmp_path / "deep"
    (deep / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(deep / "a" / "white.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(deep / "a" / "black.png")
    s = imagefolder.load(deep)
    assert s.x.shape == (2, 1, 4, 4) and float(s.x[0].max()) == 0.0 and float(s.x[1].min()) == 1.0


def _good(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    _img(root / "a" / "1.png", _rgb(0))
    _img(root / "b" / "1.png", _rgb(1))
    return root


@pytest.mark.parametrize(("damage", "words"), [
    (lambda r: (r / "b" / "notes.txt").write_text("hello"), ["notes.txt is not a readable PNG or JPEG"]),
    (lambda r: (r / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40)), ["2.png"]),
    (lambda r: Image.fromarray(_rgb(3)).save(r / "b" / "2.bmp"), ["2.bmp is a BMP image, not PNG or JPEG"]),
    (lambda r: (r / "c").mkdir(), ["class folder", "holds no images"]),
    (lambda r: (r / "a" / "sub").mkdir(), ["a folder inside class folder a/"]),
    (lambda r: _img(r / "b" / "2.png", _rgb(4, (7, 5))), ["mixed sizes", "5x7", "5x6"]),
])
def test_bad_folder_is_one_line(tmp_path, damage, words):
    root = _good(tmp_path)
    damage(root)
    with pytest.raises(DataError) as info:
        userdata.load_data_file(root)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_no_class_folders_and_missing_folder(tmp_path):
    (tmp_path / "flat").mkdir()
    _img(tmp_path / "flat" / "x.png", _rgb(0))
    with pytest.raises(DataError, match="has no class subfolders"):
        imagefolder.load(tmp_path / "flat")
    with pytest.raises(DataError, match="does not exist"):
        imagefolder.load(tmp_path / "nowhere")


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    root = tmp_path / "bomb"
    _img(root / "a" / "big.png", _rgb(0, (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: above the warning threshold, below 2x
    with pytest.raises(DataError, match="decompression bomb"):
        imagefolder.load(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # above 2x: Pillow's own error
    with pytest.raises(DataError, match="decompression bomb"):
        imagefolder.load(root)


# --------------------------------------------------------------------------- through the CLI

MODULE = '''\
"""A model for 3x8x8 colour images and 3 classes."""
import torch
from torch import nn


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
'''

SUITE = suite_toml("tiny", n=64, eps=(1.0,), steps=3)


def test_cli_evaluates_and_gates_an_image_folder(tmp_path, monkeypatch):
    name = f"foldernets_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(MODULE, encoding="utf-8")
    (tmp_path / "tiny.toml").write_text(SUITE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    net = importlib.import_module(name).linear()
    torch.save(net.state_dict(), tmp_path / "linear.pt")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    with torch.no_grad():
        y = net(torch.from_numpy(x.astype(np.float32) / 255).permute(0, 3, 1, 2)).argmax(1).tolist()
    for i, (img, label) in enumerate(zip(x, y)):
        _img(tmp_path / "imgs" / ["cat", "dog", "emu"][label] / f"{i:03d}.png", img)
    present = sorted(set(y))
    assert present == [0, 1, 2], "the seeded model should use every class"
    rc, out, err = run_cli(["evaluate", "linear.pt", "--model", f"{name}:linear", "--data", "imgs", "--suite",
                            "tiny.toml", "--out", "ev", "--quiet"])
    assert rc == 0, err
    frame = pd.read_csv(tmp_path / "ev" / "results.csv")
    acc = dict(zip(frame.attack, frame.accuracy))
    assert acc["clean"] == 1.0 and frame.n.iloc[0] == 30 and frame.dataset.iloc[0].startswith("imgs@")
    common = ["--model", f"{name}:linear", "--suite", "tiny.toml", "--baseline", "b.json"]
    assert run_cli(["check", "linear.pt", "--data", "imgs", *common, "--update-baseline"])[0] == 0
    rc, out, err = run_cli(["check", "linear.pt", "--data", "imgs", *common])
    assert rc == 0, out + err
    (tmp_path / "imgs" / "emu" / "broken.png").write_bytes(b"not a png")
    rc, _, err = run_cli(["evaluate", "linear.pt", "--model", f"{name}:linear", "--data", "imgs", "--suite",
                          "tiny.toml", "--out", "ev2", "--quiet"])
    assert_one_line_error(rc, err, "broken.png is not a readable PNG or JPEG image")
    assert not (tmp_path / "ev2").exists()
