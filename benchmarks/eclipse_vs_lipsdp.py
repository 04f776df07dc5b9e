"""ECLipsE against LipSDP-Neuron on one fully connected checkpoint: the bound and its cost, in the same process.

Prints the layer-product and layer-pair bounds, ECLipsE after its stages only
and after the joint descent (``--refine`` steps), and LipSDP-Neuron (cvxpy +
SCS, unless ``--no-sdp``), each with its seconds, and the ratios
ECLipsE/LipSDP (value and time). Every value is a verified upper bound.

    python benchmarks/eclipse_vs_lipsdp.py [--checkpoint PATH] [--refine 20] [--no-sdp] [--threads 1]

Timings depend on machine load: compare the ratios, measured in one process.
"""

from __future__ import annotations

import argparse
import time

import record
import torch

import robustclip
from robustclip.bounds import eclipse, lipsdp, structure, upper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="reports/paper/checkpoints/mnist-clip-best.safetensors")
    ap.add_argument("--refine", type=int, default=20)
    ap.add_argument("--no-sdp", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    a = ap.parse_args()
    record.keep(a.out, None, run, a)


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    model, _ = robustclip.load(a.checkpoint)
    ops, why = structure.affine_ops(model, (1, 28, 28))
    if ops is None:
        raise SystemExit(f"not a chain: {why}")
    rows: list[tuple[str, float, float]] = []
    t = time.perf_counter()
    rows.append(("layer_product", upper.upper_bound(model, (1, 28, 28)), time.perf_counter() - t))
    t = time.perf_counter()
    rows.append(("layer_pair", upper.layer_pair_bound(ops), time.perf_counter() - t))
    t = time.perf_counter()
    L0, _, _ = eclipse.eclipse(ops, refine_iters=0)
    rows.append(("eclipse (stages)", L0, time.perf_counter() - t))
    t = time.perf_counter()
    L1, _, _ = eclipse.eclipse(ops, refine_iters=a.refine)
    rows.append((f"eclipse (+{a.refine} joint steps)", L1, time.perf_counter() - t))
    if not a.no_sdp:
        t = time.perf_counter()
        L2, _, _ = lipsdp.lipsdp(ops)
        rows.append(("lipsdp (SCS)", L2, time.perf_counter() - t))
    for name, v, s in rows:
        print(f"{name:28s} {v:10.4f}  {s:8.2f} s")
    if not a.no_sdp:
        print(f"eclipse/lipsdp: value {L1 / L2:.4f}x, time {rows[3][2] / rows[-1][2]:.4f}x")


if __name__ == "__main__":
    main()
