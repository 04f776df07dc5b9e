"""Render an HTML page in headless Chromium at a given width and report its layout (for the report tests).

:func:`check_page` injects a script that runs after the page loads and records: the page's scroll width against
the viewport, elements that stick out to the right outside a horizontal scroll container, every image (decoded or
not), table cells with "±" that wrap onto more than one line, the headline table's width against its box (``headline``:
``scrollWidth`` > ``width`` means it scrolls), every table above the figures (``lead_tables``, the same way), the
first screen (``screen``, the top ``height`` px of the page; ``answer``, the box of the answer beside the headline
figure; ``figure``, that figure's image; tops and bottoms in px from the top of the page as loaded) and console
errors / error events. The result comes back through ``--dump-dom`` as JSON. :func:`first_screen_problems` says what
a record breaks of issue 34's target for a report page.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

APT_LINE = "apt-get install -y --no-install-recommends chromium"

_SCRIPT = r"""<script>
window.__errors = [];
(function () {
  const orig = console.error.bind(console);
  console.error = function (...a) { window.__errors.push('console.error: ' + a.join(' ')); orig(...a); };
  window.addEventListener('error', function (e) {
    const t = e.target && e.target.tagName ? e.target.tagName + ' ' + (e.target.dataset.file || '') : '';
    window.__errors.push('error event: ' + (e.message || t));
  }, true);
  window.addEventListener('load', function () {
    const vw = document.documentElement.clientWidth;
    const r = {viewport: vw, scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)};
    r.overflowing = [...document.body.querySelectorAll('*')].filter(function (el) {
      const box = el.closest('.scroll');
      if (box && box !== el) return false;  // inside a scroll container: may be wide, the container scrolls
      return el.getBoundingClientRect().right > vw + 0.5;
    }).map(el => el.tagName + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '')).slice(0, 20);
    r.images = [...document.images].map(i => ({file: i.dataset.file || '', decoded: i.complete && i.naturalWidth > 0,
                                              width: i.naturalWidth, shown: i.getBoundingClientRect().width}));
    r.wrapped = [...document.querySelectorAll('td,th')].filter(td => td.textContent.includes('\u00b1')).filter(td => {
      const rg = document.createRange(); rg.selectNodeContents(td);
      return new Set([...rg.getClientRects()].map(x => Math.round(x.top))).size > 1;
    }).map(td => td.textContent).slice(0, 20);
    r.scrollers = [...document.querySelectorAll('.scroll')].map(d => (
      {overflowX: getComputedStyle(d).overflowX, scrollWidth: d.scrollWidth, width: d.clientWidth}));
    const h = document.getElementById('headline');
    let el = h ? h.nextElementSibling : null;
    while (el && !(el.classList && el.classList.contains('scroll')) && el.tagName !== 'H2') el = el.nextElementSibling;
    r.headline = el && el.classList.contains('scroll') ? {scrollWidth: el.scrollWidth, width: el.clientWidth} : null;
    r.height = window.innerHeight;
    const rect = function (q) {
      const e = document.querySelector(q); if (!e) return null;
      const b = e.getBoundingClientRect();
      return {top: b.top, bottom: b.bottom, width: b.width, text: e.textContent.slice(0, 300),
              file: (e.dataset && e.dataset.file) || ''};
    };
    r.answer = rect('.lede .answer');
    r.figure = rect('.lede img');
    const figs = document.getElementById('figures');
    r.lead_tables = [...document.querySelectorAll('.scroll')].filter(d => !figs ||
      (d.compareDocumentPosition(figs) & Node.DOCUMENT_POSITION_FOLLOWING)).map(d => (
      {scrollWidth: d.scrollWidth, width: d.clientWidth, first: d.textContent.slice(0, 80)}));
    r.errors = window.__errors;
    const pre = document.createElement('pre'); pre.id = 'page-check'; pre.textContent = JSON.stringify(r);
    document.body.appendChild(pre);
  });
})();
</script>"""


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page: str | Path, *, width: int = 1280, height: int = 900, timeout: float = 180) -> dict[str, Any]:
    """Load ``page`` (an HTML file) in headless Chromium at ``width`` px and return the layout record."""
    binary = chromium()
    if binary is None:
        raise RuntimeError(f"chromium is not installed ({APT_LINE})")
    text = Path(page).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="page-check-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(text.replace("<head>", "<head>" + _SCRIPT, 1), encoding="utf-8")
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", f"--user-data-dir={tmp}/profile", f"--window-size={width},{height + 200}",
               "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="page-check">(.*?)</pre>', proc.stdout, re.S)
    if not m:
        raise RuntimeError(f"chromium gave no layout record (exit {proc.returncode}): {proc.stderr[-2000:]}")
    rec: dict[str, Any] = json.loads(html.unescape(m.group(1)))
    rec["screen"] = height  # the first screen: the top ``height`` px (the window is taller: it counts its own bars)
    rec["console"] = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln.upper()]
    return rec


def first_screen_problems(rec: dict[str, Any]) -> list[str]:
    """What the layout record ``rec`` of a report page breaks (nothing: ``[]``): the answer and its figure wholly on
    the first screen, no horizontal overflow, no table above the figures that scrolls sideways, every image decoded,
    no console error."""
    out = []
    h = rec["screen"]
    if not rec.get("answer") or not rec["answer"]["text"].strip():
        out.append("no answer beside the headline figure")
    elif rec["answer"]["bottom"] > h:
        out.append(f"the answer ends at {rec['answer']['bottom']:.0f} px, below the first screen ({h} px)")
    if not rec.get("figure"):
        out.append("no figure beside the answer")
    elif rec["figure"]["bottom"] > h:
        out.append(f"the figure {rec['figure']['file']} ends at {rec['figure']['bottom']:.0f} px, below the first "
                   f"screen ({h} px)")
    if rec["scrollWidth"] > rec["viewport"] or rec["overflowing"]:
        out.append(f"the page is {rec['scrollWidth']} px wide in a {rec['viewport']} px viewport: {rec['overflowing']}")
    for t in rec.get("lead_tables") or []:
        if t["scrollWidth"] > t["width"]:
            out.append(f"a headline table scrolls sideways by {t['scrollWidth'] - t['width']} px: {t['first']!r}")
    for img in rec["images"]:
        if not img["decoded"]:
            out.append(f"image {img['file']} does not decode")
    if rec["errors"] or rec["console"]:
        out.append(f"console errors: {rec['errors'] + rec['console']}")
    return out
