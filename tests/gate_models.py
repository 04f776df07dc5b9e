"""The small models of our own robustness regression test, and how to refresh their baselines.

Both train on the first 5,000 MNIST training images (after the seeded 90/10
split) for 3 epochs with Adam, seed 0: one plain, one with CLIP (λ = 0.5).
Refresh the committed baselines after an intended change with:

    python tests/gate_models.py --update        # writes reports/baselines/ci-{plain,clip}.json
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = str(ROOT / "attacks" / "ci-quick.toml")
BASELINES = ROOT / "reports" / "baselines"
RECIPES = {
    "plain": dict(reg="none"),
    "clip": dict(reg="clip", lam=0.5),
}


def train_gate_model(kind: str, out: Path, data_dir: str | None = None) -> Path:
    """Train the ``kind`` gate model and save its checkpoint to ``out``."""
    from robustclip.pipeline import train_to_checkpoint
    from robustclip.training import TrainConfig

    cfg = TrainConfig(dataset="mnist", epochs=3, n_train=5000, optimizer="adam", lr=0.002, seed=0,
                      lip_probe_pairs=0, **RECIPES[kind])
    train_to_checkpoint(cfg, out, data_dir=data_dir, progress=False, name=f"ci-{kind}")
    return out


if __name__ == "__main__":
    import os
    import tempfile

    from robustclip.cli import main

    if "--update" not in sys.argv:
        print(__doc__)
        sys.exit(0)
    data_dir = os.environ.get("ROBUSTCLIP_DATA") or str(ROOT.parent / "shared" / "data")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in RECIPES:
            ckpt = train_gate_model(kind, Path(tmp) / f"ci-{kind}.safetensors", data_dir)
            main(["check", str(ckpt), "--suite", SUITE, "--baseline", str(BASELINES / f"ci-{kind}.json"),
                  "--update-baseline", "--data-dir", data_dir])
