"""Readers of a user's array files that bound before they allocate or inflate: ``.npz`` and safetensors.

* ``.npz``: each member's ``.npy`` header is read first (``allow_pickle`` never: object arrays are refused); a
  declared size above the cap is refused before a byte of data is inflated, and the data is then inflated as a
  stream of exactly the declared size, so a deflate bomb (8 GiB from a few MB) stops after at most the cap.
* safetensors: the JSON header is parsed with a depth and size limit (a header nested 100,000 deep is refused
  before the recursive parser sees it), dtypes and shapes are checked against the cap, and only then are the
  tensors read. bf16, fp16 and float8 tensors are converted to float32; other dtypes are refused with one line.

Every problem is a :class:`~robustclip.errors.RobustclipError` naming the file: never a ``MemoryError``, a
``KeyError 'BF16'`` or a traceback.
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RobustclipError
from . import validate
from .files import loads_json_bounded

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Largest safetensors JSON header read."""
MAX_HEADER_DEPTH = 64
"""Deepest JSON nesting accepted in a safetensors header."""
_NPY_KINDS = "biuf"
"""numpy dtype kinds read from an array file: booleans, integers, floats (no objects, strings, complex)."""
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8, "I64": 8, "F16": 2,
              "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
"""safetensors dtypes read (and their bytes per value); bf16 and float8 become float32."""


def _err(path: Path, problem: str, fix: str) -> RobustclipError:
    return RobustclipError(f"data file {path}: {problem}", fix)


def _count(shape: tuple[int, ...] | list[Any]) -> int:
    return math.prod(int(d) for d in shape)


def read_npz(path: str | Path, keys: tuple[str, ...], *, max_elements: int,
             max_bytes: int = 2 * 1024**3) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file (those present), each with at most ``max_elements`` values.

    Refused, with one line: a path that is not a regular file of at most ``max_bytes`` (a FIFO or device is never
    read), a file that is not a zip, an encrypted member, an object/string/complex array, a declared shape with a
    negative dimension or above the cap (before inflating), a member whose data is shorter or longer than its
    header declares.
    """
    p = Path(path)
    fix = "write it with numpy.savez(path, x=x, y=y) from numeric arrays"
    out: dict[str, np.ndarray] = {}
    try:
        with validate.open_file(p, "data file", max_bytes=max_bytes) as raw, zipfile.ZipFile(raw) as zf:
            names = set(zf.namelist())
            for key in keys:
                member = f"{key}.npy"
                if member not in names:
                    continue
                with zf.open(member) as fh:
                    out[key] = _read_npy(fh, p, key, max_elements, fix)
    except RobustclipError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: an encrypted member ("password required")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _err(p, f"cannot be read as .npz ({type(exc).__name__}: {first})", fix) from None
    return out


def _read_npy(fh: Any, p: Path, key: str, max_elements: int, fix: str) -> np.ndarray:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise _err(p, f"{key} is stored in .npy format {version[0]}.{version[1]}, which is not read", fix)
    if dtype.hasobject:
        raise _err(p, f"cannot be read as .npz: {key} holds Python objects, which only unpickling could read", fix)
    if dtype.kind not in _NPY_KINDS or dtype.itemsize > 8:
        raise _err(p, f"{key} is {dtype}, " + ("not integer labels" if key == "y" else "not floating point inputs"),
                   "store x as float32 in [0,1] and y as int64 class indices")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _err(p, f"{key} declares an invalid shape {tuple(shape)} (a negative dimension)",
                   "the file is corrupt; write it again")
    n = _count(shape)
    if n > max_elements:
        raise _err(p, f"{key} declares shape {tuple(shape)}, {n:,} values, more than the {max_elements:,} allowed",
                   "evaluate a subset")
    want = n * dtype.itemsize
    raw = fh.read(want + 1)  # inflates at most the declared size (plus one byte to see that it ends there)
    if len(raw) != want:
        raise _err(p, f"{key} holds {'more' if len(raw) > want else 'less'} data than its header declares "
                   f"({tuple(shape)} of {dtype})", "the file is corrupt; write it again")
    arr = np.frombuffer(raw, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def safetensors_header(raw: bytes, path: str | Path, *, what: str = "data file") -> tuple[dict[str, Any], int]:
    """The parsed JSON header of safetensors bytes ``raw`` and its length, bounded in size and depth."""
    p = Path(path)
    fix = "write it with safetensors (save_file) or numpy.savez (.npz)"
    if len(raw) < 8:
        raise RobustclipError(f"{what} {p} is truncated ({len(raw)} bytes)", fix)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise RobustclipError(f"{what} {p} is not a complete safetensors file (bad header length)", fix)
    try:
        header = loads_json_bounded(raw[8:8 + n], max_depth=MAX_HEADER_DEPTH, max_bytes=MAX_HEADER_BYTES,
                                    what="its safetensors header")
    except ValueError as exc:
        raise RobustclipError(f"{what} {p} is not a valid safetensors file: {str(exc).splitlines()[0]}", fix) \
            from None
    if not isinstance(header, dict):
        raise RobustclipError(f"{what} {p} is not a valid safetensors file: its header is not a JSON object", fix)
    return header, int(n)


def read_safetensors_arrays(raw: bytes, path: str | Path, keys: tuple[str, ...], *,
                            max_elements: int) -> dict[str, np.ndarray]:
    """The tensors ``keys`` (those present) of safetensors bytes ``raw`` as numpy arrays, each checked against
    ``max_elements`` from the header before any is read; bf16, fp16 and float8 become float32."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    p = Path(path)
    header, _ = safetensors_header(raw, p)
    for key in keys:
        entry = header.get(key)
        if entry is None:
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if dtype not in _ST_DTYPES:
            raise _err(p, f"{key} has dtype {dtype!r}, which is not read",
                       f"store {key} as float32 (x) or int64 (y); bf16, fp16 and float8 are converted")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise _err(p, f"{key} has an invalid shape {shape!r}", "the file is corrupt; write it again")
        if _count(shape) > max_elements:
            raise _err(p, f"{key} declares shape {tuple(shape)}, {_count(shape):,} values, more than the "
                       f"{max_elements:,} allowed", "evaluate a subset")
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _err(p, f"cannot be read as safetensors ({first})",
                   "write it with safetensors (x and y tensors) or numpy.savez (.npz)") from None
    out = {}
    for key in keys:
        if key in tensors:
            t = tensors[key]
            if t.dtype in (torch.bfloat16, torch.float16) or t.dtype.is_floating_point and t.element_size() == 1:
                t = t.float()  # numpy has no bf16/float8: exact in float32
            out[key] = t.numpy()
    return out
