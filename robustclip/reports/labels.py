"""Labels of evaluated checkpoints in comparisons and reports: ``CLIP λ = 0.5``, from the checkpoint's metadata
(method, λ, seed) or from the user's ``CKPT=METHOD:λ[:SEED]``.

>>> parse_label("runs/a.safetensors=clip:0.5:1")
('runs/a.safetensors', Label(method='clip', lam=0.5, seed=1))
>>> Label("weight", 1e-3).text(), Label("clip", 0.5, 2).text(with_seed=True), Label("none", 0.0).text()
('weight λ = 1e-3', 'CLIP λ = 0.5 (seed 2)', 'plain')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RobustclipError
from ..evaluation.folders import Evaluated

SHORT_NAMES = {"none": "plain", "plain": "plain", "clip": "CLIP", "weight": "weight", "adversarial": "adversarial",
               "trades": "TRADES", "clip-adversarial": "CLIP + adversarial", "lipschitz-margin": "Lipschitz margin",
               "clip-lipschitz-margin": "CLIP + Lipschitz margin"}
"""A regulariser's name in a sentence ("CLIP λ = 0.5 is more robust than weight λ = 1e-3"); others as given."""
NO_LAMBDA = frozenset({"none", "plain", "lipschitz-margin"})
"""Methods that take no λ: their labels leave it out."""
_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LABEL_FORMAT = "CKPT=METHOD:λ[:SEED]"


def lam_text(lam: float) -> str:
    """λ as people write it: ``0.5``, ``0.01``, ``100``, and below 0.01 as a power of ten, ``1e-3``, ``2.5e-4``.

    >>> [lam_text(v) for v in (0.5, 1e-3, 2.5e-4, 0.005, 0.01, 100.0, 0.0, 1e6)]
    ['0.5', '1e-3', '2.5e-4', '5e-3', '0.01', '100', '0', '1e6']
    """
    if lam != 0 and (abs(lam) < 0.01 or abs(lam) >= 1e5):
        mant, _, exp = f"{lam:.3e}".partition("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{lam:g}"


@dataclass(frozen=True)
class Label:
    """A checkpoint's setting: its training ``method`` (a regulariser's name, or the user's own word), ``lam`` (λ;
    None when unknown or not used) and ``seed`` (None when unknown)."""

    method: str
    lam: float | None = None
    seed: int | None = None

    @property
    def setting(self) -> tuple[str, float | None]:
        """``(method, λ)``: checkpoints sharing it differ only by seed."""
        return (self.method, self.lam)

    def text(self, *, with_seed: bool = False) -> str:
        """``CLIP λ = 0.5``, with `` (seed 2)`` when asked and known."""
        out = SHORT_NAMES.get(self.method, self.method)
        if self.lam is not None and self.method not in NO_LAMBDA:
            out += f" λ = {lam_text(self.lam)}"
        if with_seed and self.seed is not None:
            out += f" (seed {self.seed})"
        return out


def parse_label(spec: str) -> tuple[str, Label]:
    """``CKPT=METHOD:λ[:SEED]`` as ``(CKPT, Label)``; a one-line :class:`RobustclipError` for anything else (a λ
    that is not a finite number >= 0, a seed that is not a whole number, a missing part)."""
    ckpt, eq, rest = str(spec).rpartition("=")
    fix = f"write --label {LABEL_FORMAT}, e.g. --label runs/a.safetensors=clip:0.5:0"
    if not eq or not ckpt.strip() or not rest.strip():
        raise RobustclipError(f"--label {spec!r:.120} is not {LABEL_FORMAT}", fix)
    parts = rest.split(":")
    if len(parts) not in (2, 3):
        raise RobustclipError(f"--label {spec!r:.120}: {rest!r:.60} is not METHOD:λ or METHOD:λ:SEED", fix)
    method, lam_s = parts[0].strip(), parts[1].strip()
    if not _METHOD_RE.match(method):
        raise RobustclipError(f"--label {spec!r:.120}: method {method!r:.60} is not a name (letters, digits, "
                              "'-', '_', '.', '+')", fix)
    try:
        lam = float(lam_s)
    except ValueError:
        raise RobustclipError(f"--label {spec!r:.120}: λ {lam_s!r:.40} is not a number", fix) from None
    if not math.isfinite(lam) or lam < 0:
        raise RobustclipError(f"--label {spec!r:.120}: λ {lam_s!r:.40} is not a finite number >= 0",
                              "give λ as a finite number, e.g. clip:0.5 or weight:1e-3")
    seed = None
    if len(parts) == 3:
        try:
            seed = int(parts[2].strip())
        except ValueError:
            raise RobustclipError(f"--label {spec!r:.120}: seed {parts[2]!r:.40} is not a whole number",
                                  fix) from None
    return ckpt.strip(), Label(method, lam, seed)


CSV_COLUMNS = ("checkpoint", "method", "lam", "seed")
"""The columns of a labels file (``--labels FILE``); ``seed`` may be left out, or empty in a row."""
MAX_CSV_BYTES = 4 * 1024 * 1024


def read_labels_csv(path: str | Path) -> list[str]:
    """The rows of the labels file ``path`` (CSV with a header naming :data:`CSV_COLUMNS`, in any order) as
    ``CKPT=METHOD:λ[:SEED]`` strings, each checked like ``--label`` (:func:`parse_label`): a one-line
    :class:`RobustclipError` naming the file and line for a missing column, an empty cell, a λ that is not a finite
    number >= 0 or a seed that is not a whole number. Duplicate labels are refused where labels are assigned
    (:func:`assign`).

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = open(f, "w").write("checkpoint,method,lam,seed\\na.pt,clip,0.5,0\\nb.pt,none,0,\\n")
    >>> read_labels_csv(f)
    ['a.pt=clip:0.5:0', 'b.pt=none:0']
    """
    import csv
    import io

    from ..core.validate import read_bytes

    raw = read_bytes(path, "labels file", max_bytes=MAX_CSV_BYTES)
    fix = f"write a CSV file with the header {','.join(CSV_COLUMNS)} and one row per checkpoint"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RobustclipError(f"labels file {path} is not UTF-8 text", fix) from None
    rows = list(csv.reader(io.StringIO(text)))
    while rows and not any(c.strip() for c in rows[0]):
        rows.pop(0)
    if not rows:
        raise RobustclipError(f"labels file {path} is empty", fix)
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in CSV_COLUMNS[:3] if c not in header]
    if missing:
        raise RobustclipError(f"labels file {path} has no column {', '.join(missing)} (its header: "
                              f"{','.join(header)[:120]})", fix)
    col = {c: header.index(c) for c in CSV_COLUMNS if c in header}
    specs: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in col.items()}
        empty = [c for c in CSV_COLUMNS[:3] if not cells[c]]
        if empty:
            raise RobustclipError(f"labels file {path} line {n}: no {', '.join(empty)}",
                                  "give every row a checkpoint, a method and λ (0 for plain training)")
        spec = f"{cells['checkpoint']}={cells['method']}:{cells['lam']}"
        if cells.get("seed"):
            spec += f":{cells['seed']}"
        try:
            parse_label(spec)
        except RobustclipError as exc:
            problem = exc.problem.split(": ", 1)[1] if ": " in exc.problem else exc.problem
            raise RobustclipError(f"labels file {path} line {n}: {problem}", exc.fix) from None
        specs.append(spec)
    if not specs:
        raise RobustclipError(f"labels file {path} has a header but no rows", fix)
    return specs


def _names(e: Evaluated) -> set[str]:
    """What ``CKPT`` in ``--label CKPT=...`` may say to name ``e``: its key, model name, or checkpoint path (as
    given to evaluate, its file name, or that without its extension)."""
    out = {e.key, e.name}
    if e.checkpoint:
        p = Path(e.checkpoint)
        out |= {e.checkpoint, p.name, p.name.removesuffix(".safetensors").removesuffix(".pth").removesuffix(".pt")}
    return out


def assign(entries: list[Evaluated], overrides: list[str] | dict[str, Label] | None = None) -> dict[str, Label]:
    """The label of each entry (by key): ``overrides`` (``--label`` strings, or ``{CKPT: Label}``) first, else
    the checkpoint's metadata, else its model name.

    Raises :class:`RobustclipError` for an override naming no evaluated checkpoint, a checkpoint labelled twice,
    two overrides with one label, and two different checkpoints (by digest) left with one label.
    """
    given: dict[str, Label] = {}
    if isinstance(overrides, dict):
        given = dict(overrides)
    else:
        for spec in overrides or []:
            ckpt, label = parse_label(spec)
            if ckpt in given:
                raise RobustclipError(f"--label names {ckpt} twice", "label each checkpoint once")
            given[ckpt] = label
    seen: dict[Label, str] = {}
    for ckpt, label in given.items():
        if label in seen:
            raise RobustclipError(f"duplicate label {label.method}:{label.lam:g}"
                                  f"{'' if label.seed is None else f':{label.seed}'} for {seen[label]} and {ckpt}",
                                  "give each checkpoint its own METHOD:λ:SEED (a seed tells runs of one setting "
                                  "apart)")
        seen[label] = ckpt
    out: dict[str, Label] = {}
    for ckpt, label in given.items():
        hits = [e for e in entries if ckpt in _names(e)]
        if not hits:
            names = ", ".join(sorted({e.checkpoint or e.key for e in entries}))
            raise RobustclipError(f"--label {ckpt}: no evaluated checkpoint has this name or path",
                                  f"name one of: {names[:300]}")
        for e in hits:
            if e.key in out:
                raise RobustclipError(f"checkpoint {e.key} gets two labels from --label", "label each checkpoint once")
            out[e.key] = label
    for e in entries:
        if e.key not in out:
            out[e.key] = Label(e.method, e.lam, e.seed) if e.method else Label(e.key)
    _check_unique(entries, out)
    return out


def _check_unique(entries: list[Evaluated], labels: dict[str, Label]) -> None:
    """Two different checkpoints must not share a label (the same checkpoint evaluated twice may)."""
    owner: dict[Label, Evaluated] = {}
    for e in entries:
        lab = labels[e.key]
        other = owner.get(lab)
        if other is None:
            owner[lab] = e
            continue
        same = (e.sha256 is not None and e.sha256 == other.sha256)
        if not same:
            raise RobustclipError(f"duplicate labels: checkpoints {other.key} and {e.key} are both "
                                  f"{lab.text(with_seed=True)}",
                                  f"tell them apart with --label {LABEL_FORMAT} (e.g. another seed)")


def texts(entries: list[Evaluated], labels: dict[str, Label]) -> dict[str, str]:
    """Each entry's label as text, unique: with its seed where another checkpoint shares its setting, and with
    its folder (or key) where the same checkpoint was evaluated more than once."""
    settings: dict[tuple[str, float | None], set[int | None]] = {}
    for e in entries:
        lab = labels[e.key]
        settings.setdefault(lab.setting, set()).add(lab.seed)
    out = {e.key: labels[e.key].text(with_seed=len(settings[labels[e.key].setting]) > 1) for e in entries}
    counts: dict[str, int] = {}
    for t in out.values():
        counts[t] = counts.get(t, 0) + 1
    dupes: dict[str, list[Evaluated]] = {}
    for e in entries:
        if counts[out[e.key]] > 1:
            dupes.setdefault(out[e.key], []).append(e)
    for t, group in dupes.items():  # one checkpoint evaluated in several folders: name the folder (else the key)
        by_folder = len({e.folder.name for e in group}) == len(group)
        for e in group:
            out[e.key] = f"{t} [{e.folder.name if by_folder else e.key}]"
    return out
