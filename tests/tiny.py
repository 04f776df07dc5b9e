"""Shared fixtures-as-data for the sweep and report tests: a small model spec and a tiny suite."""

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
