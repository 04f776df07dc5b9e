"""Keep what a benchmark prints as a file under benchmarks/results/, with a header line saying how it was measured.

The documentation never restates a measured figure: it includes these files (``--8<--`` snippets in docs/*.md).
A benchmark run with ``--out benchmarks/results/NAME.txt`` prints as usual and, when it finishes without an error,
writes everything it printed to that file after one header line::

    # python benchmarks/NAME.py ARGS   (2026-12-05 18:10 UTC, commit abc1234, torch 2.13.0+cpu, 1 torch thread,
    #   OMP_NUM_THREADS=1, load average 0.4 on 2 cores at the start: a shared machine, so times are indicative)

The path is checked before the benchmark's work starts, and nothing is written when the benchmark fails (no
half-written result).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {rev}{' with uncommitted changes' if dirty else ''}"


def _start() -> tuple[str, float]:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return when, (os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))


def header(argv: list[str] | None = None, note: str = "", start: tuple[str, float] | None = None) -> str:
    """The one header line (``#``, then the command and the conditions of the run: date, commit, torch, threads,
    load at ``start``, default now); ``note`` is appended, e.g. what the times mean on a shared machine."""
    import torch

    args = sys.argv[1:] if argv is None else argv
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script.name
    when, load = start or _start()
    threads = torch.get_num_threads()
    parts = [when, _commit(), f"torch {torch.__version__}", f"{threads} torch thread{'s' if threads != 1 else ''}",
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             f"load average {load:.1f} on {os.cpu_count()} cores at the start"]
    line = f"# python {shown} {' '.join(args)}".rstrip() + f"   ({', '.join(parts)}"
    return line + (f": {note})" if note else ")")


def check_out(path: str | None) -> Path | None:
    """``path`` as a Path after checking that its folder exists and is writable (before any work), or None; a bad
    path ends the benchmark with one line on stderr and exit status 2."""
    if path is None:
        return None
    out = Path(path)
    problem = None
    if not out.parent.is_dir():
        problem = f"--out {path}: the folder {out.parent} does not exist -- create it or give another path"
    elif out.is_dir() or not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        problem = f"--out {path}: not a writable file path -- give a file path you can write"
    if problem:
        print(f"{Path(sys.argv[0]).name}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return out


class _Outcome:
    """Set ``failed`` to keep the output file from being written (a benchmark that returned an error status)."""

    failed = False


@contextlib.contextmanager
def tee(path: str | None, argv: list[str] | None = None,
        note: str = "a shared machine, so times are indicative") -> Iterator[_Outcome]:
    """Print as usual and, if ``path`` is given and the block finishes (without an exception, and without setting
    ``failed`` on what it yields), write the header and everything printed to ``path`` (replaced atomically). The
    header gives the date and load at the start and the torch threads at the end."""
    outcome = _Outcome()
    out = check_out(path)
    if out is None:
        yield outcome
        return
    buf = io.StringIO()
    start = _start()
    old = sys.stdout
    sys.stdout = _Tee(old, buf)  # type: ignore[assignment]
    try:
        yield outcome
    finally:
        sys.stdout = old
    if outcome.failed:
        return
    head = header(argv, note, start)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(head + "\n" + buf.getvalue(), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")


def keep(path: str | None, argv: list[str] | None, run: Callable[..., int | None], *args: Any) -> int:
    """``run(*args)``, its output kept in ``path`` (see :func:`tee`) when it returns 0 or None; its status."""
    with tee(path, argv) as outcome:
        code = run(*args) or 0
        outcome.failed = code != 0
    return code
