"""CIFAR-10 and CIFAR-100 from the official *binary* archives (never the pickled python versions).

Record format (Krizhevsky's binary version, https://www.cs.toronto.edu/~kriz/cifar.html):

* CIFAR-10, ``cifar-10-binary.tar.gz``: ``cifar-10-batches-bin/data_batch_1.bin`` … ``data_batch_5.bin`` (train)
  and ``test_batch.bin`` (test), 10,000 records each of 3,073 bytes: the label (0–9), then 3,072 bytes of pixels,
  the 1,024 red values of the 32×32 image in row-major order, then green, then blue.
* CIFAR-100, ``cifar-100-binary.tar.gz``: ``cifar-100-binary/train.bin`` (50,000 records) and ``test.bin``
  (10,000), 3,074 bytes each: the coarse label (0–19), the fine label (0–99), then the pixels. The fine label is
  the class.

A dataset folder ``F`` (``D/cifar10/`` or ``D/cifar100/``) holds the extracted folder (or its ``.bin`` files
directly), or the tarball, whose members are read by name without writing anything. Every file is checked for its
structure (record size, record count, label range) and loads even when its content differs from the official one,
e.g. a user's own re-export; :func:`content_ok` says whether it matches the official digests. A download is the
tarball, MD5-checked (:mod:`robustclip.data.download`), whose ``.bin`` members are extracted (``filter='data'``) into a
temporary folder, checked, and renamed into place: the cache never holds a half-written dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import validate
from ..errors import DataError
from . import download

PIXELS = 3 * 32 * 32
SHAPE = (3, 32, 32)
MAX_ARCHIVE_BYTES = 1 << 30
"""The largest local CIFAR tarball opened (a user's re-export may compress differently from the official one)."""


@dataclass(frozen=True)
class Layout:
    """The official layout of one CIFAR binary archive.

    ``splits``: for each split, its member files and the number of records each holds. ``label_bytes``: bytes
    before the pixels of each record; the last of them is the class label, in ``0 .. classes-1``.
    """

    name: str
    title: str
    archive: str
    archive_md5: str
    archive_bytes: int
    folder: str
    label_bytes: int
    classes: int
    coarse_classes: int | None
    splits: dict[str, tuple[tuple[str, int], ...]]
    member_md5: dict[str, str]
    urls: tuple[str, ...]

    @property
    def record(self) -> int:
        """Bytes per record."""
        return self.label_bytes + PIXELS

    def files(self) -> list[str]:
        """Every member file, train first."""
        return [f for members in self.splits.values() for f, _ in members]

    def count(self, split: str) -> int:
        """Records in ``split``."""
        return sum(n for _, n in self.splits[split])


# Archive MD5 and size as published on the CIFAR page; the member MD5s are those of the files inside the official
# archives (as listed by several independent projects), used only to report whether a local copy is the official one.
LAYOUTS: dict[str, Layout] = {
    "cifar10": Layout(
        name="cifar10", title="CIFAR-10", archive="cifar-10-binary.tar.gz",
        archive_md5="c32a1d4ab5d03f1284b67883e8d87530", archive_bytes=170_052_171, folder="cifar-10-batches-bin",
        label_bytes=1, classes=10, coarse_classes=None,
        splits={"train": tuple((f"data_batch_{i}.bin", 10_000) for i in range(1, 6)),
                "test": (("test_batch.bin", 10_000),)},
        member_md5={"data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
                    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
                    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
                    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
                    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
                    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d"},
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
    "cifar100": Layout(
        name="cifar100", title="CIFAR-100", archive="cifar-100-binary.tar.gz",
        archive_md5="03b5dce01913d631647c71ecec9e9cb8", archive_bytes=168_513_733, folder="cifar-100-binary",
        label_bytes=2, classes=100, coarse_classes=20,
        splits={"train": (("train.bin", 50_000),), "test": (("test.bin", 10_000),)},
        member_md5={"train.bin": "6172c7755cfe09b2fe270c85cebc1b15", "test.bin": "4499cfba6c016c1be1438163640a0898"},
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    ),
}
NAMES = tuple(LAYOUTS)
_OFFICIAL = dict(LAYOUTS)


def hint(name: str) -> str:
    """What a dataset folder for ``name`` should hold, for error messages."""
    lay = LAYOUTS[name]
    return f"{lay.archive} or its extracted {lay.folder}/"


def find(name: str, folder: Path) -> Path | None:
    """The source of ``name`` in dataset folder ``folder``: a folder holding every ``.bin`` file (the extracted
    ``cifar-10-batches-bin/`` or ``folder`` itself), else the tarball; None when neither is there."""
    lay = LAYOUTS[name]
    for cand in (folder / lay.folder, folder):
        if all((cand / f).is_file() for f in lay.files()):
            return cand
    tarball = folder / lay.archive
    return tarball if tarball.is_file() else None


# --------------------------------------------------------------------------- records


def parse_records(raw: bytes, where: str, lay: Layout, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``count`` binary records: images uint8 ``(count, 3, 32, 32)`` (planar RGB) and labels uint8
    ``(count,)`` (the fine label for CIFAR-100). Raises :class:`DataError` for a wrong record size or count or a
    label out of range."""
    fix = f"replace it with the file from the official {lay.archive}"
    rec = lay.record
    if len(raw) % rec:
        raise DataError(f"{where} is {len(raw):,} bytes, not a whole number of {rec:,}-byte {lay.title} records "
                        "(truncated, or not the binary version)", fix)
    n = len(raw) // rec
    if n != count:
        raise DataError(f"{where} holds {n:,} records, expected {count:,}", fix)
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(n, rec)
    labels = arr[:, lay.label_bytes - 1]
    if n and int(labels.max()) >= lay.classes:
        raise DataError(f"{where} has label {int(labels.max())}, outside 0..{lay.classes - 1}", fix)
    if lay.coarse_classes is not None and n and int(arr[:, 0].max()) >= lay.coarse_classes:
        raise DataError(f"{where} has coarse label {int(arr[:, 0].max())}, outside 0..{lay.coarse_classes - 1}", fix)
    return arr[:, lay.label_bytes:].reshape(n, *SHAPE), labels


def _member_cap(lay: Layout, count: int) -> int:
    """Bytes read of one member at most: twice its official size, so a wrong count is still reported as such."""
    return 2 * count * lay.record


def _archive_error(path: Path, exc: BaseException, lay: Layout) -> DataError:
    why = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"cannot read {path}: the archive is corrupt or truncated ({why})",
                     f"download {lay.archive} again (delete the damaged copy)")


def read_members(name: str, tarball: Path, wanted: list[str]) -> dict[str, bytes]:
    """The bytes of the members ``wanted`` (file names inside the archive's folder) of a CIFAR tarball, read by name;
    nothing is written. Raises :class:`DataError` for a corrupt or truncated archive or a missing member."""
    lay = LAYOUTS[name]
    caps = {f: _member_cap(lay, n) for members in lay.splits.values() for f, n in members}
    validate.regular_file(tarball, f"{lay.title} archive", max_bytes=MAX_ARCHIVE_BYTES, error=DataError)
    limit = 2 * sum(caps.values()) + (1 << 20)  # bytes of tar stream walked at most
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for member in tf:
                fname = _name_in_folder(member.name, lay)
                if fname in wanted and fname not in out:
                    if not member.isfile():
                        raise DataError(f"{tarball}: {member.name} is not a regular file", f"use the official "
                                        f"{lay.archive}")
                    if member.size > caps[fname]:
                        raise DataError(f"{tarball}: {member.name} is {member.size:,} bytes, far more than the "
                                        f"{caps[fname] // 2:,} of the official file", f"use the official {lay.archive}")
                    fh = tf.extractfile(member)
                    assert fh is not None
                    out[fname] = fh.read()
                    if len(out[fname]) != member.size:
                        raise tarfile.ReadError(f"{member.name} is cut short")
                    if len(out) == len(set(wanted)):
                        break
                if tf.offset > limit:
                    raise DataError(f"{tarball} holds more than {limit:,} bytes before its data files",
                                    f"use the official {lay.archive}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _archive_error(tarball, exc, lay) from None
    missing = [f for f in wanted if f not in out]
    if missing:
        raise DataError(f"{tarball} has no {lay.folder}/{missing[0]}",
                        f"use the official {lay.archive} (the binary version, not the python one)")
    return out


def _name_in_folder(member: str, lay: Layout) -> str | None:
    """``data_batch_1.bin`` for the member ``cifar-10-batches-bin/data_batch_1.bin`` (or ``./…``), else None."""
    parts = [p for p in member.split("/") if p not in ("", ".")]
    return parts[1] if len(parts) == 2 and parts[0] == lay.folder else None


def read_split(name: str, split: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Split ``split`` of ``name`` from ``source`` (a folder of ``.bin`` files, or the tarball): images uint8
    ``(N, 3, 32, 32)`` and labels uint8 ``(N,)``, every file checked by :func:`parse_records`."""
    lay = LAYOUTS[name]
    members = lay.splits[split]
    if source.is_dir():
        raws = {f: validate.read_bytes(source / f, f"{lay.title} file", max_bytes=_member_cap(lay, n),
                                       error=DataError) for f, n in members}
        where = {f: str(source / f) for f, _ in members}
    else:
        raws = read_members(name, source, [f for f, _ in members])
        where = {f: f"{source}:{lay.folder}/{f}" for f, _ in members}
    parsed = [parse_records(raws[f], where[f], lay, n) for f, n in members]
    if len(parsed) == 1:
        return parsed[0]
    return np.concatenate([p[0] for p in parsed]), np.concatenate([p[1] for p in parsed])


def content_ok(name: str, source: Path) -> dict[str, bool]:
    """Whether a local copy is the official one: for a tarball, its MD5 against the published digest; for a
    folder, each ``.bin`` file's MD5 against the official member's. Keys are file names."""
    lay = LAYOUTS[name]
    if source.is_file():
        return {source.name: download.md5_file(source) == lay.archive_md5}
    out = {}
    for members in lay.splits.values():
        for f, n in members:
            raw = validate.read_bytes(source / f, f"{lay.title} file", max_bytes=_member_cap(lay, n), error=DataError)
            out[f] = hashlib.md5(raw).hexdigest() == lay.member_md5[f]
    return out


# --------------------------------------------------------------------------- download


def fetch(name: str, target: Path, *, progress: bool = True) -> Path:
    """Download the official tarball of ``name`` into ``target`` (MD5-checked, resumable), extract its ``.bin``
    files into ``target/<folder>/`` and return that folder. The tarball is removed once extracted."""
    lay = LAYOUTS[name]
    done = target / lay.folder
    if find(name, target) == done:
        return done
    archive = download.fetch(lay.urls, target / lay.archive, md5=lay.archive_md5, max_bytes=lay.archive_bytes,
                             desc=f"{name}/{lay.archive}", progress=progress)
    try:
        extract(name, archive, target)
    except DataError:
        archive.unlink(missing_ok=True)  # verified but unreadable: keep nothing that would fail again
        raise
    archive.unlink(missing_ok=True)
    return done


def extract(name: str, archive: Path, target: Path) -> Path:
    """Extract the ``.bin`` members of ``archive`` (with ``tarfile``'s ``filter='data'``) into ``target/<folder>/``:
    into a temporary folder first, each file checked by :func:`parse_records`, then renamed into place. Only the
    named members are extracted; no other path is ever written."""
    lay = LAYOUTS[name]
    final = target / lay.folder
    if final.exists():
        raise DataError(f"{final} exists but does not hold every {lay.title} file",
                        "delete it (it is not a complete copy) and try again")
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{lay.folder}.", dir=target))
    try:
        wanted = {f"{lay.folder}/{f}" for f in lay.files()}
        try:
            with tarfile.open(archive, "r:gz") as tf:
                members = [m for m in tf.getmembers() if m.name.removeprefix("./") in wanted and m.isfile()]
                for m in members:
                    if m.size > 2 * lay.record * max(n for ms in lay.splits.values() for _, n in ms):
                        raise DataError(f"{archive}: {m.name} is {m.size:,} bytes, far more than an official file",
                                        f"use the official {lay.archive}")
                    tf.extract(m, tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _archive_error(archive, exc, lay) from None
        got = tmp / lay.folder
        missing = [f for f in lay.files() if not (got / f).is_file()]
        if missing:
            raise DataError(f"{archive} has no {lay.folder}/{missing[0]}",
                            f"use the official {lay.archive} (the binary version, not the python one)")
        for split in lay.splits:
            read_split(name, split, got)  # structure check before anything is renamed into place
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def with_counts(name: str, counts: dict[str, int], **changes: object) -> Layout:
    """A copy of ``name``'s official layout with ``counts`` records per member file (by split) and other fields
    changed: small synthetic archives for tests."""
    lay = _OFFICIAL[name]
    splits = {s: tuple((f, counts.get(s, n)) for f, n in members) for s, members in lay.splits.items()}
    return dataclasses.replace(lay, splits=splits, **changes)  # type: ignore[arg-type]
