"""Rewrite one section or one figure of a rendered report in place, in its README.md and index.html alike.

:func:`robustclip.reports.pages.render` puts each full-table section under a level-3 heading (``### H`` in
README.md, ``<h3 id="...">H</h3>`` in index.html) and each figure under ``### title`` with its image and caption
(``<figure id="FILE">`` in index.html). When one part changes and the rest cannot be rebuilt cheaply (the paper's
committed checkpoints gain a member, but the sweep folder behind the report is not on this machine), these functions
replace that part and leave every other byte as it was. A part that is not there is a one-line error, and then
neither file is written.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from ..core import files as _io
from ..errors import RobustclipError
from .figures import Figure
from .pages import _anchor, _figure_html, _md_block

_FIX = "render the whole report first (for the paper: robustclip paper)"


def _files(out: Path) -> tuple[str, str]:
    md, page = out / "README.md", out / "index.html"
    for p in (md, page):
        if not p.is_file():
            raise RobustclipError(f"no rendered report at {out} ({p.name} is missing)", _FIX)
    return md.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")


def _md_section(text: str, heading: str) -> re.Match[str]:
    m = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^##+ |\Z)", text, re.S | re.M)
    if m is None:
        raise RobustclipError(f"the report's README.md has no section {heading!r}", _FIX)
    return m


def _html_section(page: str, heading: str) -> re.Match[str]:
    m = re.search(rf'<h3 id="{re.escape(_anchor(heading))}">{re.escape(html.escape(heading))}</h3>(.*?)'
                  r'(?=<h[23] id=|<figure id=|<p>Tables: |</body>)', page, re.S)
    if m is None:
        raise RobustclipError(f"the report's index.html has no section {heading!r}", _FIX)
    return m


def replace_section(out: str | os.PathLike[str], heading: str, body: str) -> None:
    """Replace the body of the level-3 section ``heading`` of the report in ``out`` by ``body`` (Markdown, the
    subset :func:`robustclip.reports.pages.render` uses), in README.md and index.html."""
    out = Path(out)
    md, page = _files(out)
    m, h = _md_section(md, heading), _html_section(page, heading)
    md = md[: m.start(1)] + f"\n{body}\n\n" + md[m.end(1):]
    page = page[: h.start(1)] + _md_block(body) + page[h.end(1):]
    _io.write_text(out / "README.md", md)
    _io.write_text(out / "index.html", page)


def replace_figure(out: str | os.PathLike[str], fig: Figure) -> None:
    """Replace the figure whose image is ``fig.file`` (already rewritten in ``out``) with ``fig``: its title, the
    embedded image and the caption, in README.md and index.html."""
    out = Path(out)
    md, page = _files(out)
    m = re.search(rf"^### [^\n]*\n\n!\[[^\]]*\]\({re.escape(fig.file)}\)\n\n\*[^\n]*\*\n", md, re.M)
    h = re.search(rf'<figure id="{re.escape(html.escape(fig.file))}">.*?</figure>', page, re.S)
    if m is None or h is None:
        raise RobustclipError(f"the report in {out} shows no figure {fig.file}", _FIX)
    md = md[: m.start()] + f"### {fig.title}\n\n![{fig.title}]({fig.file})\n\n*{fig.caption}*\n" + md[m.end():]
    page = page[: h.start()] + _figure_html(fig, out) + page[h.end():]
    _io.write_text(out / "README.md", md)
    _io.write_text(out / "index.html", page)


def check(out: str | os.PathLike[str], *, sections: tuple[str, ...] = (), figures: tuple[str, ...] = ()) -> None:
    """Raise the one-line error of :func:`replace_section` / :func:`replace_figure` now, before any work, when the
    report in ``out`` lacks one of ``sections`` (headings) or ``figures`` (image file names)."""
    out = Path(out)
    md, page = _files(out)
    for heading in sections:
        _md_section(md, heading)
        _html_section(page, heading)
    for file in figures:
        if f"]({file})" not in md or f'<figure id="{html.escape(file)}">' not in page:
            raise RobustclipError(f"the report in {out} shows no figure {file}", _FIX)
