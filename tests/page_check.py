"""Render an HTML page in headless Chromium at a given width and report its layout (for the report tests).

:func:`check_page` injects a script that runs after the page loads and records: the page's scroll width against
the viewport, elements that stick out to the right outside a horizontal scroll container, every image (decoded or
not), table cells with "±" that wrap onto more than one line, the headline table's width against its box (``headline``:
``scrollWidth`` > ``width`` means it scrolls), and console errors / error events. The result comes
back through ``--dump-dom`` as JSON.
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
               "--disable-extensions", f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
               "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<pre id="page-check">(.*?)</pre>', proc.stdout, re.S)
    if not m:
        raise RuntimeError(f"chromium gave no layout record (exit {proc.returncode}): {proc.stderr[-2000:]}")
    rec: dict[str, Any] = json.loads(html.unescape(m.group(1)))
    rec["console"] = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln.upper()]
    return rec
