"""A user's own evaluation set (``--data``): ``x`` and ``y`` from a safetensors or ``.npz`` file (never unpickled),
read bounded and checked where it enters, or a folder of class folders of images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..core import files as _io
from ..core import validate as _io_validate
from ..errors import RobustclipError
from .datasets import Split

MAX_DATA_BYTES = 2 * 1024**3
"""The largest ``--data`` file read (2 GiB)."""
MAX_DATA_ELEMENTS = 2**28
"""The most input values (N × features) a ``--data`` file may hold (1 GiB as float32)."""


def _data_arrays(p: Path) -> dict[str, Any]:
    """``x`` and ``y`` of a ``.npz`` or safetensors file as numpy arrays, bounded before anything is allocated or
    inflated (:mod:`robustclip.core.bounded`); an ``.npz`` is never unpickled."""
    from ..core import bounded

    if p.suffix.lower() == ".npz":
        return bounded.read_npz(p, ("x", "y"), max_elements=MAX_DATA_ELEMENTS, max_bytes=MAX_DATA_BYTES)
    raw = _io_validate.read_bytes(p, "data file", max_bytes=MAX_DATA_BYTES)
    return bounded.read_safetensors_arrays(raw, p, ("x", "y"), max_elements=MAX_DATA_ELEMENTS)


MAX_LABEL = 2**31 - 1
"""The largest label value read (classes come from the model; this keeps the cast to int64 exact)."""


def check_labels(y: Any, p: Path) -> None:
    """Labels checked in their source dtype, before any cast: an integer or boolean dtype, or floats that are
    finite and whole (3.7 never becomes 3); every value in 0..:data:`MAX_LABEL` (``2**64 - 1`` as uint64 and
    ``1e20`` as float are refused, never wrapped to a negative int64). ``0 <= y < classes`` is checked once the
    model's number of classes is known."""
    import numpy as np

    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise RobustclipError(f"data file {p}: y has non-finite labels (NaN or inf)", "store class indices")
        if not (y == np.round(y)).all():
            raise RobustclipError(f"data file {p}: y has labels that are not whole numbers", "store class indices")
    elif y.dtype.kind not in "iub":
        raise RobustclipError(f"data file {p}: y is {y.dtype}, not integer labels", "store class indices as int64")
    if y.size and y.min() < 0:
        raise RobustclipError(f"data file {p}: y has a negative label {y.min()}", "labels are 0..classes-1")
    if y.size and y.max() > MAX_LABEL:
        raise RobustclipError(f"data file {p}: y has a label {y.max()}, far beyond any number of classes",
                              "labels are class indices 0..classes-1")


def load_data_file(path: str | os.PathLike[str]) -> Split:
    """A user's evaluation set: ``x`` in [0,1] of any shape ``(N, ...)`` and integer labels ``y`` ``(N,)``.

    A folder is read as one subfolder per class of PNG or JPEG images (:func:`robustclip.data.imagefolder.load`).

    Read from a safetensors or ``.npz`` file (``allow_pickle=False``: never unpickled). Checked where it enters:
    a regular file of at most :data:`MAX_DATA_BYTES`, both arrays present, ``x`` floating point, finite and in
    [0,1] with at most :data:`MAX_DATA_ELEMENTS` values, ``y`` whole numbers >= 0, one label per input. The split's
    ``dataset`` names the file and a digest of its content, so a baseline made on other data is refused.
    """
    import numpy as np

    p = Path(path)
    if p.is_dir():  # a folder of class folders of images (robustclip.data.imagefolder)
        from . import imagefolder

        return imagefolder.load(p)
    if not p.is_file():
        raise RobustclipError(f"data file {p} {'is not a regular file' if p.exists() else 'does not exist'}",
                              "pass a .safetensors or .npz file holding x and y, or a folder of class folders")
    size = p.stat().st_size
    if size > MAX_DATA_BYTES:
        raise RobustclipError(f"data file {p} is {size / 1024**3:.1f} GiB, more than the {MAX_DATA_BYTES // 1024**3} "
                              "GiB limit", "evaluate a subset; attacks on more samples rarely change the verdict")
    arrays = _data_arrays(p)
    for key in ("x", "y"):
        if key not in arrays:
            raise RobustclipError(f"data file {p} has no array {key!r}", "store the inputs as x and the labels as y")
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind != "f" or x.ndim < 2 or x.shape[0] < 1:
        raise RobustclipError(f"data file {p}: x must be floating point of shape (N, ...), got {x.dtype} {x.shape}",
                              "store inputs as float32 in [0,1], one sample per row")
    if x.size == 0:
        raise RobustclipError(f"data file {p}: x has shape {x.shape}, a sample of no values",
                              "store every sample's features; no dimension may be 0")
    if x.size > MAX_DATA_ELEMENTS:
        raise RobustclipError(f"data file {p}: x holds {x.size} values, more than {MAX_DATA_ELEMENTS}",
                              "evaluate a subset")
    if not np.isfinite(x).all():
        raise RobustclipError(f"data file {p}: x has non-finite values (NaN or inf)", "clean the inputs")
    if x.min() < 0 or x.max() > 1:
        raise RobustclipError(f"data file {p}: x lies in [{x.min():.3g}, {x.max():.3g}], not in [0,1]",
                              "scale inputs to [0,1] and put normalisation inside the model")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise RobustclipError(f"data file {p}: y has shape {y.shape}, x has {x.shape[0]} samples",
                              "give one integer label per input, y of shape (N,)")
    check_labels(y, p)
    try:
        digest = _io.sha256_file(p)[:12]
    except OSError as exc:
        raise RobustclipError(f"cannot read data file {p}: {exc.strerror or exc}", "check the path and permissions") \
            from None
    return Split(torch.from_numpy(np.array(x, dtype=np.float32, order="C")),  # a writable copy (training writes)
                      torch.from_numpy(np.ascontiguousarray(y).astype(np.int64)),
                      dataset=f"{p.name}@{digest}", split="test", source=f"file {p} (sha256 {digest}...)")
