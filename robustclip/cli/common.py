"""Shared pieces of the command line: the parser class, common options, argument types and console tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..errors import RobustclipError
from ..exitcodes import epilog as exit_epilog

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``robustclip: error: <problem> -- <fix>``, and exit status 2,
    like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(2, f"robustclip: error: {self.prog}: {message} -- see '{self.prog} --help'\n")


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help formatter: keeps the examples' line breaks."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_command(sub: Any, name: str, handler: Handler, *, help: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``sub`` with its handler, description, examples and the exit-code table."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description, formatter_class=formatter,
                                                epilog=f"examples:\n{examples.rstrip()}\n\n{exit_epilog()}\n")
    p.set_defaults(handler=handler)
    return p


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """``--data-dir D``."""
    p.add_argument("--data-dir", metavar="D", default=None,
                   help="folder holding mnist/, fashion-mnist/, cifar10/, cifar100/ (default: $ROBUSTCLIP_DATA, "
                   "cache, download)")


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model MODULE:CALLABLE``, and ``--dataset D`` or ``--data FILE``: evaluate a user's own network and data."""
    from ..data.datasets import names

    p.add_argument("--model", metavar="MODULE:CALLABLE", default=None,
                   help="for a state_dict (.safetensors, .pt/.pth): the code that builds the network, imported from "
                   "this folder or sys.path (importing runs its code); CALLABLE() must return the nn.Module")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--dataset", choices=names(files=True), default=None,
                       help="the dataset the model classifies (needed for a state_dict; a checkpoint records it)")
    which.add_argument("--data", metavar="FILE|DIR", default=None,
                       help="evaluate on your own data: a .safetensors or .npz file holding x (N, ...) in [0,1] and "
                       "integer labels y (N,), any input shape; or a folder with one subfolder per class of PNG/JPEG "
                       "images of one size (classes in sorted folder order); classes from the model's output")


def add_verbose(p: argparse.ArgumentParser) -> None:
    """``--verbose``: every attack in the console table (the files always hold them)."""
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print every attack at every ε (default: one row per ε with clean, worst case, certified)")


def add_lipschitz(p: argparse.ArgumentParser, off: str, full: str = "default") -> None:
    """``--lipschitz full|fast|off``: the cost budget of the Lipschitz estimate (``off``: what it skips; ``full``:
    what the command's full estimate holds)."""
    p.add_argument("--lipschitz", choices=("full", "fast", "off"), default="full",
                   help=f"Lipschitz estimate: full ({full}), fast (a smaller ascent budget and one cheap FFT-based "
                        f"upper bound) or off ({off})")


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``."""
    p.add_argument("--quiet", action="store_true", help="no progress output")


def positive_int(v: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        i = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {i}")
    return i


def add_force(p: argparse.ArgumentParser, what: str) -> None:
    """``--force``: overwrite existing output files."""
    p.add_argument("--force", action="store_true", help=f"overwrite {what} if it exists (default: refuse)")


def split_floats(text: str, what: str) -> list[float]:
    """``"0.05,0.1"`` as ``[0.05, 0.1]``; a one-line user error otherwise."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RobustclipError(f"{what}: {text!r} is not a comma-separated list of numbers",
                              "e.g. clip:0.05,0.1") from None


def console_table(frame: pd.DataFrame, lips: list[dict[str, Any]] | None = None, *, verbose: bool = False) -> str:
    """The console table of an evaluation frame (accuracy in %; see :func:`robustclip.reports.console.table`): one row
    per
    model and ε with clean, worst case and certified, or with ``verbose`` every attack; then the Lipschitz bounds."""
    from ..reports.console import table

    text = table(frame, verbose=verbose)
    if lips:
        from ..reports.console import shorten, width

        w = max(14, min(max(len(str(lp["model"])) for lp in lips), width() - 32))
        text += f"\n\n{'Lipschitz (L2)':{w}s}    lower    upper  upper/lower"
        for lp in lips:
            upper, ratio = lp.get("upper"), lp.get("ratio")
            name = shorten(str(lp["model"]), w)
            if upper is None:  # no sound upper bound for this model's structure: say so, with the reason
                why = lp.get("upper_reason") or "structure not understood"
                text += f"\n{name:{w}s} {lp['lower']:8.3g}     none            -  ({why})"
            else:
                text += f"\n{name:{w}s} {lp['lower']:8.3g} {upper:8.3g} {ratio:12.3g}"
    return text


def add_labels(p: argparse.ArgumentParser, scope: str, label_tail: str, group_tail: str) -> None:
    """``--label``, ``--labels`` and ``--group``, shared by ``compare`` and ``report`` (``scope`` prefixes each help
    text: what the flags apply to)."""
    p.add_argument("--label", action="append", default=[], metavar="CKPT=METHOD:λ[:SEED]",
                   help=f"{scope}label a checkpoint (its path as given to evaluate, file name or model name), "
                   f"overriding its metadata{label_tail}")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help=f"{scope}a CSV file of labels, one row per checkpoint, with the header "
                   "checkpoint,method,lam,seed (seed may be empty or left out); each row as --label CHECKPOINT="
                   "METHOD:LAM:SEED, checked the same way (λ a finite number >= 0, no label twice); combines with "
                   "--label")
    p.add_argument("--group", action="store_true",
                   help=f"{scope}compare within each suite and dataset {group_tail}")

