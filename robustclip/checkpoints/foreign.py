"""Loading a model from any weights file a user hands us: the one place that turns a path into ``(model, meta)``.

Three kinds of file are read, none of them by unpickling:

* a robustclip checkpoint (``.safetensors`` with robustclip metadata): rebuilt from its model spec, or from the
  factory recorded by ``robustclip.save(model, path, factory="pkg.mod:fn")``;
* a plain safetensors state_dict (any ``.safetensors`` without robustclip metadata);
* a ``.pt``/``.pth`` state_dict, read with ``torch.load(weights_only=True, map_location="cpu")``; only tensors
  are accepted out of it.

A state_dict holds no architecture, so the user names the code that builds the network: ``--model
MODULE:CALLABLE`` (``model="MODULE:CALLABLE"`` here). MODULE is imported from the current folder or ``sys.path``;
CALLABLE is called with no arguments and must return an ``nn.Module``. **Importing a module runs its code**, so a
factory that a *file* names is imported only when the user names it too (``--model``) or passes
``trust_factory=True``; otherwise the error says which factory the file needs.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, RobustclipError
from .format import _META_KEY, CheckpointMeta, check_factory_ref, header_length, weights_digest

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_SUFFIXES = (".pt", ".pth")


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current folder first on ``sys.path`` while a user's module is imported and its factory called."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module file written after start-up must be seen
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def build_from_factory(ref: str) -> nn.Module:
    """Import ``MODULE`` of ``MODULE:CALLABLE`` (this runs its code) and call ``CALLABLE()``; the model in eval mode.

    The user's code runs fenced (:mod:`robustclip.core.usercode`): a missing module, any exception, ``SystemExit`` or
    ``KeyboardInterrupt`` while importing or building is a one-line :class:`RobustclipError` (exit 2), and what it
    prints goes to stderr. A callable that returns something other than an ``nn.Module`` is refused too.
    ``os._exit`` cannot be caught in-process (see :mod:`robustclip.core.usercode`).
    """
    from ..core.usercode import fenced

    check_factory_ref(ref)
    module_name, _, attr = ref.partition(":")
    with _cwd_on_path():
        missing: list[ModuleNotFoundError] = []

        def import_it() -> Any:
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError as exc:  # the module (or one it imports) is not installed: say where to run
                missing.append(exc)
                return None

        obj: Any = fenced(f"importing {module_name} (from --model {ref})", import_it,
                          fix="fix that module; robustclip only imports it and calls the factory")
        if missing:
            raise RobustclipError(f"cannot import {module_name} (from --model {ref}): {_one_line(missing[0])}",
                                  f"run from the folder that holds {module_name.split('.')[0]}, or put it on "
                                  "PYTHONPATH")
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise RobustclipError(f"{module_name} has no {attr} (from --model {ref})",
                                      f"name a function or class defined in {module_name}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise RobustclipError(f"{ref} is not callable", "name a function or nn.Module class that takes no "
                                  "arguments and returns the network")
        model = fenced(f"calling {ref}()", obj, fix="the factory must build the network with no arguments")
    if not isinstance(model, nn.Module):
        raise RobustclipError(f"{ref}() returned a {type(model).__name__}, not a torch.nn.Module",
                              "return the network (an nn.Module) from the factory")
    return model


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], *, path: Path | str, ref: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is one line naming the keys or shapes that differ."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(want[k].shape)} in the model"
              for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = ([f"missing keys {few(missing)}"] if missing else []) + \
            ([f"unexpected keys {few(unexpected)}"] if unexpected else []) + \
            ([f"shape of {few(shapes)}"] if shapes else [])
    if parts:
        raise CheckpointError(f"{path} does not fit the model built by {ref}: {'; '.join(parts)}",
                              "the weights file and --model must describe the same architecture")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{path} does not fit the model built by {ref}: {_one_line(exc)}",
                              "the weights file and --model must describe the same architecture") from None


def _check_state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state_dict of finite tensors keyed by strings, or a one-line CheckpointError."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} wrapper: only its tensors
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors",
                              "save model.state_dict() (torch.save or safetensors)")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path} entry {k!r} is a {type(v).__name__}, not a tensor",
                                  "save only model.state_dict() (tensors)")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path} tensor {k} has non-finite values (NaN or inf)",
                                  "the weights are broken; re-save them from a working model")
    return dict(state)


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save`` state_dict, read with ``weights_only=True``: no arbitrary object is ever unpickled."""
    from safetensors import SafetensorError

    try:
        with open(path, "rb") as fh:  # a file object: torch.load never guesses the format from the suffix
            state = torch.load(fh, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            zipfile.BadZipFile, OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path} cannot be read as a plain state_dict (torch.load with weights_only=True "
                              f"refused it: {_one_line(exc)})",
                              "save only tensors: torch.save(model.state_dict(), path), or safetensors") from None
    return _check_state(state, path)


def _read_safetensors(raw: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a safetensors file and its robustclip metadata document (None for a plain state_dict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from ..core.files import loads_json_bounded
    from .format import _MAX_DEPTH, _MAX_HEADER

    n = header_length(raw, path, fix="pass a .safetensors or .pt/.pth state_dict, or a robustclip checkpoint")
    try:  # bounded: a header nested 100,000 deep is refused before the recursive parser sees it
        header = loads_json_bounded(raw[8: 8 + n], max_depth=_MAX_DEPTH, max_bytes=_MAX_HEADER,
                                    what="the safetensors header")
        state = st_load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError, TypeError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {str(exc).splitlines()[0] if str(exc) else ''}",
                              "re-create it; it may be truncated or corrupt") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or _META_KEY not in meta:
        return state, None
    try:
        doc = loads_json_bounded(meta[_META_KEY], max_depth=_MAX_DEPTH, max_bytes=_MAX_HEADER, what="the metadata")
    except (TypeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        from .format import _read

        _read(path)  # raises the checkpoint reader's own one-line error for corrupt metadata
        raise CheckpointError(f"{path} has corrupt robustclip metadata", "re-create the checkpoint")
    return state, doc


def _set_dataset(meta: CheckpointMeta, dataset: str | None, path: Path) -> None:
    if dataset is None:
        return
    if meta.dataset not in ("unknown", dataset):
        raise CheckpointError(f"{path} is a {meta.dataset} model, --dataset says {dataset}",
                              f"drop --dataset or pass --dataset {meta.dataset}")
    meta.dataset = dataset


def _plain_state_meta(state: dict[str, torch.Tensor], ref: str, fmt: str) -> CheckpointMeta:
    return CheckpointMeta(model=None, weights_sha256=weights_digest(state), factory=ref, extra={"source": fmt})


def load_model(path: str | os.PathLike[str], *, model: str | None = None, dataset: str | None = None,
               trust_factory: bool = False,
               map_location: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """``(model in eval mode, metadata)`` from a robustclip checkpoint or a user's state_dict.

    ``model``: ``"MODULE:CALLABLE"``, the code that builds the network (imported and called here: it runs). It is
    required for a plain state_dict and overrides a checkpoint's spec or recorded factory. ``dataset``: the
    dataset the model classifies (recorded in the metadata; must agree with a checkpoint's). ``trust_factory``:
    import the factory a checkpoint names (``robustclip.save(..., factory=...)``) without ``model``.

    Raises :class:`~robustclip.errors.CheckpointError` (one line) for an unreadable, tampered or pickled file,
    for a state_dict without ``model``, and for weights whose keys or shapes do not fit the model.
    """
    from . import format as checkpoints

    p = Path(path)
    if model is not None:
        check_factory_ref(model)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist", "check the path")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a regular file", "pass a .safetensors or .pt/.pth file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:  # e.g. PermissionError: one line, not a traceback
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}", "check the path and permissions") \
            from None
    torch_file = head[:2] in _PICKLE_MAGIC or head[:4] == _ZIP_MAGIC or p.suffix.lower() in _TORCH_SUFFIXES
    if torch_file and not checkpoints.looks_like_safetensors(head, p.stat().st_size):
        if model is None:
            raise CheckpointError(f"{p} is a torch.save file: a state_dict holds no architecture",
                                  "pass --model MODULE:CALLABLE naming the code that builds the network (it is read "
                                  "with torch.load(weights_only=True); robustclip never unpickles other objects)")
        state = _read_torch(p)
        meta = _plain_state_meta(state, model, "torch-state-dict")
    else:
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {p}: {exc}", "check the path and permissions") from None
        state, doc = _read_safetensors(raw, p)
        if doc is not None and model is None and doc.get("model") is not None:  # rebuilt from its spec
            net, meta = checkpoints.load(p, map_location=map_location)
            _set_dataset(meta, dataset, p)
            return net, meta
        if doc is not None:  # a robustclip checkpoint: the full checks (digest, format) of checkpoints._read
            state, doc = checkpoints._read(p)
            if weights_digest(state) != doc.get("weights_sha256"):
                raise CheckpointError(f"{p} weights do not match the digest in its metadata (tampered or corrupt)",
                                      "re-create the checkpoint from its training run")
            meta = CheckpointMeta.from_dict(doc)
            recorded = meta.get("factory")
            if model is None:
                if not recorded:
                    raise CheckpointError(f"{p} has neither a model spec nor a factory",
                                          "pass --model MODULE:CALLABLE naming the code that builds the network")
                if not trust_factory:
                    raise CheckpointError(f"{p} was saved with factory {recorded}",
                                          f"pass --model {recorded} to import it (importing runs its code), or "
                                          "trust_factory=True in Python")
                model = check_factory_ref(str(recorded), what="the factory recorded in the checkpoint,")
            meta["factory"] = model
        else:
            if model is None:
                raise CheckpointError(f"{p} is a plain safetensors state_dict: it holds no architecture",
                                      "pass --model MODULE:CALLABLE naming the code that builds the network")
            state = _check_state(state, p)
            meta = _plain_state_meta(state, model, "safetensors-state-dict")
    net = build_from_factory(model)
    fit_weights(net, state, path=p, ref=model)
    _set_dataset(meta, dataset, p)
    net.to(map_location).eval()
    return net, meta


def check_classifier(model: nn.Module, x: torch.Tensor, n_classes: int | None, *, name: str = "model") -> int:
    """Run ``model`` on a couple of inputs ``x``; it must return ``(N, n_classes)`` logits, else a one-line error.

    With ``n_classes`` None any ``(N, k)`` output with k >= 2 passes. Returns the number of classes k.
    """
    sample = x[:2]
    shape = tuple(sample.shape)
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:  # the user's forward failed on inputs of the dataset's shape
        per = ", ".join(map(str, shape[1:]))
        raise RobustclipError(f"model {name} fails on a {shape} batch of the dataset's inputs: {_one_line(exc)}",
                              f"the model must take inputs in [0,1] of the data's shape (N, {per})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != shape[0] or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustclipError(f"model {name} maps a {shape} batch to {got}; a classifier must return "
                              f"({shape[0]}, {n_classes or 'classes'}) logits", "return logits of shape (N, classes)")
    if n_classes is not None and out.shape[1] != n_classes:
        raise RobustclipError(f"model {name} has {out.shape[1]} outputs but the dataset has {n_classes} classes: it "
                              f"must return ({shape[0]}, {n_classes}) logits",
                              "evaluate the model on the dataset it was trained for")
    return int(out.shape[1])


def load(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
         trust_factory: bool = False) -> tuple[nn.Module, CheckpointMeta]:
    """``robustclip.load``: rebuild the model of a checkpoint, ``(model in eval mode, metadata)``.

    A checkpoint with a model spec is rebuilt from it (:func:`robustclip.checkpoints.format.load`); one saved with
    ``factory=`` (a user's model) only with ``trust_factory=True``, which imports that factory (importing runs its
    code). Example::

        model, meta = robustclip.load("clip.safetensors")
    """
    return load_model(path, trust_factory=trust_factory, map_location=map_location)
