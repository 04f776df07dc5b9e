"""Datasets: MNIST and Fashion-MNIST from IDX files (read by :mod:`robustclip.data.idx`), CIFAR-10/100 from the
binary archives, and 1-D regression.

Image data comes back as float32 tensors of shape ``(N, 1, 28, 28)`` (MNIST,
Fashion-MNIST) or ``(N, 3, 32, 32)`` (CIFAR, see :mod:`robustclip.data.cifar`) with
values in ``[0, 1]`` and int64 labels of shape ``(N,)``. Any normalisation
belongs inside the model, never here.

Where image data is looked for, in order:

1. an explicit ``data_dir``, else the environment variable ``ROBUSTCLIP_DATA``;
   either holds ``mnist/`` and ``fashion-mnist/`` folders with the official
   file names (``train-images-idx3-ubyte[.gz]`` and so on), and ``cifar10/``,
   ``cifar100/`` with the official tarball or its extracted folder;
2. the user cache, ``$ROBUSTCLIP_CACHE`` or ``~/.cache/robustclip``;
3. Debian's ``/usr/share/datasets/<name>`` (package ``dataset-fashion-mnist``);
4. a download from the official mirrors into the cache. Each ``.gz`` is checked
   against its published MD5, and its decompressed content against the
   SHA-256 of the official IDX file, before it is renamed into place; a CIFAR
   tarball is checked against its MD5 and extracted (:mod:`robustclip.data.cifar`).
   Downloads resume and retry (:mod:`robustclip.data.download`).
   ``ROBUSTCLIP_NO_DOWNLOAD=1`` turns this step off.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import cifar, download
from .idx import _max_idx_bytes, _read_bytes, parse_idx

SPLITS = ("train", "test")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_COUNTS = {"train": 60000, "test": 10000}

# Official mirrors and the MD5 of each published .gz file.
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
_GZ_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# SHA-256 of the decompressed, official IDX files: the content check.
RAW_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    ``x``: float32, ``(N, 1, 28, 28)`` in ``[0, 1]`` (images) or ``(N, 1)`` in
    ``[0, 1]`` (regression). ``y``: int64 ``(N,)`` class labels, or float32
    ``(N, 1)`` regression targets.
    """

    x: torch.Tensor
    y: torch.Tensor
    dataset: str
    split: str
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None) -> Split:
        """The first ``n`` samples (all when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n], self.dataset, self.split, self.source)


# --------------------------------------------------------------------------- the registry

Loader = Callable[[str, str, "str | os.PathLike[str] | None", "bool | None"], Split]
"""``(name, split, data_dir, download) -> Split``: how a dataset's entry reads one split."""


@dataclass(frozen=True)
class Dataset:
    """Every fact robustclip keeps about one dataset; :data:`REGISTRY` holds one entry per name.

    Adding a dataset is one entry there plus its loader: the command line's ``--dataset`` choices, the checks of a
    run's settings and of a sweep, the classes an evaluation scores, the default model
    (:func:`robustclip.models.specs.default_spec`) and ``robustclip data --check`` all read the entry.
    """

    name: str
    task: str
    """``classification`` (int64 labels ``(N,)``) or ``regression`` (float32 targets ``(N, 1)``)."""
    shape: tuple[int, ...]
    """The input shape of one sample."""
    classes: int | None
    """The number of classes (None for regression)."""
    splits: tuple[str, ...]
    """The splits :func:`load` serves."""
    default_model: str
    """The architecture a run trains when it names none."""
    loader: Loader
    files: bool = True
    """Read from files: found in a data folder or downloaded, and checked by ``robustclip data``."""
    required: bool = True
    """``robustclip data --check`` fails without it (else it is checked only where found)."""
    digest: str = "SHA-256"
    """What the content check compares with the official files."""

    @property
    def regression(self) -> bool:
        return self.task == "regression"


def _from_files(name: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool | None) -> Split:
    origin, folder = locate(name, data_dir, download=download)
    return _load_cached(name, split, str(folder), origin)


def _generated(name: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool | None) -> Split:
    return regression(split)


REGISTRY: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "classification", (1, 28, 28), 10, SPLITS, "fc", _from_files),
    Dataset("fashion-mnist", "classification", (1, 28, 28), 10, SPLITS, "fc", _from_files),
    *(Dataset(name, "classification", cifar.SHAPE, lay.classes, SPLITS, "fc", _from_files, required=False,
              digest="MD5") for name, lay in cifar.LAYOUTS.items()),
    Dataset("regression", "regression", (1,), None, ("train", "val", "test"), "mlp1d", _generated, files=False,
            required=False, digest=""),
)}
"""Every dataset by name, in the order the command line lists them."""


def names(*, files: bool | None = None, task: str | None = None) -> tuple[str, ...]:
    """The registered datasets, in order; ``files``/``task`` keep those read from files or of one task."""
    return tuple(n for n, d in REGISTRY.items()
                 if (files is None or d.files == files) and (task is None or d.task == task))


def is_regression(name: str | None) -> bool:
    """Whether ``name`` is a registered regression dataset (a user's own data, ``None``, is not)."""
    d = REGISTRY.get(name or "")
    return d is not None and d.regression


def classes(name: str | None) -> int | None:
    """The number of classes of a registered classification dataset; None otherwise."""
    d = REGISTRY.get(name or "")
    return None if d is None else d.classes


# --------------------------------------------------------------------------- sources


def cache_dir() -> Path:
    """The user cache folder for downloaded datasets."""
    env = os.environ.get("ROBUSTCLIP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robustclip"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete(name: str, folder: Path) -> bool:
    if name in cifar.LAYOUTS:
        return cifar.find(name, folder) is not None
    return all(_find_file(folder, stem) for pair in _FILES.values() for stem in pair)


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """The (origin, folder) pairs searched for ``name``, in order."""
    out: list[tuple[str, Path]] = []
    if data_dir is not None:
        out.append(("--data-dir", Path(data_dir).expanduser() / name))
    elif os.environ.get("ROBUSTCLIP_DATA"):
        out.append(("ROBUSTCLIP_DATA", Path(os.environ["ROBUSTCLIP_DATA"]).expanduser() / name))
    out.append(("cache", cache_dir() / name))
    out.append(("debian", Path("/usr/share/datasets") / name))
    return out


def dataset_folders(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every folder that may hold a built-in dataset's files, for every dataset, in every place searched: the
    inputs that no command's output may replace or write into (:func:`robustclip.core.inputs.command_inputs`)."""
    return [folder for name, d in REGISTRY.items() if d.files for _, folder in candidate_dirs(name, data_dir)]


def locate(name: str, data_dir: str | os.PathLike[str] | None = None, *,
           download: bool | None = None) -> tuple[str, Path]:
    """Find (or download) the folder that holds dataset ``name``.

    Returns ``(origin, folder)``. Raises :class:`DataError` listing every place
    tried when the data is nowhere to be had.
    """
    _check_name(name)
    tried = []
    for origin, folder in candidate_dirs(name, data_dir):
        if _complete(name, folder):
            return origin, folder
        tried.append(f"{origin} {folder}")
    why_not = "not asked for; pass --download"
    if download is None:
        download = os.environ.get("ROBUSTCLIP_NO_DOWNLOAD", "") in ("", "0")
        why_not = "turned off by ROBUSTCLIP_NO_DOWNLOAD"
    if download:
        target = cache_dir() / name
        try:
            fetch(name, target)
            return "download", target
        except DataError as exc:
            tried.append(f"download ({exc.problem})")
        except OSError as exc:  # the cache cannot be written
            tried.append(f"download (cannot write {target}: {exc.strerror or exc})")
    else:
        tried.append(f"download ({why_not})")
    raise DataError(
        f"{name} data not found; tried: " + "; ".join(tried),
        f"pass --data-dir D (or set ROBUSTCLIP_DATA=D) where D/{name}/ holds "
        f"{cifar.hint(name) if name in cifar.LAYOUTS else 'the four IDX files'}, "
        "or allow the download from the official mirrors",
    )


def fetch(name: str, target: Path, *, progress: bool = True) -> None:
    """Download dataset ``name`` into ``target``, checking every file."""
    if name in cifar.LAYOUTS:
        cifar.fetch(name, target, progress=progress)
        return
    target.mkdir(parents=True, exist_ok=True)
    for stems in _FILES.values():
        for stem in stems:
            final = target / f"{stem}.gz"
            if final.is_file():
                continue
            # into a staging name first: the content check below runs before the official name exists
            staged = download.fetch([f"{mirror}{stem}.gz" for mirror in _MIRRORS[name]], target / f".{stem}.gz.dl",
                                    md5=_GZ_MD5[name][stem], max_bytes=_max_idx_bytes(Path(stem)),
                                    desc=f"{name}/{stem}.gz", progress=progress)
            try:
                raw = gzip.decompress(staged.read_bytes())
                if hashlib.sha256(raw).hexdigest() != RAW_SHA256[name][stem]:
                    raise DataError(f"could not download {name}/{stem}.gz: content SHA-256 does not match the "
                                    "official file")
                os.replace(staged, final)
            finally:
                staged.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, folder: str, origin: str) -> Split:
    if name in cifar.LAYOUTS:
        return _load_cifar(name, split, Path(folder), origin)
    img_stem, lab_stem = _FILES[split]
    img_path = _find_file(Path(folder), img_stem)
    lab_path = _find_file(Path(folder), lab_stem)
    assert img_path is not None and lab_path is not None
    images = parse_idx(_read_bytes(img_path), img_path, kind="images")
    labels = parse_idx(_read_bytes(lab_path), lab_path, kind="labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels",
            "the two files come from different releases; replace both with the official files",
        )
    k = REGISTRY[name].classes or 0
    if labels.size and int(labels.max()) >= k:
        raise DataError(f"{lab_path} has label {int(labels.max())}, outside 0..{k - 1}",
                        "replace the file with an intact copy of the official one")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return Split(x, y, name, split, f"{origin}:{folder}")


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None,
         download: bool | None = None) -> Split:
    """Load a split of ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``regression``.

    Images: ``x`` float32 ``(N,1,28,28)`` (CIFAR: ``(N,3,32,32)``) in [0,1];
    ``y`` int64 ``(N,)``. The official split: 60,000 train / 10,000 test
    (CIFAR: 50,000 / 10,000; CIFAR-100 labels are the fine labels). Results are cached per
    process, so repeated loads are free; treat the tensors as read-only.
    """
    entry = REGISTRY.get(name)
    if split not in (SPLITS if entry is None else entry.splits):
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    if entry is None:
        _check_name(name)
    assert entry is not None
    return entry.loader(name, split, data_dir, download)


def _load_cifar(name: str, split: str, folder: Path, origin: str) -> Split:
    source = cifar.find(name, folder)
    assert source is not None
    images, labels = cifar.read_split(name, split, source)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)  # 5x numpy's astype + divide
    return Split(x, torch.from_numpy(labels.astype(np.int64)), name, split, f"{origin}:{source}")


def train_val_split(split: Split, *, val_fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """A seeded random train/validation split (default 90/10, as in the paper's code)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction} is outside [0, 1)", "use e.g. 0.1")
    n = len(split)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = int(round(n * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    mk = lambda idx, s: Split(split.x[idx], split.y[idx], split.dataset, s, split.source)  # noqa: E731
    return mk(train_idx, "train"), mk(val_idx, "val")


def stratified_split(split: Split, *, val_fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split, str]:
    """A seeded, stratified train/validation split of a user's data: ``(train, validation, digest)``.

    Each class gives ``round(val_fraction × its count)`` samples to validation (at least one where it has two or
    more and ``val_fraction > 0``), drawn by a generator seeded with ``seed``; both parts keep the original order.
    ``digest`` is the SHA-256 (first 16 hex digits) of the validation indices, so a run records exactly which
    samples selected its model.

    >>> s = Split(torch.zeros(10, 2), torch.tensor([0] * 6 + [1] * 4), "d", "train", "test data")
    >>> train, val, _ = stratified_split(s, val_fraction=0.5, seed=0)
    >>> sorted(val.y.tolist()), len(train)
    ([0, 0, 0, 1, 1], 5)
    """
    import hashlib

    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"validation fraction {val_fraction} is outside [0, 1)", "use e.g. 0.1")
    g = torch.Generator().manual_seed(seed)
    val_parts = []
    for k in torch.unique(split.y).tolist():
        idx = torch.nonzero(split.y == k).flatten()
        take = int(round(len(idx) * val_fraction))
        if val_fraction > 0 and len(idx) >= 2:
            take = min(max(take, 1), len(idx) - 1)
        val_parts.append(idx[torch.randperm(len(idx), generator=g)[:take]])
    val_idx = torch.sort(torch.cat(val_parts)).values if val_parts else torch.zeros(0, dtype=torch.int64)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[val_idx] = False
    train_idx = torch.nonzero(keep).flatten()
    digest = hashlib.sha256(val_idx.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    mk = lambda idx, s: Split(split.x[idx], split.y[idx], split.dataset, s, split.source)  # noqa: E731
    return mk(train_idx, "train"), mk(val_idx, "val"), digest


def _check_name(name: str) -> None:
    if name not in names(files=True):
        raise DataError(f"unknown dataset {name!r}", f"use one of {', '.join(REGISTRY)}")


def verify(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool | None = False) -> dict:
    """Check dataset ``name`` where it is found: counts, shapes and content hashes.

    Returns a dict with ``origin``, ``folder``, per-split ``count`` and per-file
    ``sha256_ok``. Raises :class:`DataError` if the data is missing or unreadable.
    """
    origin, folder = locate(name, data_dir, download=download)
    report: dict = {"dataset": name, "origin": origin, "folder": str(folder), "splits": {}, "files": {}}
    if name in cifar.LAYOUTS:
        source = cifar.find(name, folder)
        assert source is not None
        report["folder"] = str(source)
        for split in SPLITS:
            s = _load_cached(name, split, str(folder), origin)
            report["splits"][split] = {"count": len(s), "expected": cifar.LAYOUTS[name].count(split)}
        report["files"] = cifar.content_ok(name, source)
        report["ok"] = all(report["files"].values())
        return report
    for split, stems in _FILES.items():
        s = _load_cached(name, split, str(folder), origin)
        report["splits"][split] = {"count": len(s), "expected": _COUNTS[split]}
        for stem in stems:
            path = _find_file(folder, stem)
            assert path is not None
            digest = hashlib.sha256(_read_bytes(path)).hexdigest()
            report["files"][path.name] = digest == RAW_SHA256[name][stem]
    report["ok"] = all(report["files"].values()) and all(
        v["count"] == v["expected"] for v in report["splits"].values()
    )
    return report


# --------------------------------------------------------------------------- regression

REGRESSION_DOC = """The 1-D regression problem (our choice; the paper's exact function is not published).

Target  g(x) = sin(2*pi*x) + 0.3*sin(6*pi*x)  on the input domain [0, 1].
Train   40 points, x uniform on [0,1] (seed 0), y = g(x) + N(0, 0.25^2) noise (seed 0).
Val     40 further noisy points drawn the same way (seed 1).
Test    1,000 noise-free points on an even grid over [0, 1].
The exact Lipschitz constant of g is max|g'| = 2*pi*(1 + 0.9) ~= 11.94 (at x = 0, 1/2, 1).
Noisy targets tempt a large net to overfit with steep wiggles: a high Lipschitz
constant. Lipschitz regularisation trades that for a smoother fit."""


def regression_target(x: torch.Tensor) -> torch.Tensor:
    """g(x) = sin(2πx) + 0.3·sin(6πx); any shape, float."""
    return torch.sin(2 * math.pi * x) + 0.3 * torch.sin(6 * math.pi * x)


def regression(split: str = "train", *, n: int | None = None, noise: float = 0.25) -> Split:
    """The 1-D regression dataset: ``x`` float32 ``(N,1)`` in [0,1], ``y`` float32 ``(N,1)``.

    See :data:`REGRESSION_DOC` for the function, sizes and seeds.
    """
    if split == "test":
        x = torch.linspace(0.0, 1.0, n or 1000).unsqueeze(1)
        return Split(x, regression_target(x), "regression", split, "generated")
    seed = {"train": 0, "val": 1}.get(split)
    if seed is None:
        raise DataError(f"unknown regression split {split!r}", "use train, val or test")
    g = torch.Generator().manual_seed(seed)
    count = n or 40
    x = torch.rand(count, 1, generator=g)
    y = regression_target(x) + noise * torch.randn(count, 1, generator=g)
    return Split(x, y, "regression", split, "generated")
