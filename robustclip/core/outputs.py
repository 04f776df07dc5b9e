"""The one guard for every path a command writes, checked before any work, so a bad target fails first.

Every writing command (``train --out``, ``evaluate --out``, ``check --junit-xml``, ``check --baseline`` with
``--update-baseline``, ``report --out``, and any later ``--save-adversarial``) calls :func:`guard_output` for a
file or :func:`guard_output_dir` for a folder of files before it loads a model or a byte of data. A path is
refused, with one line naming the problem and the fix, when it:

* is a symbolic link (``os.replace`` would replace the link, not its target), a folder, a device (``/dev/full``,
  ``/dev/null``), a FIFO or a socket: only a regular file or a path that does not exist yet is written;
* is one of the command's own input files (compared with :func:`os.path.samefile`, so hard links and other
  spellings of the same file count) or lies inside one of its input folders (a ``--data`` image folder, a dataset
  folder, an ``--cache``), even with ``--force``: ``--force`` consents to replacing outputs, never inputs. The
  inputs of a command are collected in one place, :func:`robustclip.core.inputs.command_inputs`;
* already exists and the user did not pass ``--force``; a file of a kind the command writes itself (``kind``:
  a baseline for ``--update-baseline``, a robustclip JUnit report for ``--junit-xml``) counts as consent to
  replace it, any other file is kept;
* lies in a folder that does not exist (nothing is created for a file path) or cannot be written.

The writes themselves (:mod:`robustclip.core.files`) are atomic: a full disk or an interrupt leaves the previous file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import OutputError

PathLike = str | os.PathLike[str]

KIND_MARKERS: dict[str, tuple[bytes, ...]] = {
    "baseline": (b'"robustclip-baseline"',),
    "junit": (b'<testsuite name="robustclip.check.', b"<testsuites />", b"<testsuites/>"),
}
"""Bytes that the first 4 KiB of a file a command may replace without ``--force`` hold (see :func:`holds`)."""
_KIND_NAMES = {"baseline": "a robustclip baseline", "junit": "a robustclip JUnit report"}
_KIND_FIXES = {"baseline": "--update-baseline replaces only a baseline file; pick another path",
               "junit": "pick another path, or pass --force to overwrite it"}


def holds(path: PathLike, kind: str) -> bool:
    """True when regular file ``path`` starts like a file of ``kind`` (``baseline`` or ``junit``) that robustclip
    writes. A damaged or truncated baseline still counts, so ``--update-baseline`` can repair it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return any(m in head for m in KIND_MARKERS[kind])


def is_input(target: PathLike, inputs: Iterable[PathLike | None]) -> PathLike | None:
    """The first of ``inputs`` that ``target`` is (the same file, by :func:`os.path.samefile`, so hard links and
    other spellings count) or lies inside (an input folder, by real path); None when it is neither."""
    real = Path(os.path.realpath(target))
    for inp in inputs:
        if inp is None:
            continue
        try:
            if os.path.samefile(target, inp):
                return inp
        except (OSError, ValueError):
            pass
        try:
            if os.path.isdir(inp):
                folder = Path(os.path.realpath(inp))
                if real == folder or folder in real.parents:
                    return inp
        except (OSError, ValueError):
            continue
    return None


def _refuse_input(p: Path, inputs: Iterable[PathLike | None], what: str) -> None:
    inp = is_input(p, inputs)
    if inp is not None:
        inside = os.path.isdir(inp) and os.path.realpath(inp) != os.path.realpath(p)
        raise OutputError(f"{what} {p} {'lies inside' if inside else 'is also'} an input of this command ({inp})",
                          "write to another path; robustclip never overwrites what it reads, even with --force")


def check_target(path: PathLike, *, inputs: Iterable[PathLike | None] = (), force: bool = False,
                 what: str = "--out", kind: str | None = None) -> bool:
    """Check one file target (its folder is not checked); True when a file is there and may be replaced.

    Raises :class:`~robustclip.errors.OutputError` for a link, folder, device, FIFO or socket, for one of
    ``inputs``, and for an existing file without ``force`` (or, with ``kind``, one that is not of that kind).
    """
    p = Path(path)
    inputs = list(inputs)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        _refuse_input(p, inputs, what)
        return False
    except NotADirectoryError:
        raise OutputError(f"{what} {p}: {p.parent} is not a folder", "pass a path inside a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot inspect {what} {p}: {exc.strerror or exc}", "check the path and permissions") \
            from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{what} {p} is a symbolic link; writing would replace the link, not its target",
                          "pass the real path of a file, or remove the link")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{what} {p} is a folder", "pass a file path")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{what} {p} is not a regular file (a device, FIFO or socket)",
                          "pass the path of a regular file, or of one that does not exist yet")
    _refuse_input(p, inputs, what)
    if kind is not None and holds(p, kind):
        return True
    if force:
        return True
    if kind is not None:
        raise OutputError(f"{what} {p} already exists and is not {_KIND_NAMES[kind]}", _KIND_FIXES[kind])
    raise OutputError(f"{what} {p} already exists", "pass --force to overwrite it, or pick another path")


def probe_writable(folder: PathLike, what: str = "--out") -> None:
    """Create and delete a temporary file in ``folder``; a read-only folder is refused (root included)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".robustclip-probe.", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {what} into {folder}: {exc.strerror or exc}",
                          "pick a folder you can write to") from None
    os.close(fd)
    os.unlink(tmp)


def _existing_folder(folder: Path, what: str, p: Path) -> None:
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise OutputError(f"output folder {folder} does not exist", f"create it first: mkdir -p {folder}") from None
    except OSError as exc:
        raise OutputError(f"cannot use folder {folder} for {what} {p}: {exc.strerror or exc}",
                          "check the path and permissions") from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{what} {p}: {folder} is not a folder", "pass a path inside a folder")


def guard_output(path: PathLike, *, inputs: Iterable[PathLike | None] = (), force: bool = False,
                 what: str = "--out", kind: str | None = None) -> Path:
    """Check, before any work, that file ``path`` may be written; returns it as a :class:`Path`. Writes nothing
    that stays (a probe file is created and deleted in its folder).

    ``inputs``: the command's input files, never overwritten. ``force``: the user's consent to replace an existing
    file. ``kind`` (``"baseline"``, ``"junit"``): an existing file of that kind may be replaced without ``force``.
    """
    p = Path(path)
    check_target(p, inputs=inputs, force=force, what=what, kind=kind)
    _existing_folder(p.parent, what, p)
    probe_writable(p.parent, what)
    return p


def guard_output_dir(path: PathLike, files: Iterable[str], *, inputs: Iterable[PathLike | None] = (),
                     force: bool = False, what: str = "--out", patterns: Iterable[str] = ()) -> Path:
    """Check, before any work, that folder ``path`` can take ``files`` (and files matching the glob ``patterns``,
    e.g. ``"*.png"``); returns it. Creates nothing: a missing folder must be creatable (its nearest existing
    ancestor a writable folder). A folder reached through a symbolic link is fine; a link, device or folder in
    the place of one of the files is not."""
    p = Path(path)
    inputs = [i for i in inputs if i is not None]
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot use {what} {p}: {exc.strerror or exc}", "check the path and permissions") \
            from None
    if st is None:
        if os.path.islink(p):
            raise OutputError(f"{what} {p} is a broken symbolic link", "remove it or pick another folder")
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise OutputError(f"{what} {p}: {anc} is a file, not a folder", "pass a path inside a folder")
        _refuse_input(p, inputs, what)
        probe_writable(anc, what)
        return p
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else "a device, FIFO or socket"
        raise OutputError(f"{what} {p} is {kind}, not a folder", "pass a folder path")
    _refuse_input(p, inputs, what)
    names = list(dict.fromkeys([*files, *(q.name for pat in patterns for q in sorted(p.glob(pat)))]))
    there = []
    for name in names:
        if check_target(p / name, inputs=inputs, force=True, what=f"{what} file"):
            there.append(name)
    if there and not force:
        raise OutputError(f"{what} {p} already holds {', '.join(there[:5])}{' ...' if len(there) > 5 else ''}",
                          "pass --force to overwrite them, or pick another folder")
    probe_writable(p, what)
    return p
