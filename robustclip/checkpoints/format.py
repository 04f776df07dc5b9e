"""Safe checkpoints: one ``.safetensors`` file per model, JSON metadata inside.

The file holds the weights as safetensors tensors and, under the metadata key
``robustclip``, a JSON document with the model spec, dataset, training config
and history, final metrics, package versions and a SHA-256 of the weights.
Loading parses only that JSON and raw tensor bytes: no code in the file is ever
executed, and pickles are refused before anything is read from them.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..core import validate
from ..core.files import dumps_json, loads_json_bounded, versions, write_bytes
from ..errors import CheckpointError, RobustclipError
from ..models import specs as models

FORMAT = "robustclip-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "robustclip"
_MAX_HEADER = 16 * 1024 * 1024
"""Largest safetensors header (JSON) read; ours are a few kB plus the history."""
_MAX_DEPTH = 64
"""Deepest JSON nesting accepted in a header or in the metadata document."""
FACTORY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
"""``package.module:callable`` of a factory (the callable may be dotted, e.g. ``nets:Zoo.small``)."""
MAX_FILE_BYTES = 8 + _MAX_HEADER + 4 * models.MAX_PARAMETERS
"""Largest checkpoint file read: the largest header plus the largest model's float32 weights."""


@dataclass
class CheckpointMeta(MutableMapping[str, Any]):
    """The JSON metadata stored in a checkpoint, typed.

    Every writer fills this one record; readers use attributes (``meta.dataset``) or, for older code, the mapping
    interface (``meta["dataset"]``, ``meta.get("train", {})``). Unknown keys of a file are kept in ``extra``.

    Fields: ``dataset`` (``mnist``, ``fashion-mnist``, ``regression`` or a user's name); ``model`` (the model spec,
    or None for a user's model rebuilt by a factory); ``name`` (a run label); ``train`` (the training config, λ
    schedule, best epoch, seconds); ``data`` (source and sizes); ``history`` (one dict per epoch); ``metrics``
    (the selected epoch's scores); ``command`` (the command line that made it); ``sweep_run`` (the sweep plan \
entry); ``factory``
    (``pkg.module:function`` that rebuilds a user's model, imported only when the user names it);
    ``versions``, ``weights_sha256``, ``format``, ``format_version`` (added by :func:`save`).
    """

    dataset: str = "unknown"
    model: dict[str, Any] | None = None
    name: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    sweep_run: dict[str, Any] | None = None
    factory: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    weights_sha256: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CheckpointMeta:
        """Build from a metadata document; keys that are not fields go to ``extra``."""
        known = {k: v for k, v in doc.items() if k in _META_FIELDS}
        for key, value in known.items():
            kind = _META_TYPES[key]
            if not (isinstance(value, kind) and not isinstance(value, bool)) and not (value is None and
                                                                                       key in _META_OPTIONAL):
                raise CheckpointError(f"checkpoint metadata field {key!r} is a {type(value).__name__}, "
                                      f"not a {kind.__name__}", "re-create the checkpoint")
        return cls(**known, extra={k: v for k, v in doc.items() if k not in _META_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the fields, with ``extra``'s keys flattened in (fields win)."""
        out = {**self.extra}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        return {k: v for k, v in out.items() if v is not None or k in ("model",)}

    def __getitem__(self, key: str) -> Any:
        d = self.to_dict()
        return d[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _META_FIELDS:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in _META_FIELDS:
            raise KeyError(f"{key} is a field of CheckpointMeta and cannot be deleted")
        del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


_META_FIELDS = frozenset(f.name for f in fields(CheckpointMeta)) - {"extra"}
_META_TYPES: dict[str, type] = {"dataset": str, "model": dict, "name": str, "train": dict, "data": dict,
                                "history": list, "metrics": dict, "command": str, "sweep_run": dict, "factory": str,
                                "versions": dict, "weights_sha256": str, "format": str, "format_version": int}
_META_OPTIONAL = frozenset({"model", "name", "command", "sweep_run", "factory", "weights_sha256"})



def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in sorted order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too (BN counts)
    return h.hexdigest()


def check_factory_ref(ref: str, *, what: str = "--model") -> str:
    """Validate the form ``MODULE:CALLABLE`` (nothing is imported); returns ``ref``."""
    if not isinstance(ref, str) or not FACTORY_RE.match(ref):
        raise RobustclipError(f"{what} {ref!r} is not of the form MODULE:CALLABLE",
                              "e.g. --model mypkg.nets:small_cnn (a module importable from this folder and a "
                              "function in it that returns the nn.Module)")
    return ref


def save(model: nn.Module, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None, *,
         factory: str | None = None) -> Path:
    """Write ``model`` and ``meta`` to ``path`` atomically; return the path.

    ``model`` must carry a ``spec`` (models built by :func:`robustclip.models.specs.build`
    do), or ``factory`` must name the code that rebuilds it, ``"pkg.module:function"``
    (recorded, never imported here; loading imports it only when the user names it
    too, see :func:`robustclip.checkpoints.foreign.load_model`). ``meta`` is any JSON-serialisable
    dict: dataset, training config and history, metrics. Spec, factory, versions and
    the weights' digest are added here.

    Example::

        robustclip.save(model, "cnn.safetensors", {"dataset": "mnist"}, factory="mypkg.nets:small_cnn")
    """
    spec = getattr(model, "spec", None)
    base = meta.to_dict() if isinstance(meta, CheckpointMeta) else dict(meta or {})
    if factory is None and spec is None and isinstance(base.get("factory"), str):
        factory = base["factory"]  # a run of robustclip train --model MODULE:CALLABLE records its factory
    if spec is None and factory is None:
        raise RobustclipError("the model has no spec, so a checkpoint could not rebuild it",
                              "build it with robustclip.models.build(spec), or pass factory='pkg.module:function' "
                              "naming the code that builds it")
    if factory is not None:

        check_factory_ref(factory, what="factory")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    doc = {
        **base,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": spec,
        "versions": versions(),
        "weights_sha256": weights_digest(state),
    }
    if factory is not None:
        doc["factory"] = factory
    blob = st_save(state, metadata={_META_KEY: dumps_json(doc)})
    target = Path(path)
    write_bytes(target, blob)
    return target


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """True when the first 9 bytes of a ``size``-byte file start a safetensors file: a header length that fits,
    then the header's opening ``{``. (A header length such as 640 begins with the bytes of a pickle's magic.)"""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 8 + n <= size and head[8:9] == b"{"


def header_length(raw: bytes, path: Path, *, fix: str) -> int:
    """The length ``n`` of a safetensors file's JSON header, checked: present, at most the cap, inside the file."""
    if len(raw) < 8:
        raise CheckpointError(f"{path} is truncated ({len(raw)} bytes)", fix)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise CheckpointError(f"{path} is not a complete safetensors file (bad header length)", fix)
    return int(n)


def _sniff(raw: bytes, path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, without parsing it."""
    if not looks_like_safetensors(raw[:9], len(raw)) and (
            raw[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or raw[:4] == b"PK\x03\x04"):
        raise CheckpointError(
            f"{path} is a pickle or torch.save file; robustclip never unpickles files",
            "to read a state_dict saved with torch.save, name the code that builds the network: --model "
            "MODULE:CALLABLE on the command line, robustclip.load(path, model=...) in Python",
        )
    header_length(raw, path, fix="re-create the checkpoint; it may be truncated or not a checkpoint")


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read only the JSON metadata of a checkpoint."""
    return _meta(_read(Path(path))[1], Path(path))


def _meta(doc: dict[str, Any], path: Path) -> CheckpointMeta:
    try:
        return CheckpointMeta.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} metadata does not fit a robustclip checkpoint ({exc})",
                              "re-create the checkpoint") from None


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    raw = validate.read_bytes(path, "checkpoint", max_bytes=MAX_FILE_BYTES, error=CheckpointError)
    _sniff(raw, path)
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = loads_json_bounded(raw[8 : 8 + n], max_depth=_MAX_DEPTH, max_bytes=_MAX_HEADER,
                                    what="the safetensors header")
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {str(exc).splitlines()[0]}",
                              "re-create the checkpoint; it may be truncated or corrupt") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: its header is not a JSON object",
                              "re-create the checkpoint; it may be truncated or corrupt")
    try:
        state = st_load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError, TypeError, RuntimeError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a valid safetensors file: {first}",
                              "re-create the checkpoint; it may be truncated or corrupt") from None
    md = header.get("__metadata__")
    text = md.get(_META_KEY) if isinstance(md, dict) else None
    if text is None:
        raise CheckpointError(f"{path} has no robustclip metadata",
                              "it was not written by robustclip; save it with robustclip.save")
    try:
        if not isinstance(text, str):
            raise ValueError("not a string")
        meta = loads_json_bounded(text, max_depth=_MAX_DEPTH, max_bytes=_MAX_HEADER, what="the metadata")
    except ValueError as exc:
        raise CheckpointError(f"{path} has corrupt robustclip metadata ({exc})", "re-create the checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{path} metadata is not a robustclip checkpoint document", "re-create the checkpoint")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path} metadata has an invalid format_version {version!r}", "re-create the checkpoint")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer robustclip (format {meta['format_version']})",
                              "upgrade robustclip")
    return state, meta


def load(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
         trust_factory: bool = False) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model stored at ``path``: ``(model in eval mode, metadata)``.

    Only checkpoints with a model spec: one saved with ``factory=`` (a user's model) is loaded by
    :func:`robustclip.checkpoints.foreign.load` (``robustclip.load``), which imports that factory only with
    ``trust_factory=True``. ``trust_factory`` here is accepted for the same call shape and changes nothing.
    Raises :class:`CheckpointError` for a pickle, a truncated or tampered file,
    missing metadata, or weights that do not fit the spec.
    """
    path = Path(path)
    state, meta = _read(path)
    if weights_digest(state) != meta.get("weights_sha256"):
        raise CheckpointError(f"{path} weights do not match the digest in its metadata (tampered or corrupt)",
                              "re-create the checkpoint from its training run")
    if meta["model"] is None:  # a user's model, rebuilt by the factory it names: robustclip.checkpoints.foreign's job
        raise CheckpointError(f"{path} holds a user's model (factory {meta.get('factory')}), not a spec",
                              "load it with robustclip.load(path, trust_factory=True), which imports the factory "
                              "(importing runs its code), or pass --model on the command line")
    try:
        model = models.build(meta["model"])
    except RobustclipError as exc:
        raise CheckpointError(f"{path} has an invalid model spec: {exc.problem}", "re-create the checkpoint") from None
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid model spec: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              "re-create the checkpoint") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path} weights do not fit its model spec: {first}",
                              "the spec and weights come from different models; re-create the checkpoint") from None
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite weights (in {', '.join(bad[:3])})",
                              "the run diverged; retrain it with a smaller learning rate")
    meta_obj = _meta(meta, path)
    model.to(map_location).eval()
    return model, meta_obj
