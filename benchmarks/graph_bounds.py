"""What do the sound upper bounds of CNN layers cost, and how loose is the circular (FFT) conv bound?

Prints, for the CIFAR presets (random init, seed 0):

* the L2 upper bound, its time as a ratio to one training step (forward + backward of 128 images) in the same
  process, and the best lower bound found by a short pair ascent (the bracket upper/lower);

and for a few convolutions small enough to densify, the circular bound over the exact ``σ_max`` (dense SVD).

    python benchmarks/graph_bounds.py [--threads 1]

Timings depend on machine load; run with ``--threads 1`` on shared machines.
"""

from __future__ import annotations

import argparse
import copy
import time

import record
import torch
from torch import nn
from torch.nn import functional as F

from robustclip.bounds import conv_norms, lower, upper
from robustclip.models import specs as models


def step_seconds(net: nn.Module, repeats: int = 3) -> float:
    """Median seconds of one forward + backward pass of 128 CIFAR-shaped images."""
    x, y = torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = p.parse_args(argv)
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    print("preset      upper   seconds  (x one training step)  lower (ascent)  upper/lower")
    for arch in models.CIFAR_ARCHITECTURES:
        torch.manual_seed(0)
        net = models.build({"arch": arch})
        step = step_seconds(copy.deepcopy(net))  # a copy: training mode moves BatchNorm's statistics
        net.eval()
        t0 = time.perf_counter()
        up = upper.upper_bound(net, (3, 32, 32))
        secs = time.perf_counter() - t0
        x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        low = lower.lower_bound_quotient(net, x, pairs=16, steps=30)
        print(f"{arch:10s} {up:7.3f} {secs:8.2f}  ({secs / step:5.1f}x)            {low:10.4f}  {up / low:10.1f}")
    print("\nconvolution (c_in->c_out, k, stride, size)   circular / exact")
    for ci, co, k, s, n in [(3, 16, 3, 1, 16), (16, 16, 3, 1, 8), (16, 32, 3, 2, 8), (32, 32, 3, 1, 4),
                            (3, 16, 4, 2, 16)]:
        torch.manual_seed(0)
        conv = nn.Conv2d(ci, co, k, stride=s, padding=1)
        circ, _ = conv_norms.conv_module_bounds(conv, (ci, n, n))
        exact = conv_norms.dense_conv_l2(conv, (ci, n, n), max_entries=10**8)
        assert exact is not None
        print(f"{ci:3d}->{co:<3d} k{k} s{s} {n:2d}x{n:<2d}                        {circ / exact:8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
