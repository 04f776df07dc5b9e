"""Finished attacks of a long evaluation, kept on disk so an interrupted ``robustclip evaluate --cache DIR`` resumes.

One JSON file per finished attack: its per-sample outcomes (a base64 bitset), the per-sample size of each
successful perturbation (float64, NaN where none) and its largest perturbation. Files sit
in a folder named by a digest of everything that decides an attack's result: the suite (its digest, as the paper's
sandwich cache and the gate use), the checkpoint's SHA-256, the evaluated images (pixels and labels), n, seed and
batch size, the device type, the model's code (the ``--model`` factory reference and a digest of its module's
source, see :func:`robustclip.core.inputs.factory_digest`), and the robustclip, torch and torchattacks versions.
Within it, a file is named by the attack's position, label, norm and ε, and a digest of the samples it attacked (in
a cascade these depend on the attacks before). Each file carries a SHA-256 of its own payload and is verified on
read: an edited bitset, a file of another evaluation, one that does not parse, a link to a device, a FIFO or an
oversized file is a miss (counted as ``rejected``), and the attack runs again. ``robustclip check`` never reads
this cache (a gate must measure, not remember).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import files as _io

FORMAT = "robustclip-attack-cache"
VERSION = 2
"""2: entries carry a digest of their payload; the key covers the model code and robustclip's version."""
MAX_ENTRY_BYTES = 64 * 1024**2
"""The largest cache entry read (an entry of 1,000,000 samples is about 12 MB)."""


def images_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of inputs ``x`` ``(N, ...)`` (as float32 bytes) and labels ``y`` ``(N,)``."""
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


class AttackCache:
    """Per-attack results under ``root`` for one evaluation context (see the module docstring).

    ``context``: JSON-ready facts that decide the results (suite digest, checkpoint digest, images digest, n, seed,
    batch size, device); the torch and torchattacks versions are added here.
    """

    def __init__(self, root: str | os.PathLike[str], context: dict[str, Any]) -> None:
        v = _io.versions()
        ctx = {**context, "torch": v.get("torch"), "torchattacks": v.get("torchattacks"),
               "robustclip": v.get("robustclip"), "cache_version": VERSION}
        self.context = ctx
        digest = hashlib.sha256(json.dumps(ctx, sort_keys=True, default=str).encode()).hexdigest()
        self.folder = Path(root) / digest[:20]
        self.hits = 0
        self.misses = 0
        self.rejected = 0
        """Entries found but not trusted (edited, corrupt, of another evaluation, not a regular file)."""

    def _file(self, index: int, spec: Any, todo: torch.Tensor) -> Path:
        mask = hashlib.sha256(np.packbits(todo.cpu().numpy().astype(bool)).tobytes()).hexdigest()[:12]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{spec.label}-{spec.norm}-{spec.eps}")
        return self.folder / f"{index:03d}-{safe[:80]}-{mask}.json"

    def get(self, index: int, spec: Any, todo: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor] | None:
        """The stored ``(correct (N,) bool, worst perturbation, per-sample norms (N,) float64)`` of attack
        ``index``, or None (a miss)."""
        from ..core.validate import read_bytes
        from ..errors import RobustclipError

        path = self._file(index, spec, todo)
        if not os.path.lexists(path):
            self.misses += 1
            return None
        try:
            doc = json.loads(read_bytes(path, "cache entry", max_bytes=MAX_ENTRY_BYTES))
            if not isinstance(doc, dict) or doc.get("digest") != _payload_digest(doc):
                raise ValueError("edited or of another format")
            n = int(doc["n"])
            raw = base64.b64decode(doc["outcomes"].encode("ascii"), validate=True)
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:n].astype(bool)
            if doc.get("format") != FORMAT or doc.get("context") != _jsonable(self.context) or n != todo.numel() \
                    or bits.size != n:
                raise ValueError("another evaluation")
            norms = np.frombuffer(base64.b64decode(doc["norms"].encode("ascii"), validate=True), dtype="<f8")
            if norms.size != n:
                raise ValueError("norms of another evaluation")
            ok, size = torch.from_numpy(bits.copy()), float(doc["max_perturbation"])
        except (RobustclipError, OSError, ValueError, KeyError, TypeError, AttributeError):
            self.misses += 1
            self.rejected += 1
            return None
        self.hits += 1
        return ok, size, torch.from_numpy(norms.astype(np.float64))

    def put(self, index: int, spec: Any, todo: torch.Tensor, ok: torch.Tensor, size: float,
            norms: torch.Tensor | None = None) -> None:
        """Store one finished attack (atomically: an interrupted write leaves no partial file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        bits = np.packbits(ok.cpu().numpy().astype(bool), bitorder="little").tobytes()
        nv = (torch.full((ok.numel(),), float("nan"), dtype=torch.float64) if norms is None
              else norms.detach().cpu().to(torch.float64))
        nb = base64.b64encode(nv.numpy().astype("<f8").tobytes()).decode("ascii")
        doc = {"format": FORMAT, "format_version": VERSION, "attack": spec.label, "norm": spec.norm, "eps": spec.eps,
               "n": int(ok.numel()), "outcomes": base64.b64encode(bits).decode("ascii"),
               "max_perturbation": float(size), "norms": nb, "context": _jsonable(self.context)}
        doc["digest"] = _payload_digest(doc)
        _io.write_json(self._file(index, spec, todo), doc)


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from the JSON file (so a context compares equal after a round trip)."""
    return json.loads(_io.dumps_json(obj))


def _payload_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of an entry's fields other than ``digest`` (canonical JSON): an edited entry no longer matches."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    return hashlib.sha256(_io.dumps_json(body).encode("utf-8")).hexdigest()
