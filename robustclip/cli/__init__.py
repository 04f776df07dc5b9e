"""The ``robustclip`` command line: one module per command, each registering its own handler.

Every user error ends in one line on stderr, ``robustclip: error: <problem> -- <fix>``, and exit status 2; an
internal error (a bug) is one line and exit status 3 (set ``ROBUSTCLIP_DEBUG=1`` for the traceback). See
:mod:`robustclip.exitcodes` for the table. Output files are written atomically.

May import gate, sweeps, reports and below.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from typing import Any

from ..errors import RobustclipError
from ..exitcodes import ExitCode
from ..exitcodes import epilog as exit_epilog
from . import check, compare, data, demo, evaluate, paper, report, sweep, train
from .common import Parser, formatter

__all__ = ["main", "build_parser"]

COMMAND_MODULES = (data, train, evaluate, compare, sweep, report, demo, paper, check)

EPILOG_MAIN = """\
examples:
  robustclip demo                                   # the main job: a small end-to-end sweep and report
  robustclip data --check --data-dir ../shared/data
  robustclip train --dataset mnist --reg clip --lam 0.1 --epochs 10 --out runs/clip.safetensors
  robustclip evaluate runs/clip.safetensors --suite paper-mnist --out runs/eval
  robustclip compare runs/eval-a runs/eval-b         # is A more robust than B? paired tests on the same images
  robustclip sweep my-sweep.toml --out runs/sweep && robustclip report runs/sweep --out reports/mine
  robustclip check runs/clip.safetensors --suite ci-quick --baseline reports/baselines/clip.json

Data: --data-dir D, else $ROBUSTCLIP_DATA, else the cache, else Debian's
/usr/share/datasets, else a checked download from the official mirrors.
"""


def _version() -> str:
    from .._version import version

    return version()


def build_parser() -> argparse.ArgumentParser:
    """The full parser: every command module adds its subcommand and handler."""
    ap = Parser(prog="robustclip", description="CLIP: cheap Lipschitz training of neural networks, "
                "and an honest robustness evaluation to compare it with weight regularisation.",
                epilog=f"{EPILOG_MAIN}\n{exit_epilog()}\n", formatter_class=formatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return ap


_MUST_PRINT = "λε≥≤√·"
"""Characters robustclip's output uses: a stream that cannot encode them gets escapes instead of a crash."""


def safe_streams() -> None:
    """Make stdout and stderr escape (``\\u03bb``) what their encoding cannot print, instead of raising.

    Under a cp1252 or ASCII console, printing "λ" raised UnicodeEncodeError mid-run (after an epoch of
    training, before the checkpoint was written). Streams that can encode everything are left alone.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            _MUST_PRINT.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                try:
                    reconfigure(errors="backslashreplace")
                except (ValueError, OSError):  # a detached or closed stream: nothing to print to anyway
                    pass


def printable(text: str) -> str:
    """``text`` on one printable line: control characters (a newline in a file name) and undecodable bytes of a
    file name (lone surrogates) become escapes, so an error message is always one line and always prints.

    >>> printable("bad\\nname \\udcff")
    'bad\\\\nname \\\\udcff'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class StdoutLost(Exception):
    """Standard output failed (a full device) while a command wrote to it; ``code``: the exit status the command
    had already decided (``check``'s verdict), if any. Not an ``OSError``, so no handler meant for files swallows
    it."""

    def __init__(self, error: OSError, code: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = code


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a write or flush that fails (``/dev/full``, a full disk) raises
    :class:`StdoutLost`; everything else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutLost(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutLost(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _lost(exc: StdoutLost) -> int:
    """One line on stderr, and a status that never reads as a pass: the command's own if it already reports a
    failure (``check``'s 1), else 2."""
    _stdout_to_devnull()  # the interpreter's last flush goes nowhere instead of failing again
    print(f"robustclip: error: cannot write to standard output: {exc.error.strerror or exc.error} -- free space on "
          "its device or send the output elsewhere", file=sys.stderr)
    return exc.code if exc.code not in (None, ExitCode.OK) else ExitCode.USAGE


def _stdout_to_devnull() -> None:
    with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor (tests) has nothing to redirect
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see :mod:`robustclip.exitcodes`)."""
    safe_streams()
    real = sys.stdout
    sys.stdout = _GuardedStdout(real)
    try:
        return _main(argv)
    finally:
        sys.stdout = real


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()  # inside the guard: a broken install fails here, with one line
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return ExitCode.OK
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sanity flags are printed by the commands themselves
            code = int(handler(args) or 0)
        sys.stdout.flush()
        return code
    except StdoutLost as exc:
        return _lost(exc)
    except RobustclipError as exc:
        print(f"robustclip: error: {printable(str(exc))}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("robustclip: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head
        _stdout_to_devnull()
        return ExitCode.OK
    except ModuleNotFoundError as exc:  # a broken install, not a user error: one line, exit 3
        if os.environ.get("ROBUSTCLIP_DEBUG"):
            traceback.print_exc()
        print(f"robustclip: internal error: the package {exc.name!r} cannot be imported -- the installation is "
              "incomplete; reinstall robustclip (pip install --force-reinstall robustclip)", file=sys.stderr)
        return ExitCode.INTERNAL
    except Exception as exc:  # a bug: one line, exit 3, the traceback on request
        if os.environ.get("ROBUSTCLIP_DEBUG"):
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        first = printable(str(exc).splitlines()[0]) if str(exc) else ""
        print(f"robustclip: internal error: {type(exc).__name__}{at}: {first} -- this is a bug in robustclip; "
              "rerun with ROBUSTCLIP_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return ExitCode.INTERNAL
