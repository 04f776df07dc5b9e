"""Gate output: the comparison as a console table, JUnit XML and the JSON report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from .verdicts import Comparison

REPORT_FORMAT = "robustclip-check"
REPORT_VERSION = 1


def format_table(rows: list[Comparison]) -> str:
    """The comparison as a console table."""
    head = f"{'metric':24s} {'baseline':>9s} {'current':>9s} {'change':>8s} {'limit':>9s} {'detects':>8s}  "
    lines = [head + f"{'test':24s} verdict"]
    for r in rows:
        fmt = (lambda v: f"{v:9.4g}") if r.is_bound else (lambda v: f"{100 * v:8.1f}%")
        change = f"{r.change:+8.3g}" if r.is_bound else f"{100 * r.change:+7.1f}"
        limit = f"{'':>9s}" if r.threshold is None or (not r.is_bound and r.threshold < 0) else fmt(r.threshold)
        det = "" if r.detectable is None else (f"{100 * r.detectable:6.1f}%" if r.is_bound
                                               else f"{100 * r.detectable:6.1f}pt")
        test = r.test + (f" p={r.p_value:.2g}" if r.p_value is not None else "")
        if r.regressed:
            verdict = f"REGRESSED ({r.moved()} beyond noise)"
        elif r.suspicious:
            verdict = f"SUSPICIOUS ({r.moved()} beyond noise)"
        elif r.beyond_tolerance:
            verdict = "ok (change within noise)"
        else:
            verdict = "ok"
        lines.append(f"{r.metric:24s} {fmt(r.baseline)} {fmt(r.current)} {change:>8s} {limit} {det:>8s}  "
                     f"{test:24s} {verdict}")
    return "\n".join(lines)


def junit_xml(rows: list[Comparison], *, name: str, seconds: float, fail_on_suspicious: bool = False) -> str:
    """JUnit XML: one testcase per row with its values as properties and in ``<system-out>``.

    A regression is a ``<failure>``; a suspicious gain is a ``<system-err>`` warning (a ``<failure>`` with
    ``fail_on_suspicious``).
    """
    failing = [r for r in rows if r.regressed or (fail_on_suspicious and r.suspicious)]
    suite = ET.Element("testsuite", name=f"robustclip.check.{name}", tests=str(len(rows)),
                       failures=str(len(failing)), errors="0", time=f"{seconds:.3f}")
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"robustclip.{name}", name=r.metric, time="0")
        props = ET.SubElement(case, "properties")
        for key, value in r.to_dict().items():
            if key != "metric" and value is not None:
                ET.SubElement(props, "property", name=key, value=str(value))
        if r in failing:
            kind = "regression" if r.regressed else "suspicious"
            fail = ET.SubElement(case, "failure", message=r.describe(), type=kind)
            fail.text = json.dumps(r.to_dict())
        ET.SubElement(case, "system-out").text = r.describe()
        if r.suspicious and r not in failing:
            ET.SubElement(case, "system-err").text = f"SUSPICIOUS: {r.describe()}"
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def report_json(code: int, rows: list[Comparison], info: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable result of a check (``format``: robustclip-check, ``format_version`` 1)."""
    status = "regressed" if any(r.regressed for r in rows) else "suspicious" if any(r.suspicious for r in rows) \
        else "ok"
    return {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, "status": status, "exit_code": code,
            **info, "regressions": [r.metric for r in rows if r.regressed],
            "suspicious": [r.metric for r in rows if r.suspicious], "comparisons": [r.to_dict() for r in rows]}
