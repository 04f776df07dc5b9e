"""Sanity warnings and what a researcher sees: untrained models are warned about wherever results appear (sweep
output, evaluate, the report's first screen), a worst case above clean is a bug (exit 3), every report figure is in
percent with honest axes (read back from the matplotlib Axes), the provenance names the exact command, and the
console table of a curve suite is one row per ε.

The tiny sweep is the one the issue ran: 2 methods, 1 seed, 2 epochs, 64 training and 64 test images (flags mode).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex

import pandas as pd
import pytest
import torch
from tiny import SUITE_TOML, one_thread, run_cli
from torch import nn

from robustclip.evaluation import sanity
from robustclip.evaluation.runner import evaluate
from robustclip.reports import console, figures, tables
from robustclip.reports import pages as reports

# --------------------------------------------------------------------------- the checks themselves


def test_near_chance_by_accuracy_or_by_loss():
    assert sanity.near_chance(0.24, 10, 2.29)  # the models: 24% clean, loss 2.29 (chance 2.30)
    assert sanity.near_chance(0.20, 10) and sanity.near_chance(0.95, 10, 2.1)  # 2.1 >= 0.9 ln 10 = 2.07
    assert sanity.near_chance(0.21, 10, 0.5) == []  # 21% > 10% + 10 points; a low loss
    assert sanity.near_chance(0.55, 2) and not sanity.near_chance(0.61, 2)  # 1/2 + 10 points
    assert sanity.near_chance(None, 10, None) == [] and sanity.near_chance(0.1, None) == []
    msg = sanity.near_chance(0.24, 10, 2.29)[0]
    assert msg.startswith("NEAR CHANCE:") and "2.290" in msg and "24.0%" not in msg  # 24% > 10% + 10 points
    both = sanity.near_chance(0.15, 10, 2.29)[0]
    assert "15.0%" in both and "chance is 10.0%" in both and "2.290" in both and "2.303" in both


def test_not_converged_when_the_loss_still_falls_fast():
    assert sanity.not_converged([2.3, 1.0, 0.6])[0].startswith("NOT CONVERGED:")  # fell 40% in the last epoch
    assert sanity.not_converged([2.3, 0.31, 0.30]) == []  # 3%: flat enough
    assert sanity.not_converged([0.5]) == [] and sanity.not_converged([]) == []
    assert sanity.not_converged([1.0, None, 0.5])  # missing values are skipped, not read as zero


class Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.lin(x.flatten(1)), 1)


class Noisy(Softmaxed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)) + 0.1 * torch.randn(x.shape[0], 3)


def test_output_checks_catch_probabilities_and_random_outputs():
    x = torch.rand(16, 4)
    soft = sanity.output_checks(Softmaxed(), x)
    assert len(soft) == 1 and "probabilities" in soft[0] and soft[0].startswith("GRADIENT MASKING?")
    noisy = sanity.output_checks(Noisy(), x)
    assert len(noisy) == 1 and "randomised" in noisy[0]
    plain = Softmaxed()
    plain.forward = lambda x: plain.lin(x.flatten(1))  # type: ignore[method-assign]
    assert sanity.output_checks(plain, x) == []


def _frame(rows):
    return pd.DataFrame([{"model": "m", "norm": nm, "eps": e, "attack": a, "accuracy": acc} for a, nm, e, acc in rows])


def test_square_beating_every_white_box_attack_by_more_than_0_2_points():
    f = _frame([("clean", "none", 0.0, 0.9), ("pgd", "L2", 1.0, 0.50), ("apgd-ce", "L2", 1.0, 0.49),
                ("square", "L2", 1.0, 0.40), ("pgd", "L2", 2.0, 0.30), ("square", "L2", 2.0, 0.299)])
    flags = sanity.square_beats_whitebox(f)
    assert len(flags) == 1 and "ε=1" in flags[0] and "40.0%" in flags[0] and "49.0%" in flags[0]


def test_a_worst_case_above_clean_is_a_bug():
    good = _frame([("clean", "none", 0.0, 0.5), ("worst_case", "L2", 1.0, 0.5)])
    sanity.check_worst_case(good)
    bad = _frame([("clean", "none", 0.0, 0.5), ("worst_case", "L2", 1.0, 0.6)])
    with pytest.raises(sanity.ResultBug, match="above its clean accuracy"):
        sanity.check_worst_case(bad)
    assert isinstance(sanity.ResultBug("x"), AssertionError)


def test_evaluate_flags_a_softmax_model_near_chance():
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,))
    with pytest.warns(UserWarning):
        res = evaluate(Softmaxed(), x, y, suite=_suite(), n_classes=3, progress=False, certify=False)
    assert any(f.startswith("NEAR CHANCE:") for f in res.flags) or res.accuracy("clean") > 1 / 3 + 0.1
    assert any("probabilities" in f for f in res.flags)


def _suite():
    from robustclip.attacks.suites import parse_suite

    return parse_suite({"name": "t", "n": 32, "batch_size": 32, "seed": 0, "eps": {"L2": [0.5, 1.0]},
                        "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 2}]})


# --------------------------------------------------------------------------- console


def test_console_table_is_one_row_per_eps_and_fits_the_width():
    rows = [("clean", "none", 0.0, 0.97)]
    for e in (0.25, 0.5, 1.0, 2.0):
        rows += [(a, "L2", e, acc) for a, acc in (("pgd", 0.9 - e / 4), ("apgd-ce", 0.89 - e / 4),
                                                     ("apgd-t", 0.88 - e / 4), ("square", 0.9 - e / 5),
                                                     ("worst_case", 0.87 - e / 4), ("certified", 0.5 - e / 4),
                                                     ("certified-crown", max(0.0, 0.4 - e / 4)))]
    f = _frame(rows).assign(model="a-rather-long-model-name-from-a-checkpoint-file-in-a-folder")
    text = console.table(f, cols=60)
    lines = text.splitlines()
    assert "%" in lines[0] and "fractions" in lines[0]  # the units, and that Python differs
    assert len(lines) == 2 + 4 and all(len(ln) <= 60 for ln in lines[1:]), text
    assert "apgd" not in text and "worst case" in lines[1] and "certified" in lines[1]
    assert "62.0" in text and "97.0" in text  # worst case at ε = 1 (0.87 - 0.25) and clean, in percent
    wide = console.table(f, verbose=True, cols=60)
    assert "apgd-t" in wide and "ε=0.25" in wide and all(len(ln) <= 60 for ln in wide.splitlines()[1:]), wide


# --------------------------------------------------------------------------- the tiny sweep, end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    """(sweep folder, report folder, sweep stdout, sweep stderr, the collected report Figures)."""
    base = tmp_path_factory.mktemp("untrained")
    (base / "tiny.toml").write_text(SUITE_TOML)
    argv = ["sweep", "--dataset", "mnist", "--method", "none", "--method", "clip:0.1", "--seeds", "0",
            "--epochs", "2", "--n-train", "64", "--suite", str(base / "tiny.toml"), "--n-test", "64",
            "--out", str(base / "sweep")]
    with one_thread():
        rc, out, err = run_cli(argv)
        assert rc == 0, (out, err)
        figs: list[figures.Figure] = []
        orig = figures._finish

        def keep(*a, **k):
            f = orig(*a, **k)
            figs.append(f)
            return f

        mp = pytest.MonkeyPatch()
        mp.setattr(figures, "_finish", keep)  # the figure functions look it up in their own module
        try:
            reports.render(base / "sweep", base / "report")
        finally:
            mp.undo()
    return base / "sweep", base / "report", out, err, figs, argv


def test_sweep_output_warns_that_both_models_are_untrained(tiny):
    sweep_dir, _, out, err, _, _ = tiny
    runs = sorted(d.name for d in (sweep_dir / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert re.search(rf"WARNING {re.escape(run)}: NEAR CHANCE:", err), err
    assert "accuracies in %" in out and "worst case" in out
    table = out[out.index("accuracies in %"):out.index("sweep done")].strip().splitlines()
    assert len(table) == 2 + 2 * 2  # units, header, one row per run and ε (two ε in the tiny suite)


def test_report_first_screen_warns_that_both_models_are_untrained(tiny):
    sweep_dir, rep, *_ = tiny
    page = (rep / "index.html").read_text(encoding="utf-8")
    box = page[page.index('<div class="warnbox"'):]
    box = box[: box.index("</div>")]
    # first screen: the box comes right after the title and its (collapsed) contents, before the answer, the
    # headline and any figure; one line per kind of warning, linked to each run's message
    assert page.index('<details class="toc">') < page.index('class="warnbox"') < page.index('id="answer"') \
        < page.index('id="headline"')
    assert box.count("<li>") == box.count('href="#warnings"') == 2  # near chance, gradient masking
    assert "NEAR CHANCE" in box and "2 of 2 runs" in box and "untrained" in box
    for d in (sweep_dir / "runs").iterdir():
        assert d.name in box
    md = (rep / "README.md").read_text(encoding="utf-8")
    assert md.index("> **Warnings**") < md.index("**Contents:**") and "NEAR CHANCE** in 2 of 2 runs" in md


def test_provenance_names_the_flags_command_and_the_commit(tiny):
    sweep_dir, rep, _, _, _, argv = tiny
    md = (rep / "README.md").read_text(encoding="utf-8")
    regen = re.search(r"\*\*regenerate\*\*: `([^`]*)`", md).group(1)
    sweep_cmd = regen.split(" && ")[0]
    assert "SWEEP.toml" not in regen and "--method clip:0.1" in sweep_cmd
    # the command rebuilds exactly the same plan
    from robustclip.cli import build_parser
    from robustclip.cli.sweep import sweep_from_flags

    args = build_parser().parse_args(shlex.split(sweep_cmd)[1:])
    stored = json.loads((sweep_dir / "sweep.json").read_text())["sweep"]
    assert sweep_from_flags(args) == stored
    commit = re.search(r"\*\*commit\*\*: `([^`]*)`", md).group(1)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) or commit == "not a git checkout", commit
    assert "None" not in commit


def test_every_figure_is_in_percent_with_honest_axes(tiny):
    _, _, _, _, figs, _ = tiny
    files = {f.file for f in figs}
    assert {"curve_mnist_L2.png", "tradeoff_mnist.png", "history_mnist.png", "frontier_mnist.png"} <= files
    assert not any(f.startswith("lambda_") for f in files)  # one λ per family: nothing to compare, no panel
    checked = 0
    for f in figs:
        assert f.axes, f.file
        for ax in f.axes:
            for axis, label, lim in (("y", ax.get_ylabel(), ax.get_ylim()), ("x", ax.get_xlabel(), ax.get_xlim())):
                if "accuracy" in label:
                    checked += 1
                    assert "%" in label, (f.file, label)
                    assert lim[0] == 0 and 10 <= lim[1] <= 100, (f.file, axis, lim)  # from 0, in percent
            if "epoch" in ax.get_xlabel():
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (f.file, ticks)
            if "loss" in ax.get_ylabel():
                assert ax.get_yscale() == "linear", f.file  # two epochs of loss do not span decades
            if "seconds" in ax.get_xlabel():
                assert ax.get_xlim()[0] == 0, f.file
    assert checked >= 5


def test_headline_drops_a_certified_column_that_is_the_same_everywhere():
    rows = []
    for label, wc in (("none", 0.01), ("clip", 0.4)):
        for e in (0.5, 2.0):
            rows += [{"run": f"{label}-s0", "experiment": "mnist", "dataset": "mnist", "label": label, "method": label,
                      "seed": 0, "attack": a, "norm": "L2", "eps": e, "accuracy": acc, "lam": 0.1, "tau": math.nan,
                      "train_seconds": 10.0, "lip_lower": 1.0, "lip_upper": 5.0, "lip_exact": math.nan,
                      "mse": math.nan, "final_lam": 0.1}
                     for a, acc in (("worst_case", wc if e == 2.0 else 0.6), ("certified", 0.0 if e == 2.0 else
                                                                              (0.2 if label == "clip" else 0.0)))]
        rows.append({**rows[-1], "attack": "clean", "norm": "none", "eps": 0.0, "accuracy": 0.97})
    df = pd.DataFrame(rows)
    df["setting"] = df.apply(tables._setting, axis=1)
    df["group"] = df.apply(tables._group_label, axis=1)
    head = tables.headline(df)
    table = tables.summary_table(df, head)
    md = reports._headline_md(table, "L2 ε = 2", None, None, df=df, head=head)
    header = next(ln for ln in md.splitlines() if ln.startswith("| "))
    assert "| certified |" not in header and "certified, ε = 0.5" in header
    assert "| experiment |" not in header and "| seeds |" not in header  # constant: said once, in the text
    assert "nothing is proven at this radius" in md and "Experiment: mnist" in md and "20.0" in md


def test_a_report_of_a_worst_case_above_clean_exits_3(tiny, tmp_path):
    import shutil

    sweep_dir, *_ = tiny
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    ev_path = next((copy / "runs").glob("*/eval.json"))
    ev = json.loads(ev_path.read_text())
    for r in ev["rows"]:
        if r["attack"] == "worst_case":
            r["accuracy"] = 1.0  # above any clean accuracy of an untrained model
    ev_path.write_text(json.dumps(ev))
    # a run that really computed this (not a later edit, which the manifest check refuses with exit 2)
    man_path = ev_path.parent / "manifest.json"
    man = json.loads(man_path.read_text())
    man["files"]["eval.json"] = hashlib.sha256(ev_path.read_bytes()).hexdigest()
    man_path.write_text(json.dumps(man))
    rc, out, err = run_cli(["report", copy, "--out", tmp_path / "rep"])
    assert rc == 3, (out, err)
    assert "above its clean accuracy" in err and "Traceback" not in err


CERT_SUITE = """\
name = "tiny-cert"
n = 32
batch_size = 32
seed = 0
certify = true

[eps]
L2 = [0.1, 0.5, 1.0]

[[attack]]
type = "clean"

[[attack]]
type = "pgd"
norm = "L2"
steps = 2

[[attack]]
type = "fgsm"
norm = "L2"
"""


def test_evaluate_prints_one_row_per_eps_and_the_details_with_verbose(tiny, tmp_path, monkeypatch):
    sweep_dir, *_ = tiny
    ckpt = next((sweep_dir / "runs").glob("*/model.safetensors"))
    (tmp_path / "cert.toml").write_text(CERT_SUITE)
    monkeypatch.setenv("COLUMNS", "72")
    with one_thread():
        rc, out, err = run_cli(["evaluate", ckpt, "--suite", tmp_path / "cert.toml", "--out", tmp_path / "ev",
                                "--quiet"])
        assert rc == 0, err
        table = out[: out.index("\n\n")].splitlines()
        assert "%" in table[0] and table[1].split()[:3] == ["model", "norm", "ε"]
        assert "certified" in table[1] and "fgsm" not in out and "pgd" not in out
        assert len(table) == 2 + 3 and all(len(ln) <= 72 for ln in table), out  # one row per ε
        assert "NEAR CHANCE" in err  # the untrained model is warned about here too
        rc, out, _ = run_cli(["evaluate", ckpt, "--suite", tmp_path / "cert.toml", "--out", tmp_path / "ev2",
                              "--quiet", "--verbose"])
        assert rc == 0 and "fgsm" in out and "pgd" in out and "ε=0.5" in out
    saved = pd.read_csv(tmp_path / "ev" / "results.csv")
    assert {"pgd", "fgsm", "certified"} <= set(saved.attack)  # the details are in the files either way


def test_assert_robust_takes_fractions_and_refuses_percent():
    from robustclip.testing import assert_robust

    x, y = torch.rand(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)
    from robustclip.errors import RobustclipError

    with pytest.raises(RobustclipError, match="must be a fraction in"):
        assert_robust(Softmaxed(), (x, y), suite=_suite(), min_accuracy={"clean": 90}, n_classes=3)
