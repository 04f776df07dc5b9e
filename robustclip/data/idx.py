"""The IDX files of MNIST and Fashion-MNIST: read bounded (plain or gzip, never more than the largest official file)
and parsed into uint8 arrays, every header field checked."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..core import validate
from ..errors import DataError

_MAGIC_IMAGES = 2051
_MAGIC_LABELS = 2049
MAX_ITEMS = 60_000
"""Images (or labels) in the largest official IDX file, the MNIST and Fashion-MNIST training splits."""


def _max_idx_bytes(path: Path) -> int:
    """The size of the largest official IDX file of this kind: no genuine file (or subset of one) is bigger."""
    kind = "images" if "images" in path.name else "labels"
    per_item, header = (28 * 28, 16) if kind == "images" else (1, 8)
    return header + per_item * MAX_ITEMS


def _read_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of an IDX file, bounded: only regular files are opened, never more than the
    largest official file's size is read or inflated (a small gzip can expand a thousandfold)."""
    cap = _max_idx_bytes(path)
    fix = "replace the file with an intact copy of the official one"
    if path.suffix != ".gz":
        return validate.read_bytes(path, "data file", max_bytes=cap, error=DataError)
    validate.regular_file(path, "data file", max_bytes=cap, error=DataError)
    out = bytearray()
    try:
        with open(path, "rb") as fh:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                out += d.decompress(chunk, cap + 1 - len(out))
                while d.unconsumed_tail and len(out) <= cap:
                    out += d.decompress(d.unconsumed_tail, cap + 1 - len(out))
                if len(out) > cap:
                    raise DataError(f"{path} inflates to more than {cap:,} bytes, the size of the largest "
                                    "official IDX file", fix)
                if d.eof:
                    break
            if not d.eof:
                raise DataError(f"cannot read {path}: the gzip stream is truncated", fix)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", fix) from None
    except zlib.error as exc:
        raise DataError(f"cannot read {path}: not a valid gzip file ({exc})", fix) from None
    return bytes(out)


def parse_idx(raw: bytes, path: Path, *, kind: str) -> np.ndarray:
    """Parse IDX bytes of ``kind`` 'images' (N,28,28) or 'labels' (N,), as uint8."""
    expected_magic = _MAGIC_IMAGES if kind == "images" else _MAGIC_LABELS
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    fix = "replace the file with an intact copy of the official one"
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes is shorter than the IDX header", fix)
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != expected_magic:
        raise DataError(f"{path} has magic number {magic}, expected {expected_magic} for IDX {kind}", fix)
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if kind == "images" and tuple(dims[1:]) != (28, 28):
        raise DataError(f"{path} holds images of size {dims[1]}x{dims[2]}, expected 28x28", fix)
    size = math.prod(dims)
    if len(raw) - header < size:
        raise DataError(f"{path} is truncated: header promises {size} values, file holds {len(raw) - header}", fix)
    if len(raw) - header > size:
        raise DataError(f"{path} has {len(raw) - header - size} bytes past the end of its data", fix)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
