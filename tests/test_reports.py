"""Reports: the HTML/Markdown report of a tiny sweep, its figures, tables and provenance,
``robustclip report`` and ``robustclip demo`` without MNIST data.

The sweep behind the report is tiny: the 1-D regression (CLIP at two λ, weight
regularisation at one; 30 epochs) and MNIST (none, CLIP at λ = 0.1 and τ = 0.5;
two seeds; 500 training images, one epoch, 64 test images, a 3-step PGD-L2).
Torch runs on one thread (two threads on a busy 2-core machine are ~4x slower).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import SMALL, SUITE_TOML, one_thread

from robustclip.cli import main
from robustclip.core import files as _io
from robustclip.errors import RobustclipError
from robustclip.reports import figures, tables
from robustclip.reports import pages as reports
from robustclip.sweeps import driver, records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_FIGURES = {"curve_mnist_L2.png", "lambda_mnist.png", "lambda_regression.png", "tradeoff_mnist.png",
                    "regression_fits.png", "history_mnist.png", "history_regression.png", "frontier_mnist.png"}
EXPECTED_ROWS = {("regression", "clip", "λ=0.01"), ("regression", "clip", "λ=0.1"), ("regression", "weight", "λ=0.001"),
                 ("mnist", "none", "-"), ("mnist", "clip", "λ=0.05"), ("mnist", "clip", "λ=0.1"),
                 ("mnist", "clip", "τ=0.5")}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _sweep_raw(suite: Path) -> dict:
    return {"name": "tiny-report", "experiment": [
        {"label": "regression", "dataset": "regression", "epochs": 30, "seeds": [0],
         "method": [{"reg": "clip", "lam": [0.01, 0.1]}, {"reg": "weight", "lam": [0.001]}]},
        {"label": "mnist", "dataset": "mnist", "epochs": 1, "n_train": 500, "n_test": 64, "n_val": 100, "seeds": [0, 1],
         "model": SMALL, "suite": str(suite), "train": {"optimizer": "adam", "lr": 0.005},
         "method": [{"reg": "none"}, {"reg": "clip", "lam": [0.05, 0.1], "tau": [0.5], "lam0": 0.05}]},
    ]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """(sweep folder, raw sweep dict) of the finished tiny sweep."""
    base = tmp_path_factory.mktemp("report-sweep")
    (base / "tiny.toml").write_text(SUITE_TOML)
    raw = _sweep_raw(base / "tiny.toml")
    with one_thread():
        driver.run_sweep(raw, base / "sweep", data_dir=str(data_dir), progress=False)
    return base / "sweep", raw


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    """(sweep folder, report folder, index.html text, README.md text)."""
    sweep_dir, _ = sweep
    out = tmp_path_factory.mktemp("report") / "rep"
    with one_thread():
        index = reports.render(sweep_dir, out)
    assert index == out / "index.html"
    return sweep_dir, out, index.read_text(encoding="utf-8"), (out / "README.md").read_text(encoding="utf-8")


class _Collect(HTMLParser):
    """Images, links and figure captions of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.srcs: list[str] = []
        self.figures: list[dict[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "src" in a:
            self.srcs.append(a["src"])
        if tag == "img":
            self.imgs.append(a)
            if self.figures:
                self.figures[-1]["img"] = a.get("data-file", "")
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "figure":
            self.figures.append({"id": a.get("id", ""), "caption": "", "title": ""})
        elif tag in ("figcaption", "h3") and self.figures:
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "figcaption":
            self.figures[-1]["caption"] += data
        elif self._in == "h3":
            self.figures[-1]["title"] += data


def _parse(html_text: str) -> _Collect:
    c = _Collect()
    c.feed(html_text)
    return c


# --------------------------------------------------------------------------- figures


def test_every_png_is_in_the_html_and_the_readme(report):
    _, out, html_text, md = report
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == EXPECTED_FIGURES
    page = _parse(html_text)
    assert [i["data-file"] for i in page.imgs] == [f["img"] for f in page.figures]  # one image per figure
    assert {i["data-file"] for i in page.imgs} == pngs and len(page.imgs) == len(pngs)
    for name in pngs:
        assert f"]({name})" in md, name


def test_html_embeds_each_png_as_a_data_uri(report):
    _, out, html_text, _ = report
    page = _parse(html_text)
    prefix = "data:image/png;base64,"
    for img in page.imgs:
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):], validate=True) == (out / img["data-file"]).read_bytes()
        assert img.get("alt")
    assert all(s.startswith("data:") for s in page.srcs)  # self-contained: nothing fetched from elsewhere


def test_pngs_are_valid_images(report):
    import matplotlib.image as mpimg
    from PIL import Image

    _, out, _, _ = report
    for p in sorted(out.glob("*.png")):
        blob = p.read_bytes()
        assert blob[:8] == PNG_SIGNATURE, p.name
        arr = mpimg.imread(io.BytesIO(blob), format="png")
        assert arr.ndim == 3 and arr.shape[0] >= 200 and arr.shape[1] >= 300 and arr.shape[2] in (3, 4), p.name
        assert float(np.ptp(arr[..., :3])) > 0.1, p.name  # not a blank canvas
        with Image.open(io.BytesIO(blob)) as im:
            im.verify()
            assert im.format == "PNG"


def test_each_figure_has_a_title_and_a_caption(report):
    _, out, html_text, md = report
    page = _parse(html_text)
    assert len(page.figures) == len(EXPECTED_FIGURES)
    for f in page.figures:
        assert f["id"] == f["img"]
        assert f["title"].strip()
        cap = f["caption"].strip()
        assert len(cap) > 30 and cap.endswith("."), f
    lines = md.splitlines()
    for name in EXPECTED_FIGURES:
        i = next(k for k, ln in enumerate(lines) if ln.startswith("![") and ln.endswith(f"]({name})"))
        assert lines[i - 2].startswith("### ")
        cap = lines[i + 2]
        assert cap.startswith("*") and cap.endswith(".*") and len(cap) > 30, (name, cap)
        assert cap.strip("*") in html_text or cap.strip("*").replace("'", "&#x27;") in html_text


# --------------------------------------------------------------------------- tables


def test_tables_are_written_and_linked(report):
    sweep_dir, out, html_text, md = report
    page = _parse(html_text)
    assert {"table.csv", "results.csv"} <= set(page.links)
    assert "[table.csv](table.csv)" in md and "[results.csv](results.csv)" in md
    assert (out / "table.csv").is_file() and (out / "results.csv").is_file()
    mine = pd.read_csv(out / "results.csv")
    theirs = pd.read_csv(sweep_dir / "results.csv")
    assert set(records.RESULT_COLUMNS) <= set(mine.columns) and "setting" in mine.columns
    key = ["run", "attack", "norm", "eps"]
    assert sorted(map(tuple, mine[key].values.tolist())) == sorted(map(tuple, theirs[key].values.tolist()))


def test_table_has_one_row_per_dataset_method_setting(report):
    _, out, html_text, md = report
    t = pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""])
    rows = list(zip(t.dataset, t.method, t.setting))
    assert len(rows) == len(set(rows)) and set(rows) == EXPECTED_ROWS
    t = t.set_index(["dataset", "method", "setting"])
    for (dataset, _, _), r in t.iterrows():
        assert r.seeds == (2 if dataset == "mnist" else 1)
    mn = t.loc["mnist"]
    assert mn.clean_full.between(0, 1).all()  # clean accuracy on all 10,000 test images
    for col in ("clean", "pgd", "worst_case", "certified"):
        assert mn[col].between(0, 1).all() and mn[f"{col}_std"].ge(0).all()
    assert (mn.worst_case <= mn.clean + 1e-12).all() and (mn.certified <= mn.worst_case + 1e-12).all()
    assert (mn.worst_case <= mn.pgd + 1e-12).all()
    reg = t.loc["regression"]
    assert reg[["clean", "worst_case"]].isna().all().all()
    assert ((reg.lip_lower <= reg.lip_exact * (1 + 1e-3)) & (reg.lip_exact <= reg.lip_upper * (1 + 1e-6))).all()
    assert (reg.mse > 0).all()
    assert reg.loc[("clip", "λ=0.1"), "final_lam"] == pytest.approx(0.1)
    # the same rows in the HTML summary table and the Markdown one
    for dataset, method, setting in EXPECTED_ROWS:
        assert f"| {dataset} | {method} | {setting} |" in md
        assert f"<td>{dataset}</td><td>{method}</td><td>{setting}</td>" in html_text


def test_summary_table_averages_over_seeds(sweep):
    sweep_dir, _ = sweep
    df = tables.load_results(sweep_dir)
    head = tables.headline(df)
    assert head == ("L2", 2.0)
    t = tables.summary_table(df, head).set_index(["dataset", "method", "setting"])
    row = t.loc[("mnist", "none", "-")]
    per_seed = df[(df.dataset == "mnist") & (df.label == "none") & (df.attack == "clean")].accuracy
    assert len(per_seed) == 2
    assert row.clean == pytest.approx(per_seed.mean()) and row.clean_std == pytest.approx(per_seed.std(ddof=1))
    wc = df[(df.label == "none") & (df.attack == "worst_case") & (df.eps == 2.0)].accuracy
    assert row.worst_case == pytest.approx(wc.mean())


def test_headline_and_settings_on_synthetic_rows():
    rows = pd.DataFrame({"attack": ["clean", "worst_case", "worst_case", "worst_case"],
                         "norm": ["none", "L2", "L2", "Linf"], "eps": [0.0, 0.5, 1.5, 0.1]})
    assert tables.headline(rows) == ("L2", 1.5)
    assert tables.headline(rows[rows.norm != "L2"]) == ("Linf", 0.1)
    assert tables.headline(pd.DataFrame({"attack": ["fit"], "norm": ["none"], "eps": [0.0]})) is None
    assert tables._setting(pd.Series({"method": "clip", "lam": None, "tau": 0.97})) == "τ=0.97"
    assert tables._setting(pd.Series({"method": "clip", "lam": 0.1, "tau": float("nan")})) == "λ=0.1"
    assert tables._setting(pd.Series({"method": "none", "lam": 0.0, "tau": None})) == "-"


# --------------------------------------------------------------------------- provenance


def test_provenance_in_html_and_readme(report, sweep):
    sweep_dir, out, html_text, md = report
    info = json.loads((sweep_dir / "sweep.json").read_text())
    commit = info["commit"]
    here = _io.git_commit()
    assert commit == here  # recorded by the sweep, in this checkout
    for text in (html_text, md):
        assert "Provenance" in text
        assert str(commit) in text
        for k, v in info["versions"].items():
            assert f"{k} {v}" in text
        assert f"torch {torch.__version__}" in text
    page = _parse(html_text)
    assert "<b>seeds</b>: <code>0, 1</code>" in html_text
    assert "**seeds**: `0, 1`" in md
    assert "<b>commit</b>" in html_text and "<b>versions</b>" in html_text and "<b>regenerate</b>" in html_text
    regen = f"robustclip report {sweep_dir} --out {out}"
    assert "robustclip sweep" in html_text and regen in html_text and regen in md
    assert f"--out {sweep_dir}" in html_text
    assert page.imgs  # sanity: the page parsed


def test_title_and_intro(sweep, tmp_path):
    sweep_dir, _ = sweep
    index = reports.render(sweep_dir, tmp_path / "r", title="My <title>", intro="Some **bold** intro.")
    text = index.read_text(encoding="utf-8")
    assert "<title>My &lt;title&gt;</title>" in text and "<h1>My &lt;title&gt;</h1>" in text
    assert "<b>bold</b>" in text
    md = (tmp_path / "r" / "README.md").read_text(encoding="utf-8")
    assert md.startswith("# My <title>\n") and "Some **bold** intro." in md


def test_default_title_names_the_sweep(report):
    _, _, html_text, md = report
    assert "<title>robustclip report: tiny-report</title>" in html_text
    assert md.startswith("# robustclip report: tiny-report\n")


def test_report_leaves_out_runs_that_are_not_in_the_sweep_plan(sweep, tmp_path):
    """After a rerun with MNIST skipped (the demo without data does this), the sweep's own table
    drops the MNIST runs kept on disk; the report must show the same runs as that table."""
    sweep_dir, raw = sweep
    copy_dir = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy_dir)
    table = driver.run_sweep(raw, copy_dir, progress=False, skip_datasets=("mnist",))  # nothing to retrain
    assert set(table.dataset) == {"regression"}
    assert set(pd.read_csv(copy_dir / "results.csv").dataset) == {"regression"}
    reports.render(copy_dir, tmp_path / "rep")
    assert set(pd.read_csv(tmp_path / "rep" / "results.csv").run) == set(table.run)
    assert set(pd.read_csv(tmp_path / "rep" / "table.csv").dataset) == {"regression"}


def test_render_rejects_folders_without_results(tmp_path):
    with pytest.raises(RobustclipError, match="not a sweep folder"):
        reports.render(tmp_path, tmp_path / "r")
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": {"name": "x"}, "runs": []}))
    with pytest.raises(RobustclipError, match="no finished runs"):
        reports.render(tmp_path, tmp_path / "r")
    assert not (tmp_path / "r" / "index.html").exists()


# --------------------------------------------------------------------------- command line


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("robustclip: error: "), err
    return lines[0]


def test_cli_report_writes_index(sweep, tmp_path, capsys):
    sweep_dir, _ = sweep
    out = tmp_path / "cli-report"
    rc = main(["report", str(sweep_dir), "--out", str(out), "--title", "CLI report"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "index.html").is_file() and (out / "README.md").is_file() and (out / "table.csv").is_file()
    assert f"report: {out / 'index.html'}" in captured.out
    assert "<title>CLI report</title>" in (out / "index.html").read_text(encoding="utf-8")
    assert {p.name for p in out.glob("*.png")} == EXPECTED_FIGURES


@pytest.mark.parametrize("make", ["empty", "missing", "file"])
def test_cli_report_on_a_non_sweep_folder_exits_2(tmp_path, capsys, make):
    target = tmp_path / "not-a-sweep"
    if make == "empty":
        target.mkdir()
        (target / "results.csv").write_text("run\n")
    elif make == "file":
        target.write_text("hello")
    rc = main(["report", str(target), "--out", str(tmp_path / "out")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "is not a sweep folder" in line and str(target) in line
    assert not (tmp_path / "out").exists()


def test_cli_report_on_a_sweep_without_finished_runs_exits_2(tmp_path, capsys):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"sweep": {"name": "x"}, "runs": ["a"]}))
    rc = main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "no finished runs" in _one_error_line(capsys.readouterr().err)


def test_demo_without_mnist_skips_it_and_says_how_to_add_it(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTCLIP_DATA", str(empty))
    monkeypatch.setenv("ROBUSTCLIP_CACHE", str(tmp_path / "empty-cache"))
    real_preset = _io.preset
    demo = copy.deepcopy(real_preset("demo"))
    reg = next(e for e in demo["experiment"] if e["dataset"] == "regression")
    reg["epochs"] = 40  # the real demo trains 500 epochs; the flow is the same
    monkeypatch.setattr(_io, "preset", lambda name: demo if name == "demo" else real_preset(name))
    out, runs = tmp_path / "report", tmp_path / "runs"

    rc = main(["demo", "--out", str(out), "--runs", str(runs), "--data-dir", str(empty)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    skipped = [ln for ln in captured.err.splitlines() if "SKIPPED" in ln]
    assert len(skipped) == 1
    msg = skipped[0]
    assert "MNIST" in msg and "--data-dir" in msg and "ROBUSTCLIP_DATA" in msg
    assert f"report: {out / 'index.html'}" in captured.out
    assert "regression, clip: exact Lipschitz constant" in captured.out

    html_text = (out / "index.html").read_text(encoding="utf-8")
    assert "SKIPPED the MNIST part" in html_text
    table = pd.read_csv(out / "table.csv")
    assert set(table.dataset) == {"regression"} and len(table) == 6
    assert set(pd.read_csv(out / "results.csv").dataset) == {"regression"}
    assert set(pd.read_csv(runs / "results.csv").dataset) == {"regression"}
    assert "<td>mnist</td>" not in html_text and "| mnist |" not in (out / "README.md").read_text(encoding="utf-8")
    assert not list(out.glob("*mnist*"))
    planned = json.loads((runs / "sweep.json").read_text())["runs"]
    assert len(planned) == 6 and all(r.startswith("regression-") for r in planned)
    assert {p.name for p in (runs / "runs").iterdir()} == set(planned)
    assert set(pd.read_csv(runs / "results.csv").epochs) == {40}


# --------------------------------------------------------------------------- statistics


def test_seed_stats_are_mean_sample_std_and_t_interval():
    import statistics

    v = [0.35, 0.42, 0.40]
    st = tables.seed_stats(v)
    sd = statistics.stdev(v)  # ddof = 1
    assert st.n == 3 and st.mean == pytest.approx(statistics.mean(v)) and st.sd == pytest.approx(sd)
    assert st.lo == pytest.approx(st.mean - 4.303 * sd / 3 ** 0.5, abs=1e-4)
    assert st.hi == pytest.approx(st.mean + 4.303 * sd / 3 ** 0.5, abs=1e-4)
    one = tables.seed_stats([0.5, float("nan")])  # NaN entries are not seeds
    assert one.n == 1 and one.mean == 0.5 and np.isnan(one.sd) and np.isnan(one.lo) and np.isnan(one.hi)
    assert tables.seed_stats([]).n == 0
    assert tables.pct_cell(0.389, 0.037) == "38.9 ± 3.7" and tables.pct_cell(0.5, float("nan")) == "50.0"
    assert tables.ci_cell(0.297, 0.481) == "[29.7, 48.1]" and tables.ci_cell(float("nan"), 0.1) == ""


def test_table_intervals_are_the_t_intervals_of_the_per_seed_values(sweep):
    sweep_dir, _ = sweep
    df = tables.load_results(sweep_dir)
    t = tables.summary_table(df, tables.headline(df)).set_index(["dataset", "method", "setting"])
    wc = df[(df.label == "clip") & (df.setting == "λ=0.1") & (df.attack == "worst_case") & (df.eps == 2.0)]
    per_seed = wc.sort_values("seed").accuracy.to_numpy()
    assert len(per_seed) == 2
    row = t.loc[("mnist", "clip", "λ=0.1")]
    half = 12.706 * per_seed.std(ddof=1) / 2 ** 0.5
    assert row.worst_case_std == pytest.approx(per_seed.std(ddof=1))
    assert row.worst_case_ci_low == pytest.approx(per_seed.mean() - half, abs=1e-4)
    assert row.worst_case_ci_high == pytest.approx(per_seed.mean() + half, abs=1e-4)
    reg = t.loc["regression"]  # one seed: a mean and no spread
    assert reg.lip_upper_std.isna().all()


def test_lambda_figure_shows_the_table_numbers_on_one_axis_per_family(sweep, tmp_path, monkeypatch):
    sweep_dir, _ = sweep
    df = tables.load_results(sweep_dir)
    head = tables.headline(df)
    drawn = []
    orig = figures._errorbars

    def record(ax, x, a, color, label, marker="o"):
        drawn.append((ax.get_title() or "", label, list(map(float, x)), a.copy()))
        orig(ax, x, a, color, label, marker)

    monkeypatch.setattr(figures, "_errorbars", record)  # fig_lambda looks it up in its own module
    figs = figures.fig_lambda(df, head, tmp_path)
    assert {f.file for f in figs} == {"lambda_mnist.png", "lambda_regression.png"}
    # drawn before the title is set: find each panel through its x values instead
    by_x = {tuple(x): a for _, _, x, a in drawn}
    # CLIP λ = 0.05 and 0.1 on a λ axis; the τ family has one τ, nothing to compare, so no panel
    assert set(by_x) == {(0.05, 0.1)}
    t = tables.summary_table(df, head).set_index(["dataset", "method", "setting"])
    for i, setting in enumerate(("λ=0.05", "λ=0.1")):
        a, row = by_x[(0.05, 0.1)].iloc[i], t.loc[("mnist", "clip", setting)]
        assert a["mean"] == pytest.approx(100 * row.worst_case)  # drawn in percent
        assert a["lo"] == pytest.approx(100 * row.worst_case_ci_low)
        assert a["hi"] == pytest.approx(100 * row.worst_case_ci_high)


def test_families_split_fixed_lambda_and_tau_runs():
    assert figures._family("clip", 0.97) == "CLIP: target τ"
    assert figures._family("clip", float("nan")) == "CLIP: fixed λ"
    assert figures._family("weight", None) == "weight regularisation: fixed λ"
    assert figures._family("adversarial", None) == "adversarial training: fixed λ"


# --------------------------------------------------------------------------- the page


def _section_order(html_text: str) -> list[str]:
    import re

    return re.findall(r'<h2 id="([^"]+)">', html_text)


def test_page_leads_with_the_answer_then_headline_figures_and_full_tables(report):
    _, _, html_text, md = report
    # the tiny models are near chance: their warnings are listed (and boxed at the top, see test_sanity.py)
    assert _section_order(html_text) == ["answer", "headline", "figures", "full-tables", "hyperparameters", "warnings",
                                         "provenance"]
    nav = html_text[html_text.index('<details class="toc">'):html_text.index("</details>")]
    import re

    targets = re.findall(r'href="#([^"]+)"', nav)
    ids = set(re.findall(r' id="([^"]+)"', html_text))
    assert targets and set(targets) <= ids  # every contents entry lands somewhere
    assert html_text.index('<details class="toc">') < html_text.index('id="answer"')  # collapsed, beside the title
    assert html_text.count('<div class="scroll"><table>') == html_text.count("<table>") >= 3
    assert "white-space:nowrap" in html_text and "overflow-x:auto" in html_text
    # the answer: the most robust classifier setting against plain training, with intervals, beside the frontier
    lede = html_text[html_text.index('<section class="lede">'):html_text.index("</section>")]
    assert "mnist, L2 ε = 2:" in lede and "is the most robust of the settings chosen on validation data" in lede
    assert "for plain training" in lede and "95% interval [" in lede and 'data-file="frontier_mnist.png"' in lede
    assert "regression:" in lede and "exact Lipschitz constant" in lede
    # the headline table: plain training and one setting per other method, before the first figure
    head = html_text[html_text.index('id="headline"'):html_text.index('id="figures"')]
    assert "<th>worst case, 95% CI</th>" in head
    # one experiment among the classifier rows: said once in the text, not in a column
    assert "Experiment: mnist." in head and "<th>experiment</th>" not in head
    assert head.count("<tr>") == 3 and "<td>none</td>" in head and "<td>clip</td>" in head
    # the only image before the figures is the robustness-versus-training-time frontier, beside the answer
    before = html_text[: html_text.index('id="figures"')]
    assert before.count("<img") == 1
    lines = md.splitlines()
    assert lines.index("## Answer") < lines.index("## Headline") < lines.index("## Figures") \
        < lines.index("## Full tables") < lines.index("## Hyperparameters") < lines.index("## Provenance")


def test_relayout_keeps_a_page_and_gives_an_old_one_its_answer(report, tmp_path):
    """``relayout`` (robustclip paper --refresh page) rebuilds a rendered page from its own files: the same bytes for
    a page of this version; a page rendered before pages led with their answer gains it, nothing else changes."""
    _, out, html_text, md = report
    same = tmp_path / "same"
    shutil.copytree(out, same)
    reports.relayout(same)
    assert (same / "README.md").read_text(encoding="utf-8") == md
    assert (same / "index.html").read_text(encoding="utf-8") == html_text
    old = tmp_path / "old"
    shutil.copytree(out, old)
    a, b = md.index("## Answer"), md.index("## Headline")
    answer = md[a:b]
    frontier = answer[answer.index("### "):]
    (old / "README.md").write_text(md[:a] + md[b:].replace("## Figures", frontier + "## Figures", 1)
                                   .replace("[Answer](#answer) · ", ""), encoding="utf-8")
    reports.relayout(old)
    assert (old / "README.md").read_text(encoding="utf-8") == md
    assert (old / "index.html").read_text(encoding="utf-8") == html_text
    (old / "results.csv").unlink()
    with pytest.raises(RobustclipError, match="no results.csv"):
        reports.relayout(old)


def test_hyperparameter_section_lists_each_experiment_and_method(report, sweep):
    sweep_dir, _ = sweep
    df = tables.load_results(sweep_dir)
    trains = {d.name: json.loads((d / "eval.json").read_text())["train"] for d in records.finished_runs(sweep_dir)}
    hp = tables.hyperparameter_table(trains, df).set_index(["experiment", "method"])
    none = hp.loc[("mnist", "none")]
    assert none.runs == 2 and none.epochs == "1" and none.optimiser == "adam" and none.lr == "0.005"
    assert none.n_train == "500" and none.seeds == "0, 1" and none["model"] == "fc 784-32-10 sigmoid"
    clip = hp.loc[("mnist", "clip")]
    assert "pairs=64" in clip["method settings"] and "τ=0.5" in clip["λ / τ"] and "λ=0.1" in clip["λ / τ"]
    assert hp.loc[("regression", "weight")].epochs == "30"
    _, _, html_text, _ = report
    section = html_text[html_text.index('id="hyperparameters"'):html_text.index('id="provenance"')]
    assert "<td>fc 784-32-10 sigmoid</td>" in section and "<th>method settings</th>" in section


def test_training_curves_come_from_the_stored_history(sweep, tmp_path):
    sweep_dir, _ = sweep
    df = tables.load_results(sweep_dir)
    hist = {d.name: json.loads((d / "eval.json").read_text())["history"] for d in records.finished_runs(sweep_dir)}
    figs = figures.fig_history(hist, df, tmp_path)
    assert {f.file for f in figs} == {"history_mnist.png", "history_regression.png"}
    assert figures.fig_history({}, df, tmp_path) == []


# headless Chromium at 1280 px: nothing sticks out, every image decodes, no console errors
from page_check import APT_LINE, check_page, chromium, first_screen_problems  # noqa: E402

needs_chromium = pytest.mark.skipif(chromium() is None, reason=f"chromium is not installed ({APT_LINE})")


@needs_chromium
def test_page_fits_1280_px_in_chromium(report):
    _, out, _, _ = report
    r = check_page(out / "index.html", width=1280)
    assert r["scrollWidth"] <= r["viewport"], r
    assert r["overflowing"] == [], r["overflowing"]
    assert len(r["images"]) == len(EXPECTED_FIGURES)
    for img in r["images"]:
        assert img["decoded"] and img["width"] >= 300 and 0 < img["shown"] <= r["viewport"], img
    assert r["wrapped"] == [], r["wrapped"]  # no "±" cell wraps
    assert r["errors"] == [] and r["console"] == [], (r["errors"], r["console"])
    assert r["headline"] and r["headline"]["scrollWidth"] <= r["headline"]["width"], r["headline"]  # no scrolling
    assert r["scrollers"] and all(s["overflowX"] == "auto" for s in r["scrollers"])
    assert any(s["scrollWidth"] > s["width"] for s in r["scrollers"])  # a wide table scrolls inside its box
    # the first screen (1280 × 900): the answer and the headline figure, no headline table that scrolls
    assert first_screen_problems(r) == [], first_screen_problems(r)
    assert "is the most robust" in r["answer"]["text"] and r["figure"]["file"] == "frontier_mnist.png"


@needs_chromium
def test_paper_page_leads_with_its_answer_in_chromium():
    """The committed reports/paper/index.html (laid out by robustclip paper, or --refresh page) at 1280 × 900."""
    page = Path(__file__).resolve().parents[1] / "reports" / "paper" / "index.html"
    r = check_page(page, width=1280, height=900)
    assert first_screen_problems(r) == [], first_screen_problems(r)
    assert r["answer"]["text"].startswith("Answermnist, L2 ε = 2:") and r["figure"]["file"] == "frontier_mnist.png"
    assert r["headline"] and r["headline"]["scrollWidth"] <= r["headline"]["width"]


@needs_chromium
def test_page_check_catches_overflow_wrapping_and_broken_images(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body style='margin:0'>"
                   "<table style='width:3000px'><tr><td>wide</td></tr></table>"
                   "<table><tr><td style='width:10px;max-width:10px'>38.9 ± 3.7</td></tr></table>"
                   "<img data-file='broken.png' src='data:image/png;base64,iVBORw0KGgo='></body></html>",
                   encoding="utf-8")
    r = check_page(bad, width=1280)
    assert r["scrollWidth"] > r["viewport"] and "TABLE" in r["overflowing"]
    assert r["wrapped"] == ["38.9 ± 3.7"]
    assert r["images"] == [{"file": "broken.png", "decoded": False, "width": 0, "shown": r["images"][0]["shown"]}]
    assert any("broken.png" in e for e in r["errors"])


# --------------------------------------------------------------------------- selection and the frontier


def _synthetic_table(val: bool) -> pd.DataFrame:
    """Two CLIP settings: A wins on test, B on validation."""
    rows = [{"dataset": "mnist", "method": "none", "setting": "-", "seeds": 2, "clean": 0.98, "worst_case": 0.02,
             "val_worst_case": 0.03},
            {"dataset": "mnist", "method": "clip", "setting": "λ=0.3", "seeds": 2, "clean": 0.97, "worst_case": 0.45,
             "val_worst_case": 0.30},
            {"dataset": "mnist", "method": "clip", "setting": "λ=0.5", "seeds": 2, "clean": 0.97, "worst_case": 0.40,
             "val_worst_case": 0.41}]
    t = pd.DataFrame(rows)
    if not val:
        t.loc[1, "val_worst_case"] = float("nan")  # one run without validation rows: fall back to test
    return t


def test_headline_chooses_settings_on_validation_rows_not_test_rows():
    t = _synthetic_table(val=True)
    assert tables.selection_column(t) == "val_worst_case"
    picked = tables.headline_rows(t)
    assert list(picked[picked.method == "clip"].setting) == ["λ=0.5"]  # best on validation, not on test
    md = reports._headline_md(t, "L2 ε = 2", None, None)
    assert "validation" in md and "a choice made on the test set" not in md
    old = _synthetic_table(val=False)
    assert tables.selection_column(old) == "worst_case"
    assert list(tables.headline_rows(old).query("method == 'clip'").setting) == ["λ=0.3"]
    assert "a choice made on the test set" in reports._headline_md(old, "L2 ε = 2", None, None)


def test_frontier_points_keep_exactly_the_undominated_settings():
    def runs(label, setting, secs, accs):
        return [{"run": f"{label}{setting}{i}", "label": label, "setting": setting, "group": f"{label} {setting}",
                 "dataset": "mnist", "attack": "worst_case", "norm": "L2", "eps": 2.0, "accuracy": a,
                 "train_seconds": s} for i, (s, a) in enumerate(zip(secs, accs))]

    df = pd.DataFrame(runs("none", "-", [10, 12], [0.02, 0.04])  # fastest: on the frontier
                      + runs("clip", "λ=0.3", [30, 30], [0.40, 0.42])  # on it
                      + runs("clip", "λ=0.5", [40, 40], [0.38, 0.40])  # slower and weaker than λ=0.3: off it
                      + runs("pgd-at7", "λ=1", [90, 100], [0.48, 0.50]))  # slowest but most robust: on it
    pts = figures.frontier_points(df, ("L2", 2.0)).set_index("setting")
    assert pts.loc["-", "seconds"] == 11 and pts.loc["-", "worst_case"] == pytest.approx(0.03)
    assert pts.frontier.to_dict() == {"-": True, "λ=0.3": True, "λ=0.5": False, "λ=1": True}
    assert (pts.lo <= pts.worst_case).all() and (pts.worst_case <= pts.hi).all()


def test_report_leads_with_the_frontier_figure(report):
    _, out, html, readme = report
    assert "frontier_mnist.png" in readme
    assert (out / "frontier_mnist.png").is_file()
    lede = html[html.index('<section class="lede">'):html.index('id="headline"')]
    assert 'data-file="frontier_mnist.png"' in lede
    assert html.count('data-file="frontier_mnist.png"') == 1


def test_no_accuracy_curve_from_a_single_eps(tmp_path):
    """Clean accuracy and one ε joined by a line is not a curve: no figure (the paper's ε-curves come from its
    certify-l2 sandwich instead)."""
    rows = []
    for run, acc in (("a", 0.4), ("b", 0.5)):
        base = {"run": run, "group": "clip λ=0.5", "dataset": "mnist", "ci_low": 0.0, "ci_high": 1.0}
        rows += [{**base, "attack": "clean", "norm": "none", "eps": 0.0, "accuracy": 0.97},
                 {**base, "attack": "worst_case", "norm": "L2", "eps": 2.0, "accuracy": acc}]
    assert figures.fig_curves(pd.DataFrame(rows), tmp_path) == []
    two = pd.DataFrame(rows + [{**r, "eps": 1.0, "accuracy": 0.8} for r in rows if r["attack"] == "worst_case"])
    assert [f.file for f in figures.fig_curves(two, tmp_path)] == ["curve_mnist_L2.png"]
