"""Shared by the tests: a small model spec, a tiny suite, a one-thread guard (two torch threads on two busy cores
run these tiny models several times slower), and the command line run in-process."""

import contextlib
import io
from typing import Any

import torch

SMALL = {"arch": "fc", "sizes": [784, 32, 10], "activation": "sigmoid"}


def suite_toml(name: str = "tiny", *, n: int = 64, eps: tuple[float, ...] = (1.0, 2.0), steps: int = 3) -> str:
    """A suite file's text: clean accuracy and PGD-L2 with ``steps`` steps at each ``eps``, on ``n`` images."""
    return (f'name = "{name}"\nn = {n}\nbatch_size = {n}\nseed = 0\n\n[eps]\nL2 = [{", ".join(map(str, eps))}]\n\n'
            f'[[attack]]\ntype = "clean"\n\n[[attack]]\ntype = "pgd"\nnorm = "L2"\nsteps = {steps}\n')


SUITE_TOML = suite_toml()


@contextlib.contextmanager
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)



def run_cli(argv: list[Any]) -> tuple[int, str, str]:
    """Run ``robustclip.cli.main`` in-process: ``(exit status, stdout, stderr)``; argparse exits become statuses."""
    from robustclip import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help, usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
    return int(rc), out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, *words: str) -> str:
    """A user error as the CLI must end one: status 2, no traceback, one line ``robustclip: error: PROBLEM -- FIX``
    holding every one of ``words``; returns that line."""
    __tracebackhide__ = True
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("robustclip: error: ") and " -- " in lines[0], err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]
