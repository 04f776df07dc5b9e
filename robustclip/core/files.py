"""Small I/O helpers shared by every writer: atomic writes, hashes, versions."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same folder, so the final ``os.replace`` is
    atomic: readers see either the old file or the complete new one, never a
    half-written file. On an exception (a full disk, Ctrl-C) the temporary file is
    removed and the previous file kept; an ``OSError`` becomes a one-line
    :class:`~robustclip.errors.OutputError` (still an ``OSError``). A link, folder,
    device or FIFO at ``path`` is never replaced (the commands refuse it up front, see
    :mod:`robustclip.core.outputs`; this is the last line of defence).
    """
    from ..errors import OutputError

    target = Path(path)
    tmp_path: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        _seal(tmp_path)
        _replaceable(target)
        os.replace(tmp_path, target)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}",
                          "free disk space or pick a writable folder; the previous file, if any, is unchanged") \
            from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _seal(tmp: str | Path) -> None:
    """Sync a staged file to disk and give it the mode a plain ``open()`` would (mkstemp makes 0600 files)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_umask())


def _replaceable(target: Path) -> None:
    from ..errors import OutputError

    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{target} is not a regular file (a link, folder, device or FIFO); it was not replaced",
                          "write to another path")


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(mask)
    return mask


def write_files(folder: str | os.PathLike[str], contents: dict[str, str | bytes]) -> None:
    """Write several files into ``folder`` as one set: every file is staged (written and synced to a temporary
    file beside it) first, and only when all are staged are they renamed into place. A full disk or an interrupt
    while staging leaves every previous file as it was, so a folder never holds a new ``results.csv`` beside an
    old ``results.json``. ``str`` contents are written as UTF-8; errors are one-line
    :class:`~robustclip.errors.OutputError` s, as for :func:`atomic_path`."""
    from ..errors import OutputError

    where = Path(folder)
    staged: list[tuple[Path, Path]] = []
    try:
        where.mkdir(parents=True, exist_ok=True)
        for name, data in contents.items():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=where)
            staged.append((Path(tmp_name), where / name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            _seal(tmp_name)
        for _, target in staged:
            _replaceable(target)
        for tmp, target in staged:  # all staged: from here on only renames, which need no space
            os.replace(tmp, target)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}",
                          "free disk space or pick a writable folder; the previous files, if any, are unchanged") \
            from None
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, strictly valid JSON to ``path`` atomically (see :func:`dumps_json`)."""
    write_text(path, dumps_json(obj, indent=2) + "\n")


def dumps_json(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as strictly valid JSON: NaN and ±Inf (a value that is missing or undefined) become ``null``.

    Python's ``json`` would write the invalid tokens ``NaN`` and ``Infinity``, which other readers refuse.
    """
    return json.dumps(finite_or_null(obj), indent=indent, sort_keys=False, default=json_default, allow_nan=False)


def finite_or_null(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, numpy/torch scalars) with non-finite floats as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy or torch scalar
        return finite_or_null(obj.item())
    return obj


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, counted without recursion (strings skipped)."""
    import numpy as np

    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    bare = _JSON_STRING.sub(b"", raw)
    a = np.frombuffer(bare, dtype=np.uint8)
    step = (a == ord("[")).astype(np.int64) + (a == ord("{")) - (a == ord("]")) - (a == ord("}"))
    return int(np.cumsum(step).max()) if step.size else 0


def loads_json_bounded(text: str | bytes, *, max_depth: int = 64, max_bytes: int = 16 * 1024 * 1024,
                       what: str = "JSON document") -> Any:
    """Parse JSON ``text`` no longer than ``max_bytes`` and nested no deeper than ``max_depth``.

    Raises ``ValueError`` (with a message naming ``what``) for anything too big, too deep or malformed, so one
    ``except ValueError`` covers every bad document; a 200,000-deep header never reaches the recursive parser.
    """
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise ValueError(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what} is nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8: {exc.reason}") from None


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy/torch scalars as numbers, paths as strings."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a result."""
    import numpy
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    from .._version import version

    for name in ("torchattacks", "pandas", "safetensors", "robustclip"):
        out[name] = version(name)
    return out


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The current git commit of ``cwd`` (or None outside a repository)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``, or ``tomli`` before Python 3.11); raises ``tomllib.TOMLDecodeError``."""
    return loads_toml(Path(path).read_text(encoding="utf-8"))


def loads_toml(text: str) -> dict[str, Any]:
    """Parse TOML text (``tomllib``, or ``tomli`` before Python 3.11)."""
    return tomllib.loads(text)


def preset(name: str) -> dict[str, Any]:
    """The sweep preset shipped as ``robustclip/presets/NAME.toml`` (``demo``) as a dict."""
    from importlib import resources

    return loads_toml(resources.files("robustclip").joinpath(f"presets/{name}.toml").read_text(encoding="utf-8"))
