"""The ``robustclip`` command line: one module per command, each registering its own handler.

Every user error ends in one line on stderr, ``robustclip: error: <problem> -- <fix>``, and exit status 2; an
internal error (a bug) is one line and exit status 3 (set ``ROBUSTCLIP_DEBUG=1`` for the traceback). See
:mod:`robustclip.exitcodes` for the table. Output files are written atomically.

May import gate, sweeps, reports and below.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from ..errors import RobustclipError
from ..exitcodes import ExitCode
from ..exitcodes import epilog as exit_epilog
from . import check, data, demo, evaluate, paper, report, sweep, train
from .common import Parser, formatter

__all__ = ["main", "build_parser"]

COMMAND_MODULES = (data, train, evaluate, sweep, report, demo, paper, check)

EPILOG_MAIN = """\
examples:
  robustclip demo                                   # the main job: a small end-to-end sweep and report
  robustclip data --check --data-dir ../shared/data
  robustclip train --dataset mnist --reg clip --lam 0.1 --epochs 10 --out runs/clip.safetensors
  robustclip evaluate runs/clip.safetensors --suite paper-mnist --out runs/eval
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see :mod:`robustclip.exitcodes`)."""
    safe_streams()
    try:
        parser = build_parser()  # inside the guard: a broken install fails here, with one line
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return ExitCode.OK
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sanity flags are printed by the commands themselves
            return int(handler(args) or 0)
    except RobustclipError as exc:
        print(f"robustclip: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("robustclip: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"robustclip: internal error: {type(exc).__name__}{at}: {first} -- this is a bug in robustclip; "
              "rerun with ROBUSTCLIP_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return ExitCode.INTERNAL
