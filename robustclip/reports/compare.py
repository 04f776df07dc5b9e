"""Paired comparison of evaluated checkpoints: is A more robust than B, beyond the noise of a finite test set?

For every pair of checkpoints and every (norm, ε) cell (and clean accuracy), on their per-sample worst-case
outcomes (``samples.csv``):

* **same images** (equal images digests): the exact two-sided McNemar test on the discordant samples and
  Newcombe's hybrid score interval for paired data (method 10 of Newcombe 1998, Stat. Med. 17:2635);
* **different images**, or an evaluation that recorded no digest: compared *unpaired*, with Fisher's exact test and
  Newcombe's hybrid score interval for independent proportions (Newcombe 1998, Stat. Med. 17:873), and said so;
* **several seeds per setting** (same method and λ, different training seeds): the settings are compared with
  Welch's t-interval over the per-seed accuracies, seeds being the unit of replication as in the gate's
  retrained mode.

p-values are Holm-adjusted within each family: the pairs of one suite and dataset at one cell (and separately the
setting pairs there). A difference is *shown* when its Holm-adjusted p is below ``alpha`` (0.05): then the
family-wise false-alarm rate at that cell is at most 5%. Intervals are 95% and unadjusted.

Differences and intervals are fractions in [-1, 1] (A − B); sentences and console tables print points (percent).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from .. import stats
from ..errors import RobustclipError
from ..evaluation.folders import CLEAN, Cell, Evaluated, read_all
from . import labels as _labels

ALPHA = 0.05
"""Family-wise false-alarm rate of the comparisons at one cell (Holm)."""
FORMAT = "robustclip-comparison"
FORMAT_VERSION = 1


def cell_text(cell: Cell) -> str:
    """``L2 ε = 2``, or ``clean``."""
    return "clean" if cell == CLEAN else f"{cell[0]} ε = {cell[1]:g}"


def points(v: float, sign: bool = False) -> str:
    """A fraction as points (percent) with one decimal, never ``-0.0``: ``points(-0.0004) == "0.0"``."""
    text = f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"
    return text.replace("-0.0", "0.0") if text.lstrip("+-") == "0.0" else text


def p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def sentence(a: str, b: str, cell: Cell, diff: float, lo: float, hi: float, p: float, shown: bool, n_text: str,
             how: str = "") -> str:
    """The answer for one comparison, with its own figures: ``A is more robust than B at L2 ε = 2 by D points
    (95% interval [L, U], p = P)``, or ``A vs B at L2 ε = 2: no difference shown at n = N (...)``.

    ``diff``, ``lo``, ``hi``: A − B and its interval (fractions); ``p``: the p-value the decision used; ``how``: what
    else the reader must know (Holm, unpaired, seeds), appended inside the parentheses.
    """
    what = "more accurate on clean inputs" if cell == CLEAN else "more robust"
    at = "" if cell == CLEAN else f" at {cell_text(cell)}"
    extra = f"; {how}" if how else ""
    if shown:
        if diff < 0:
            a, b, diff, lo, hi = b, a, -diff, -hi, -lo
        return (f"{a} is {what} than {b}{at} by {points(diff)} points (95% interval [{points(lo)}, "
                f"{points(hi)}], p = {p_text(p)}{extra})")
    return (f"{a} vs {b}{at}: no difference shown at {n_text} ({a} − {b} = {points(diff, True)} points, 95% "
            f"interval [{points(lo)}, {points(hi)}], p = {p_text(p)}{extra})")


@dataclass
class Pair:
    """Two checkpoints compared at one cell. ``a``/``b``: their keys; ``difference`` = accuracy A − accuracy B with
    its 95% interval ``ci_low``..``ci_high`` (fractions); ``p_value``: two-sided, unadjusted (exact McNemar when
    ``paired``, else Fisher's exact test); ``p_holm``: Holm-adjusted over the ``family`` pairs at this cell;
    ``a_only``/``b_only``: samples only A (only B) gets right (paired only)."""

    a: str
    b: str
    a_label: str
    b_label: str
    a_checkpoint: str | None
    b_checkpoint: str | None
    suite: str
    dataset: str
    cell: Cell
    n_a: int
    n_b: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    paired: bool
    a_only: int | None = None
    b_only: int | None = None
    note: str | None = None
    p_holm: float = math.nan
    family: int = 1
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        """The difference is shown: Holm-adjusted p below ``alpha``."""
        return self.p_holm < self.alpha

    @property
    def test(self) -> str:
        return "exact McNemar" if self.paired else "Fisher exact (unpaired)"

    def sentence(self) -> str:
        """The answer for this pair, with its figures (see :func:`sentence`)."""
        how = [] if self.paired else ["unpaired: " + (self.note or "the images differ")]
        if self.family > 1:
            how.append(f"Holm-adjusted over {self.family} pairs")
        n_text = f"n = {self.n_a}" if self.n_a == self.n_b else f"n = {self.n_a} and {self.n_b}"
        return sentence(self.a_label, self.b_label, self.cell, self.difference, self.ci_low, self.ci_high,
                        self.p_holm, self.significant, n_text, "; ".join(how))

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "a_label": self.a_label, "b_label": self.b_label,
                "a_checkpoint": self.a_checkpoint, "b_checkpoint": self.b_checkpoint, "suite": self.suite,
                "dataset": self.dataset, "norm": self.cell[0], "eps": self.cell[1], "n_a": self.n_a, "n_b": self.n_b,
                "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "difference": self.difference,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "interval": "Newcombe hybrid score"
                + (" (paired)" if self.paired else " (unpaired)"), "p_value": self.p_value, "p_holm": self.p_holm,
                "family": self.family, "significant": self.significant, "paired": self.paired, "test": self.test,
                "a_only": self.a_only, "b_only": self.b_only, "note": self.note, "sentence": self.sentence()}


@dataclass
class SettingPair:
    """Two settings (method and λ) compared at one cell over their seeds: Welch's t on the per-seed accuracies
    ``seeds_a``/``seeds_b`` (fractions); ``difference`` = mean A − mean B with its 95% t-interval."""

    a: str
    b: str
    suite: str
    dataset: str
    cell: Cell
    seeds_a: list[float]
    seeds_b: list[float]
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan
    family: int = 1
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.p_holm < self.alpha

    def sentence(self) -> str:
        how = f"Welch t over {len(self.seeds_a)} and {len(self.seeds_b)} seeds"
        if self.family > 1:
            how += f"; Holm-adjusted over {self.family} pairs of settings"
        return sentence(self.a, self.b, self.cell, self.difference, self.ci_low, self.ci_high, self.p_holm,
                        self.significant, f"{len(self.seeds_a)} and {len(self.seeds_b)} seeds", how)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "suite": self.suite, "dataset": self.dataset, "norm": self.cell[0],
                "eps": self.cell[1], "seeds_a": self.seeds_a, "seeds_b": self.seeds_b,
                "difference": self.difference, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "interval": "Welch t", "p_value": self.p_value, "p_holm": self.p_holm, "family": self.family,
                "significant": self.significant, "test": "Welch t over seeds", "sentence": self.sentence()}


def compare_pair(a: Evaluated, b: Evaluated, cell: Cell, a_label: str, b_label: str, *, suite: str | None = None
                 ) -> Pair:
    """One unadjusted comparison of ``a`` and ``b`` at ``cell`` (paired when their images digests agree);
    ``suite``: the suite's name in the result (default ``a``'s)."""
    oa, ob = a.outcomes[cell], b.outcomes[cell]
    ka, kb = int(oa.sum()), int(ob.sum())

    def pair(lo: float, hi: float, p: float, paired: bool, a_only: int | None = None, b_only: int | None = None,
             note: str | None = None) -> Pair:
        return Pair(a.key, b.key, a_label, b_label, a.checkpoint, b.checkpoint, suite or a.suite, a.dataset, cell,
                    a.n, b.n,
                    ka / a.n, kb / b.n, ka / a.n - kb / b.n, lo, hi, p, paired, a_only, b_only, note)

    if a.images is not None and a.images == b.images and a.n == b.n:
        a_only, b_only = int((oa & ~ob).sum()), int((~oa & ob).sum())
        both = int((oa & ob).sum())
        lo, hi = stats.newcombe_paired(both, a_only, b_only, a.n - both - a_only - b_only)
        return pair(lo, hi, stats.mcnemar_two_sided(a_only, b_only), True, a_only, b_only)
    note = ("the images differ" if a.images is not None and b.images is not None else
            "no images digest recorded (evaluated before robustclip recorded one; re-run evaluate to pair them)")
    lo, hi = stats.newcombe_unpaired(ka, a.n, kb, b.n)
    return pair(lo, hi, stats.fisher_p(ka, a.n, kb, b.n), False, note=note)


def _adjust(items: list[Any], alpha: float) -> None:
    """Holm-adjust ``items`` (pairs or setting pairs) within each family: one suite, dataset and cell."""
    families: dict[tuple[str, str, Cell], list[Any]] = {}
    for it in items:
        families.setdefault((it.suite, it.dataset, it.cell), []).append(it)
    for fam in families.values():
        for it, p in zip(fam, stats.holm([it.p_value for it in fam]), strict=True):
            it.p_holm, it.family, it.alpha = p, len(fam), alpha


@dataclass
class Comparison:
    """Every pairwise comparison of a set of evaluations (see the module docstring).

    ``entries``: the evaluated checkpoints; ``labels``: their label text by key; ``pairs``: per pair and cell;
    ``settings``: per pair of settings with at least 2 seeds each, per cell; ``headlines``: the headline cell of
    each (suite, dataset); ``notes``: what the reader must know (unpaired pairs, settings without seeds).
    """

    entries: list[Evaluated]
    labels: dict[str, str]
    pairs: list[Pair]
    settings: list[SettingPair]
    headlines: dict[tuple[str, str], Cell]
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    groups: dict[str, tuple[str, str]] = field(default_factory=dict)

    def headline_of(self, key: str) -> Cell | None:
        """The headline cell of the group of checkpoint ``key``."""
        return self.headlines.get(self.groups.get(key, ("", "")))

    def at(self, cell: Cell | None = None) -> list[Pair]:
        """The pairs at ``cell`` (default: each group's headline)."""
        return [p for p in self.pairs if p.cell == (cell or self.headlines.get((p.suite, p.dataset)))]

    def answers(self) -> list[str]:
        """One sentence per suite and dataset, at its headline: the best setting against the runner-up over seeds
        when settings have seeds, else the best checkpoint against the runner-up (another checkpoint, not the same
        one evaluated again)."""
        out = []
        for (suite, dataset), cell in self.headlines.items():
            sets = [s for s in self.settings if (s.suite, s.dataset, s.cell) == (suite, dataset, cell)]
            pairs = [p for p in self.pairs if (p.suite, p.dataset, p.cell) == (suite, dataset, cell)]
            sha = {e.key: e.sha256 for e in self.entries}
            distinct = [p for p in pairs if sha[p.a] is None or sha[p.a] != sha[p.b]]  # one checkpoint twice: no
            items: list[Pair] | list[SettingPair] = sets or distinct or pairs
            if not items:
                continue
            means: dict[str, float] = {}
            for it in items:
                (na, nb), (ma, mb) = sides(it)
                means[na], means[nb] = ma, mb
            top = max(means, key=lambda k: means[k])
            mine = [it for it in items if top in sides(it)[0]]
            best = max(mine, key=lambda it: means[next(x for x in sides(it)[0] if x != top)])  # vs the runner-up
            out.append(best.sentence())
        return out

    def sentences(self, cell: Cell | None = None) -> list[str]:
        """Every pair's sentence at ``cell`` (default: the headline), setting pairs first."""
        sets = [s for s in self.settings if s.cell == (cell or self.headlines.get((s.suite, s.dataset)))]
        return [s.sentence() for s in sets] + [p.sentence() for p in self.at(cell)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the checkpoints, every pair and setting pair, the answers and notes (fractions)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "alpha": self.alpha,
                "checkpoints": [{"key": e.key, "label": self.labels[e.key], "checkpoint": e.checkpoint,
                                 "checkpoint_sha256": e.sha256, "folder": str(e.folder), "suite": e.suite,
                                 "dataset": e.dataset, "n": e.n, "images_sha256": e.images,
                                 "attack_seed": e.attack_seed, "method": e.method, "lam": e.lam, "seed": e.seed}
                                for e in self.entries],
                "headlines": [{"suite": s, "dataset": d, "norm": c[0], "eps": c[1]}
                              for (s, d), c in self.headlines.items()],
                "answers": self.answers(), "pairs": [p.to_dict() for p in self.pairs],
                "settings": [s.to_dict() for s in self.settings], "notes": self.notes}


def sides(it: Pair | SettingPair) -> tuple[tuple[str, str], tuple[float, float]]:
    """``((label A, label B), (accuracy A, accuracy B))`` of a pair, or of a setting pair (mean over seeds)."""
    if isinstance(it, SettingPair):
        return (it.a, it.b), (sum(it.seeds_a) / len(it.seeds_a), sum(it.seeds_b) / len(it.seeds_b))
    return (it.a_label, it.b_label), (it.accuracy_a, it.accuracy_b)


def _settings(entries: list[Evaluated], labels: dict[str, _labels.Label], cells: list[Cell], suite: str
              ) -> tuple[list[SettingPair], list[str]]:
    """Setting pairs (Welch over seeds) of one group, and notes on settings that could not take part."""
    by: dict[tuple[str, float | None], dict[int, Evaluated]] = {}
    for e in entries:
        lab = labels[e.key]
        if lab.seed is not None and lab.method != e.key:
            by.setdefault(lab.setting, {}).setdefault(lab.seed, e)  # one evaluation per seed
    multi = {s: list(runs.values()) for s, runs in by.items() if len(runs) >= 2}
    notes = []
    if multi and len(multi) < len(by):
        lone = [_labels.Label(m, lam).text() for (m, lam), runs in by.items() if len(runs) < 2]
        notes.append(f"{', '.join(lone)}: one seed only, so not in the comparison over seeds")
    out = []
    for (sa, ra), (sb, rb) in combinations(multi.items(), 2):
        ta, tb = _labels.Label(*sa).text(), _labels.Label(*sb).text()
        for cell in cells:
            va, vb = [e.accuracy(cell) for e in ra], [e.accuracy(cell) for e in rb]
            d, lo, hi, p = stats.welch(va, vb)
            out.append(SettingPair(ta, tb, suite, ra[0].dataset, cell, va, vb, d, lo, hi, p))
    return out, notes


def compare_evaluations(entries: list[Evaluated], *, labels: list[str] | dict[str, _labels.Label] | None = None,
                        group: bool = False, alpha: float = ALPHA) -> Comparison:
    """Compare evaluated checkpoints pairwise (see the module docstring).

    ``labels``: ``--label`` strings ``CKPT=METHOD:λ[:SEED]`` or ``{CKPT: Label}`` overriding the checkpoints'
    metadata. ``group``: compare within each suite and dataset; without it, evaluations of different suites or
    datasets are refused. Raises :class:`RobustclipError` for fewer than two checkpoints, mixed suites or
    datasets without ``group``, and bad or duplicate labels.
    """
    if not 0.0 < alpha < 1.0:
        raise RobustclipError(f"alpha {alpha!r} is not in (0, 1)", "e.g. alpha=0.05")
    if len(entries) < 2:
        raise RobustclipError(f"a comparison needs at least two evaluated checkpoints, got {len(entries)}",
                              "pass evaluation folders holding two or more checkpoints")
    groups: dict[tuple[str, str, str], list[Evaluated]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    if len(groups) > 1 and not group:
        kinds = []
        if len({(g[0], g[1]) for g in groups}) > 1:
            kinds.append("suites " + ", ".join(sorted({g[0] + ("" if len({h[1] for h in groups if h[0] == g[0]})
                                                                    == 1 else f" ({g[1][:8]})") for g in groups})))
        if len({g[2] for g in groups}) > 1:
            kinds.append("datasets " + ", ".join(sorted({g[2] for g in groups})))
        raise RobustclipError(f"the evaluations mix {' and '.join(kinds)}",
                              "compare like with like, or pass --group (group=True) to compare within each suite "
                              "and dataset")
    lab = _labels.assign(entries, labels)
    text = _labels.texts(entries, lab)
    pairs: list[Pair] = []
    settings: list[SettingPair] = []
    headlines: dict[tuple[str, str], Cell] = {}
    notes: list[str] = []
    names = {g: g[0] if sum(h[0] == g[0] for h in groups) == 1 else f"{g[0]} ({g[1][:8]})" for g in groups}
    where: dict[str, tuple[str, str]] = {}
    for g, members in groups.items():
        suite, dataset = names[g], g[2]
        where.update({e.key: (suite, dataset) for e in members})
        if len(members) < 2:
            notes.append(f"{text[members[0].key]} is the only checkpoint evaluated with suite {suite} on {dataset}: "
                         "nothing to compare it with")
            continue
        cells = sorted(set.intersection(*(set(e.outcomes) for e in members)), key=lambda c: (c != CLEAN, c))
        head = members[0].headline
        headlines[(suite, dataset)] = head if head in cells else cells[-1]
        for a, b in combinations(members, 2):
            pairs += [compare_pair(a, b, c, text[a.key], text[b.key], suite=suite) for c in cells]
        found, why = _settings(members, lab, cells, suite)
        settings += found
        notes += why
    unpaired = {(p.a_label, p.b_label, p.note) for p in pairs if not p.paired}
    if unpaired:
        notes.append(f"{len(unpaired)} pair(s) compared unpaired: "
                     + "; ".join(f"{a} vs {b} ({n})" for a, b, n in sorted(unpaired, key=str)[:5]))
    _adjust(pairs, alpha)
    _adjust(settings, alpha)
    return Comparison(entries, text, pairs, settings, headlines, alpha, notes, where)


def compare(*eval_dirs: str | os.PathLike[str], labels: list[str] | dict[str, _labels.Label] | None = None,
            group: bool = False, alpha: float = ALPHA) -> Comparison:
    """Compare the checkpoints evaluated in ``eval_dirs`` (``robustclip evaluate --out`` folders, or folders of
    them) pairwise: ``rc.compare("runs/eval-a", "runs/eval-b").answers()``.

    See :func:`compare_evaluations` for ``labels``, ``group`` and ``alpha``; the result's ``to_dict()`` is what
    ``robustclip compare --json`` prints.
    """
    if not eval_dirs:
        raise RobustclipError("no evaluation folder given", "pass the --out folders of robustclip evaluate")
    return compare_evaluations(read_all(list(eval_dirs)), labels=labels, group=group, alpha=alpha)


def pair_table(items: list[Pair] | list[SettingPair]) -> Any:
    """A pandas frame of string cells, one row per pair (or setting pair): ``pair``, accuracies, ``A − B`` and its
    95% interval in points, p, Holm-adjusted p, the test and whether the difference is shown."""
    import pandas as pd

    recs = []
    for it in items:
        (na, nb), (ma, mb) = sides(it)
        test = it.test if isinstance(it, Pair) else f"Welch t, {len(it.seeds_a)}+{len(it.seeds_b)} seeds"
        recs.append({"pair": f"{na} vs {nb}", "A %": points(ma), "B %": points(mb),
                     "A − B": points(it.difference, True),
                     "95% interval": f"[{points(it.ci_low)}, {points(it.ci_high)}]",
                     "p": p_text(it.p_value), "p (Holm)": p_text(it.p_holm), "test": test,
                     "shown": "yes" if it.significant else "no"})
    return pd.DataFrame(recs, columns=["pair", "A %", "B %", "A − B", "95% interval", "p", "p (Holm)", "test",
                                       "shown"])
