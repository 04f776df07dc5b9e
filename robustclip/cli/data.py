"""``robustclip data``: find the datasets and check their content against the official files."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import RobustclipError
from .common import add_command, add_data_dir


def register(sub: Any) -> None:
    """Add the ``data`` subcommand."""
    from ..data.datasets import names

    p = add_command(sub, "data", run, help="find and check the datasets",
                    description="Report where MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 are found, their counts, "
                    "and whether their content matches the official files. With --dataset all, MNIST and Fashion-MNIST "
                    "must be there; CIFAR is checked when present.",
                    examples="  robustclip data --check --data-dir ../shared/data\n"
                             "  robustclip data --check --dataset mnist --download\n"
                             "  robustclip data --check --dataset cifar10 --download\n")
    p.add_argument("--check", action="store_true", help="verify counts and SHA-256 of the content (default action)")
    p.add_argument("--dataset", choices=[*names(files=True), "all"], default="all")
    p.add_argument("--download", action="store_true", help="download missing data from the official mirrors")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Locate and verify each dataset; exit 2 when one is missing or does not match."""
    from ..data import datasets as data

    # a dataset that is not required (CIFAR: most installations have only MNIST) is checked only where found
    names = data.names(files=True) if args.dataset == "all" else (args.dataset,)
    ok = True
    for name in names:
        try:
            rep = data.verify(name, args.data_dir, download=bool(args.download))
        except RobustclipError as exc:
            if args.dataset == "all" and not data.REGISTRY[name].required and "data not found" in exc.problem:
                print(f"{name:14s} not found (optional): {exc.problem.split('; tried')[0]}")
                continue
            print(f"{name:14s} {'MISSING' if 'data not found' in exc.problem else 'BROKEN '}  {exc}")
            ok = False
            continue
        counts = ", ".join(f"{k} {v['count']}" for k, v in rep["splits"].items())
        digest = data.REGISTRY[name].digest
        content = f"content OK ({digest} matches the official files)" if all(rep["files"].values()) else \
            "content MISMATCH (structure valid, not the official files): " + \
            ", ".join(f for f, good in rep["files"].items() if not good)
        print(f"{name:14s} found via {rep['origin']}: {rep['folder']}\n{'':14s} {counts}; {content}")
        ok &= rep["ok"]
    if not ok:
        raise RobustclipError("some data is missing or does not match the official files",
                              "pass --data-dir D holding mnist/ and fashion-mnist/ (and cifar10/, cifar100/), "
                              "or use --download")
    return 0
