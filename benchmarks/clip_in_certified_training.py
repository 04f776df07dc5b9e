"""Does CLIP's penalty help certified training? lipschitz-margin against the hybrid clip-lipschitz-margin, equal time.

Both methods train the CPU preset's 2C2F MinMax net (``robustclip/presets/certified-cpu.toml``: conv 16 4x4/2,
conv 32 4x4/2, fc 100, fc 10; Adam 1e-3 with cosine decay, batch 256, GloRo's TRADES-KL loss with weight 1.5 at
L2 ε = 1.58, ε ramped over the first half of training), but for a reduced time budget, the same for both: the
hybrid adds CLIP's penalty (λ, 64 pairs at radius 2, redrawn every 20 steps) and costs more per epoch, so it gets
fewer epochs (``--epochs-margin`` / ``--epochs-hybrid``, set from a timing probe so that both fill the budget; the
measured training seconds of every run are in the output, so the budget's equality can be checked).

Each run keeps the epoch the trainer chooses on its own validation split (the power-iteration estimate of certified
accuracy; selection only). Its certified accuracy at L2 ε = 1.58 is then measured with the sound bound
(``robustclip.bounds.certify.certify`` with the Lipschitz method: SVD / Gram-iteration layer norms times the last
layer's row distances, the bound ``robustclip evaluate`` uses) on that validation split and on the first ``--n``
test images. Per method: mean ± sample std over seeds and the 95% Student-t interval of the mean
(``robustclip.stats``), and the same for the per-seed difference hybrid − margin (seeds paired: same data split and
initialisation). With ``--checkpoint PATH`` the hybrid run with the highest validation certified accuracy is saved
there, if its validation clean accuracy is at least 90%.

    OMP_NUM_THREADS=1 python benchmarks/clip_in_certified_training.py --work /tmp/cict \\
        --out benchmarks/results/clip-in-certified-training \\
        --checkpoint reports/paper/checkpoints/mnist-clip-certified-best.safetensors

Writes ``--out``.csv (one row per run) and ``--out``.md (the table and its provenance). Finished runs are kept under
``--work`` and reused. Training seconds are wall-clock, so they depend on the machine's load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from robustclip import stats
from robustclip.bounds.certify import certify
from robustclip.checkpoints import format as checkpoints
from robustclip.core import files as _io
from robustclip.data import datasets as data
from robustclip.training import config as config_mod
from robustclip.training import trainer as training

SPEC = {"arch": "cnn", "activation": "minmax"}
EPS = 1.58
MARGIN = {"eps": EPS, "loss": "trades", "weight": 1.5}
CLIP = {"pairs": 64, "radius": 2.0, "refresh_every": 20, "every": 1}
MIN_CLEAN = 0.90
"""The validation clean accuracy a hybrid checkpoint needs to be saved (a fraction)."""


def config(method: str, seed: int, epochs: int, lam: float) -> config_mod.TrainConfig:
    """The run's :class:`TrainConfig`: the certified-cpu preset's settings for ``method`` (``lipschitz-margin`` or
    ``clip-lipschitz-margin``) and ``seed``, trained for ``epochs``; ``lam`` is CLIP's λ of the hybrid."""
    extra: dict[str, Any] = {"lam": lam, "clip": dict(CLIP)} if method == "clip-lipschitz-margin" else {}
    return config_mod.TrainConfig(dataset="mnist", model=dict(SPEC), reg=method, settings={"margin": dict(MARGIN)},
                                epochs=epochs, batch_size=256, optimizer="adam", lr=1e-3, lr_schedule="cosine",
                                lip_probe_pairs=0, seed=seed, **extra)


def probe(lam: float, rounds: int = 2) -> dict[str, float]:
    """CPU seconds (this process, one thread) of one full training epoch of each method, the median of ``rounds``
    epochs taken in turn (margin, hybrid, margin, ...), validation scoring included: the budget's unit, which the
    load of a shared machine changes far less than wall-clock seconds."""
    got: dict[str, list[float]] = {"lipschitz-margin": [], "clip-lipschitz-margin": []}
    for _ in range(rounds):
        for method in got:
            tr = training.Trainer(config(method, 0, 1, lam), progress=False)
            t0 = time.process_time()
            tr.epoch()
            got[method].append(time.process_time() - t0)
    return {m: statistics.median(v) for m, v in got.items()}


def certified(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(clean accuracy, accuracy certified at L2 ``EPS`` by the sound Lipschitz bound) of ``model`` on ``x``
    ``(N, 1, 28, 28)`` in [0,1] with labels ``y`` ``(N,)``; fractions."""
    res = certify(model, x, y, [("L2", EPS)], methods=("lipschitz",))
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    return clean, float(res.best[("L2", EPS)].float().mean())


def run_one(work: Path, method: str, seed: int, epochs: int, lam: float, test: data.Split) -> dict[str, Any]:
    """Train (or reuse from ``work``) one run and measure it; one row of the output."""
    cfg = config(method, seed, epochs, lam)
    path = work / f"{method}-e{epochs}-s{seed}.safetensors"
    if not path.is_file():
        res = training.train(cfg, progress=False)
        checkpoints.save(res.model, path, res.meta)
    model, meta = checkpoints.load(path)
    _, val = training.load_training_data(cfg)
    assert val is not None
    val_clean, val_cert = certified(model, val.x, val.y)
    test_clean, test_cert = certified(model, test.x, test.y)
    return {"method": method, "lam": lam if method == "clip-lipschitz-margin" else 0.0, "seed": seed,
            "epochs": epochs, "best_epoch": meta.train["best_epoch"],
            "train_seconds": round(float(meta.train["seconds"]), 1), "val_n": int(val.y.numel()),
            "val_clean": val_clean, "val_certified": val_cert, "test_n": int(test.y.numel()),
            "test_clean": test_clean, "test_certified": test_cert, "checkpoint": str(path)}


def _cell(values: list[float]) -> tuple[str, str]:
    """("mean ± sd", "[lo, hi]") in % of ``values`` (one per seed), the interval the 95% Student-t one."""
    st = [float(v) for v in values]
    mean = statistics.fmean(st)
    if len(st) < 2:
        return f"{100 * mean:.1f}", ""
    sd = statistics.stdev(st)
    half = stats.mean_halfwidth(sd, len(st))
    return f"{100 * mean:.1f} ± {100 * sd:.1f}", f"[{100 * (mean - half):.1f}, {100 * (mean + half):.1f}]"


def table(df: pd.DataFrame) -> str:
    """The Markdown table: per method, clean and certified accuracy on validation and test, then the paired
    difference hybrid − margin per seed."""
    lines = ["| method | seeds | epochs | wall s of training (mean) | val clean | val certified | 95% CI "
             "| test clean | test certified | 95% CI |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, g in df.groupby("method", sort=False):
        name = f"{method} (λ = {g.lam.iloc[0]:g})" if method == "clip-lipschitz-margin" else method
        vc, vci = _cell(list(g.val_certified))
        tc, tci = _cell(list(g.test_certified))
        lines.append(f"| {name} | {len(g)} | {int(g.epochs.iloc[0])} | {g.train_seconds.mean():.0f} "
                     f"| {_cell(list(g.val_clean))[0]} | {vc} | {vci} | {_cell(list(g.test_clean))[0]} | {tc} "
                     f"| {tci} |")
    a = df[df.method == "lipschitz-margin"].set_index("seed")
    b = df[df.method == "clip-lipschitz-margin"].set_index("seed")
    seeds = sorted(set(a.index) & set(b.index))
    if seeds:
        dv = [b.val_certified[s] - a.val_certified[s] for s in seeds]
        dt = [b.test_certified[s] - a.test_certified[s] for s in seeds]
        dvc, dvci = _cell(dv)
        dtc, dtci = _cell(dt)
        dcl = _cell([b.val_clean[s] - a.val_clean[s] for s in seeds])[0]
        dtl = _cell([b.test_clean[s] - a.test_clean[s] for s in seeds])[0]
        lines.append(f"| difference, hybrid − margin (paired by seed) | {len(seeds)} | | | {dcl} | {dvc} | {dvci} "
                     f"| {dtl} | {dtc} | {dtci} |")
    return "\n".join(lines)


def verdict(df: pd.DataFrame) -> str:
    """One honest sentence from the paired differences on test and validation data."""
    a = df[df.method == "lipschitz-margin"].set_index("seed")
    b = df[df.method == "clip-lipschitz-margin"].set_index("seed")
    seeds = sorted(set(a.index) & set(b.index))
    if len(seeds) < 2:
        return "Fewer than two paired seeds: no interval, no verdict."
    parts = []
    for split in ("val", "test"):
        d = [b[f"{split}_certified"][s] - a[f"{split}_certified"][s] for s in seeds]
        mean, half = statistics.fmean(d), stats.mean_halfwidth(statistics.stdev(d), len(d))
        lo, hi = mean - half, mean + half
        where = "validation" if split == "val" else "test"
        if lo > 0:
            parts.append(f"on {where} data the hybrid certifies more (difference {100 * mean:+.1f} points, 95% "
                         f"interval [{100 * lo:+.1f}, {100 * hi:+.1f}], above 0)")
        elif hi < 0:
            parts.append(f"on {where} data the hybrid certifies less (difference {100 * mean:+.1f} points, 95% "
                         f"interval [{100 * lo:+.1f}, {100 * hi:+.1f}], below 0)")
        else:
            parts.append(f"on {where} data the difference is {100 * mean:+.1f} points with a 95% interval of "
                         f"[{100 * lo:+.1f}, {100 * hi:+.1f}], which contains 0")
    helps = all(p.startswith(("on validation data the hybrid certifies more", "on test data the hybrid certifies more"))
                for p in parts)
    return ("**CLIP's penalty helps certified training here**: " if helps else
            "**Not shown that CLIP's penalty helps certified training**: ") + "; ".join(parts) + (
        f". With {len(seeds)} seeds the Student-t interval is wide (t(0.975, {len(seeds) - 1}) = "
        f"{stats.t_quantile(0.975, len(seeds) - 1):.1f}); more seeds, a longer budget (the preset's 50 epochs) or "
        "a GPU would narrow it.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for the runs' checkpoints (reused when present)")
    ap.add_argument("--out", required=True, help="path stem of the CSV and Markdown results")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lam", type=float, default=0.05, help="CLIP's λ in the hybrid (the preset's larger value)")
    ap.add_argument("--epochs-margin", type=int, default=21)
    ap.add_argument("--epochs-hybrid", type=int, default=14)
    ap.add_argument("--budget", default="3 CPU-minutes", help="the budget the epochs were set for, as stated")
    ap.add_argument("--n", type=int, default=1000, help="first N test images")
    ap.add_argument("--no-probe", dest="probe", action="store_false",
                    help="skip the CPU-time probe of one epoch per method (about a minute)")
    ap.add_argument("--checkpoint", help="save the best hybrid run (on validation) here, if clean >= 90%%")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out_csv, out_md = Path(f"{a.out}.csv"), Path(f"{a.out}.md")
    for p in (out_csv, out_md, *([Path(a.checkpoint)] if a.checkpoint else [])):
        if not p.parent.is_dir():
            raise SystemExit(f"clip_in_certified_training: error: no folder {p.parent} -- create it first")
    seeds = [int(s) for s in a.seeds.split(",")]
    test = data.load("mnist", "test").subset(a.n)
    rows = []
    for seed in seeds:  # seed-major: a cut-short run still has paired seeds
        for method, epochs in (("lipschitz-margin", a.epochs_margin), ("clip-lipschitz-margin", a.epochs_hybrid)):
            r = run_one(work, method, seed, epochs, a.lam, test)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
            rows.append(r)
    df = pd.DataFrame(rows)
    _io.write_text(out_csv, df.drop(columns=["checkpoint"]).to_csv(index=False))
    saved = ""
    if a.checkpoint:
        hyb = df[df.method == "clip-lipschitz-margin"]
        best = hyb.loc[hyb.val_certified.idxmax()]
        if best.val_clean >= MIN_CLEAN:
            with _io.atomic_path(a.checkpoint) as tmp:
                shutil.copyfile(best.checkpoint, tmp)
            saved = (f"\n\nThe hybrid run with the highest validation certified accuracy (seed {int(best.seed)}: "
                     f"{100 * best.val_certified:.1f}% certified, {100 * best.val_clean:.1f}% clean on validation; "
                     f"{100 * best.test_certified:.1f}% / {100 * best.test_clean:.1f}% on the first "
                     f"{int(best.test_n):,} test images) is saved as `{a.checkpoint}`.")
        else:
            saved = (f"\n\nNo hybrid checkpoint saved: the best on validation has {100 * best.val_clean:.1f}% clean "
                     f"accuracy there, below {100 * MIN_CLEAN:.0f}%.")
    cost = probe(a.lam) if a.probe else {}
    budget = "" if not cost else (
        " CPU seconds per epoch, one thread, measured by a probe in the same process after training (median of 2): "
        f"lipschitz-margin {cost['lipschitz-margin']:.1f}, hybrid {cost['clip-lipschitz-margin']:.1f}; so "
        f"{a.epochs_margin} and {a.epochs_hybrid} epochs are budgets of "
        f"{a.epochs_margin * cost['lipschitz-margin'] / 60:.1f} and "
        f"{a.epochs_hybrid * cost['clip-lipschitz-margin'] / 60:.1f} CPU-minutes (the hybrid's is "
        f"{a.epochs_hybrid * cost['clip-lipschitz-margin'] / (a.epochs_margin * cost['lipschitz-margin']):.0%} of "
        "the margin's). The wall-clock seconds in the "
        "table depend on what else ran on the shared cores at the time.")
    prov = (f"Generated by `python benchmarks/clip_in_certified_training.py --seeds {a.seeds} --lam {a.lam:g} "
            f"--epochs-margin {a.epochs_margin} --epochs-hybrid {a.epochs_hybrid} --n {a.n}` "
            f"(commit {_io.git_commit() or 'not a git checkout'}, {time.strftime('%Y-%m-%d')}): seeds {a.seeds}, "
            f"epochs set for a budget of about {a.budget} of training per run, one thread each "
            "(OMP_NUM_THREADS=1), on a 2-core machine shared with other jobs.")
    text = (f"*{prov}*\n\n**CLIP in certified training: lipschitz-margin against clip-lipschitz-margin.**\n\n"
            "The 2C2F MinMax net of `robustclip/presets/certified-cpu.toml` (Adam 1e-3 cosine, batch 256, TRADES-KL "
            f"weight 1.5 at L2 ε = {EPS}, ε ramped over the first half), each run for an equal, reduced budget (the "
            "preset trains 50 epochs): the hybrid adds CLIP's penalty (64 pairs at radius 2) and costs more per "
            f"epoch, so it gets fewer epochs.{budget}\n\n"
            "Accuracies in %: mean ± sample std over seeds and the 95% Student-t interval of the mean; certified at "
            f"L2 ε = {EPS} by the sound per-class-pair Lipschitz bound, on each run's own validation split "
            f"({int(df.val_n.min()):,} images) and on the first {a.n:,} test images. Each run keeps the epoch chosen "
            "on its validation split.\n\n"
            + table(df) + "\n\n" + verdict(df) + saved + "\n\nPer run: `" + out_csv.name + "`.\n")
    _io.write_text(out_md, text)
    print(text)


if __name__ == "__main__":
    main()
