"""A user's image folder as an evaluation set: one subfolder per class of PNG or JPEG images (``--data DIR``).

``DIR/<class>/<image>``: class indices follow the sorted subfolder names, as in torchvision's ``ImageFolder``;
hidden folders and files (names starting with ``.``) are skipped, and so are loose files next to the class
folders. Images are read with Pillow and become float32 in ``[0, 1]``: ``(N, 1, H, W)`` when every image is grey,
else ``(N, 3, H, W)`` RGB (grey images then repeat their one channel, palette and alpha images are converted).
Every image must have the same size. Checked where it enters, each with one line: a file that is not a readable
PNG or JPEG, an empty class folder, a folder nested inside a class folder, mixed sizes, and a decompression bomb
(Pillow's warning is an error here).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import Split

FORMATS = ("PNG", "JPEG")
GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L")
MAX_IMAGES = 1_000_000
"""The most images one folder may hold."""
MAX_VALUES = 2**28
"""The most input values (N × C × H × W) a folder may hold (1 GiB as float32), as for a ``--data`` file."""
MAX_FILE_BYTES = 256 * 1024**2
"""The largest single image file opened."""

_FIX = "give one subfolder per class holding only PNG or JPEG images of one size"


def _visible(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(f"cannot list folder {path}: {exc.strerror or exc}", "check the path and permissions") from None


def classes(root: str | os.PathLike[str]) -> list[str]:
    """The class names of image folder ``root``: its visible subfolders, sorted; index ``i`` is class ``i``."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"image folder {r} {'is not a folder' if r.exists() else 'does not exist'}", _FIX)
    names = [p.name for p in _visible(r) if p.is_dir()]
    for name in names:  # class names go into tables, reports and console lines: printable text only
        if not _text_name(name):
            raise DataError(f"class folder {(r / name)!r} has a name that is not printable UTF-8 text (a newline, a "
                            "control character or undecodable bytes)", "rename the folder to the class's name")
    return names


def _text_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes of a file name that are not UTF-8
        return False
    return name.isprintable()


def _read(path: Path) -> np.ndarray:
    """One image as an array: ``(H, W)`` grey (uint8 or uint16) or ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    from ..core.validate import open_file

    fix = "remove it or replace it with a PNG or JPEG image"
    try:
        # regular files only, bounded, opened without blocking: a FIFO or a link to /dev/stdin is refused
        with open_file(path, "image", max_bytes=MAX_FILE_BYTES, error=DataError) as fh, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                if img.format not in FORMATS:
                    raise DataError(f"{path} is a {img.format} image, not PNG or JPEG", fix)
                img.load()
                if img.mode in GREY_MODES:
                    grey = img.convert("I;16") if img.mode.startswith("I;16") else img.convert("L")
                    return np.asarray(grey)
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is a decompression bomb ({' '.join(str(exc).split())[:120]})", fix) from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not a readable PNG or JPEG image", fix) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {' '.join(str(exc).split())[:160]}", fix) from None


def load(root: str | os.PathLike[str]) -> Split:
    """The images of folder ``root`` as a :class:`~robustclip.data.datasets.Split`: ``x`` float32 ``(N, C, H, W)`` in
    ``[0, 1]`` (C = 1 when every image is grey, else 3), ``y`` int64 ``(N,)``, the class index by sorted folder
    name. ``dataset`` names the folder and a digest of its files, so a baseline made on other images is refused.
    Raises :class:`DataError` (one line) for anything but a folder of class folders of equal-size images."""
    r = Path(root)
    names = classes(r)
    if not names:
        raise DataError(f"image folder {r} has no class subfolders", _FIX)
    files: list[tuple[Path, int]] = []
    for k, name in enumerate(names):
        entries = _visible(r / name)
        nested = [p for p in entries if p.is_dir()]
        if nested:
            raise DataError(f"{nested[0]} is a folder inside class folder {name}/", "put the images of each class "
                            "directly in its class folder (one level)")
        if not entries:
            raise DataError(f"class folder {r / name} holds no images", "remove the empty folder or add its images")
        files += [(p, k) for p in entries]
        if len(files) > MAX_IMAGES:
            raise DataError(f"image folder {r} holds more than {MAX_IMAGES:,} images", "evaluate a subset")
    arrays: list[np.ndarray] = []
    first: tuple[Path, tuple[int, int]] | None = None
    values = 0
    digest = hashlib.sha256("\0".join(names).encode())
    for path, _ in files:
        a = _read(path)
        hw = (int(a.shape[0]), int(a.shape[1]))
        if first is None:
            first = (path, hw)
        elif hw != first[1]:
            raise DataError(f"{path} is {hw[1]}x{hw[0]} pixels but {first[0]} is {first[1][1]}x{first[1][0]}: "
                            "the images have mixed sizes", "resize every image to one size before evaluating")
        values += a.size if a.ndim == 3 else 3 * a.size
        if values > MAX_VALUES:
            raise DataError(f"image folder {r} holds more than {MAX_VALUES:,} values", "evaluate a subset")
        digest.update(os.fsencode(path.relative_to(r).as_posix()) + b"\0" + a.tobytes())  # any bytes of a name
        arrays.append(a)
    grey = all(a.ndim == 2 for a in arrays)
    x = torch.from_numpy(np.stack([_to_float(a, grey) for a in arrays]))
    y = torch.tensor([k for _, k in files], dtype=torch.int64)
    tag = digest.hexdigest()[:12]
    return Split(x, y, dataset=f"{r.name}@{tag}", split="test",
                 source=f"image folder {r} ({len(names)} classes: {', '.join(names[:5])}"
                        f"{', ...' if len(names) > 5 else ''}; sha256 {tag}...)")


def _to_float(a: np.ndarray, grey: bool) -> np.ndarray:
    """``(C, H, W)`` float32 in [0,1] of one image array (C = 1 when ``grey``, else 3)."""
    scale = 65535.0 if a.dtype == np.uint16 or a.dtype.itemsize > 1 else 255.0
    f = a.astype(np.float32) / scale
    if f.ndim == 2:
        return f[None] if grey else np.repeat(f[None], 3, axis=0)
    return np.ascontiguousarray(f.transpose(2, 0, 1))
