"""The same λ study in your own training loop: rc.ClipPenalty as a loss term, then rc.save with the metadata that
labels each checkpoint (method, λ, seed) and the factory that rebuilds it. Evaluate and report them afterwards:

    python own_loop.py --out runs/loop
    robustclip evaluate runs/loop/*.safetensors --model studynets:res_cnn --data test.npz --suite ci-quick \\
        --n 200 --out runs/loop-eval
    robustclip report runs/loop-eval --out reports/loop
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import robustclip as rc
from studynets import res_cnn


def train_one(x: torch.Tensor, y: torch.Tensor, *, method: str, lam: float, seed: int, epochs: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = res_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    clip = rc.ClipPenalty(model, seed=seed) if method == "clip" else None
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb, yb = x[idx], y[idx]
            loss = F.cross_entropy(model(xb), yb)
            if clip is not None:
                loss = loss + lam * clip(xb)
            elif method == "weight":
                loss = loss + lam * sum((p ** 2).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="train.npz")
    ap.add_argument("--out", default="runs/loop")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    arrays = np.load(args.data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]).long()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = [("none", 0.0), ("clip", 0.01), ("clip", 0.05), ("clip", 0.2), ("weight", 0.0001), ("weight", 0.001)]
    for seed in (int(s) for s in args.seeds.split(",")):
        for method, lam in settings:
            model = train_one(x, y, method=method, lam=lam, seed=seed, epochs=args.epochs)
            path = out / f"{method}-{lam:g}-s{seed}.safetensors"
            rc.save(model, path, meta={"method": method, "lam": lam, "seed": seed, "dataset": "mnist-slice"},
                    factory="studynets:res_cnn")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
