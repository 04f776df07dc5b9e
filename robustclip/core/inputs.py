"""The inputs of a command: every path it reads, so that no output guard ever lets ``--force`` replace one.

``--force`` is consent to overwrite a command's *outputs*. It never extends to what the command reads: the
checkpoints, the suite, the baseline, the ``--data`` file or every file inside a ``--data`` folder, the dataset's
own folders (``--data-dir``, ``$ROBUSTCLIP_DATA``, the download cache, Debian's datasets), the Python module that
``--model MODULE:CALLABLE`` names (found *without importing it*) and an ``--cache`` folder.
:func:`command_inputs` collects them (the dataset folders come from
:func:`robustclip.data.datasets.dataset_folders`); :func:`robustclip.core.outputs.guard_output` and
:func:`~robustclip.core.outputs.guard_output_dir` refuse a target that is one of these files or lies inside one of
these folders.

:func:`factory_digest` names the model code by the SHA-256 of its module's source, so a result cached for one
``forward`` is never returned for another.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
from collections.abc import Iterable
from pathlib import Path

PathLike = str | os.PathLike[str]

MAX_SOURCE_BYTES = 16 * 1024**2
"""The largest module source read for :func:`factory_digest`."""


def factory_files(ref: str | None) -> list[Path]:
    """The source files of the module that factory reference ``MODULE:CALLABLE`` names (the module and the
    ``__init__.py`` of every package above it), located as ``import`` would from the current folder and
    ``sys.path``, but without importing (running) anything. Empty when ``ref`` is None or nothing is found."""
    if not ref or ":" not in ref:
        return []
    parts = ref.split(":", 1)[0].split(".")
    search: list[str] | None = [os.getcwd(), *(p or os.getcwd() for p in sys.path)]
    found: list[Path] = []
    for part in parts:
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, search)
        except (ImportError, ValueError, OSError):
            return found
        if spec is None:
            return found
        if spec.origin and spec.has_location and os.path.isfile(spec.origin):
            found.append(Path(spec.origin))
        search = list(spec.submodule_search_locations or []) or None
        if search is None and part != parts[-1]:
            return found
    return found


def factory_digest(ref: str | None) -> str | None:
    """SHA-256 (hex) of the reference and the source of every file :func:`factory_files` finds; None without a
    reference. A module that cannot be located (built in, zipped) digests the reference alone."""
    if not ref:
        return None
    from .validate import read_bytes

    h = hashlib.sha256(ref.encode("utf-8"))
    for f in factory_files(ref):
        h.update(b"\0" + os.fsencode(f) + b"\0")
        h.update(read_bytes(f, "model module", max_bytes=MAX_SOURCE_BYTES))
    return h.hexdigest()


def command_inputs(*paths: PathLike | None, model: str | None = None, cache: PathLike | None = None,
                   folders: Iterable[PathLike] = ()) -> list[Path]:
    """The inputs of a command: ``paths`` (checkpoints, suite, baseline, ``--data`` file or folder), the module
    files of factory ``model``, the ``cache`` folder and ``folders`` (the dataset folders it may read: see
    :func:`robustclip.data.datasets.dataset_folders`). Only paths that exist now are returned (what does not
    exist cannot be overwritten)."""
    out: list[Path] = []
    for p in [*paths, cache, *folders]:
        if p is not None and os.path.lexists(p):
            out.append(Path(p))
    out += factory_files(model)
    return list(dict.fromkeys(out))
