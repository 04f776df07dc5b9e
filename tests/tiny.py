"""Shared by the sweep and report tests: a small model spec, a tiny suite, and a one-thread guard
(two torch threads on two busy cores run these tiny models several times slower)."""

import contextlib

import torch

SMALL = {"arch": "fc", "sizes": [784, 32, 10], "activation": "sigmoid"}
SUITE_TOML = """\
name = "tiny"
n = 64
batch_size = 64
seed = 0

[eps]
L2 = [1.0, 2.0]

[[attack]]
type = "clean"

[[attack]]
type = "pgd"
norm = "L2"
steps = 3
"""


@contextlib.contextmanager
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)

