"""Write the λ study's data: MNIST training images as train.npz and as an image folder, test images as test.npz.

    python make_data.py [--n-train 2000] [--n-test 200]

Your own data takes the same two forms: an .npz (or safetensors) file with x (N, ...) in [0, 1] and integer y, or
a folder with one subfolder of PNG/JPEG images per class.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from robustclip.data.datasets import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    out = Path(args.out)
    train = load("mnist", "train").subset(args.n_train)
    test = load("mnist", "test").subset(args.n_test)
    np.savez(out / "train.npz", x=train.x.numpy(), y=train.y.numpy())
    np.savez(out / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    for i, (img, label) in enumerate(zip(train.x, train.y)):
        folder = out / "train_images" / f"digit{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:05d}.png")
    print(f"wrote {out / 'train.npz'} ({len(train)} images), {out / 'test.npz'} ({len(test)}), "
          f"{out / 'train_images'}/")


if __name__ == "__main__":
    main()
