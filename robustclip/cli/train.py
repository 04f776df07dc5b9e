"""``robustclip train``: train one model with any regulariser of the registry
(robustclip.training.regularizers.registry.REGISTRY)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..core.files import loads_json_bounded
from ..errors import RobustclipError
from .common import add_command, add_data_dir, add_force, add_quiet, positive_int


def register(sub: Any) -> None:
    """Add the ``train`` subcommand."""
    from ..data.datasets import REGISTRY as DATASETS
    from ..training.regularizers.registry import REGISTRY, SETTINGS

    methods = ", ".join(e.label or name for name, e in REGISTRY.items())
    p = add_command(sub, "train", run, help=f"train a model ({methods})",
                    description="Train a model and write a .safetensors checkpoint holding the full config and "
                    "per-epoch history in its metadata.",
                    examples="  robustclip train --dataset mnist --reg clip --lam 0.1 --epochs 10 "
                             "--out runs/clip.safetensors\n"
                             "  robustclip train --dataset mnist --reg clip --lam 0.05 --target-acc 0.97 "
                             "--lam-step 0.01 \\\n"
                             "      --warmup 2 --epochs 20 --out runs/clip-tau97.safetensors "
                             "  # discrepancy principle\n"
                             "  robustclip train --dataset regression --reg weight --lam 0.001 "
                             "--out runs/reg.safetensors\n"
                             "  robustclip train --reg adversarial --adv eps=2 --adv steps=7 --epochs 10 "
                             "--out runs/at.safetensors   # PGD-L2, λ=1: half clean, half adversarial\n"
                             "  robustclip train --reg trades --lam 6 --adv eps=2 --out runs/trades.safetensors\n"
                             "  robustclip train --reg clip-adversarial --lam 0.3 --adv steps=1 --lr-schedule cosine "
                             "--epochs 30 \\\n"
                             "      --out runs/hybrid.safetensors   # one-step PGD-AT with CLIP's penalty on top\n"
                             "  robustclip train --reg lipschitz-margin --model '{\"arch\": \"cnn\", \"activation\": "
                             "\"minmax\"}' \\\n"
                             "      --optimizer adam --lr 0.001 --lr-schedule cosine --batch-size 256 --epochs 50 "
                             "--out runs/cert.safetensors   # certified training at L2 1.58\n"
                             "  robustclip train --model mynets:small_cnn --data train.npz --test-data test.npz "
                             "--reg clip --lam 0.1 \\\n"
                             "      --out runs/mine.safetensors   # your own model (imported) on your own data\n")
    p.add_argument("--dataset", default=None, help=f"one of {', '.join(DATASETS)} (default mnist, or your --data)")
    p.add_argument("--data", default=None, metavar="FILE|DIR",
                   help="train on your own data instead: an .npz or safetensors file holding x (N, ...) in [0, 1] and "
                        "integer y, or a folder of class folders of images; a stratified, seeded validation split is "
                        "carved from it (--model MODULE:CALLABLE or a JSON spec names the network)")
    p.add_argument("--test-data", default=None, metavar="FILE|DIR",
                   help="held-out test data in the same form: its clean accuracy is recorded (test_acc)")
    p.add_argument("--model", default=None,
                   help="fc (784-200-80-10 sigmoid), cnn, cnn4c3f (MinMax, certified training), mlp1d, cifar_cnn, "
                        "resnet8 (CIFAR), a JSON spec, or MODULE:CALLABLE naming your own code that returns the "
                        "nn.Module (imported: it runs; inputs in [0, 1], normalisation inside, logits out)")
    p.add_argument("--output-sigmoid", action="store_true",
                   help="squash the fc net's outputs with a sigmoid (authors' net)")
    p.add_argument("--reg", default="none", help=f"one of {', '.join(REGISTRY)} (default none)")
    p.add_argument("--lam", type=float, default=None, help="λ: fixed, or the start value with --target-acc")
    p.add_argument("--target-acc", type=float, default=None, metavar="TAU",
                   help="discrepancy principle: raise λ while train accuracy ≥ τ, else lower it")
    p.add_argument("--lam-step", type=float, default=0.01, help="dλ for the discrepancy principle (default 0.01)")
    p.add_argument("--lam-every", type=positive_int, default=1, help="update λ every k epochs (default 1)")
    p.add_argument("--warmup", type=int, default=0, help="epochs at λ = 0 first (default 0)")
    for name, table in SETTINGS.items():  # one repeatable KEY=VALUE option per settings table
        p.add_argument(table.flag, action="append", default=[], dest=f"table_{name}", metavar="KEY=VALUE",
                       help=table.help)
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                   help="constant (default) or cosine decay to 0 over the epochs")
    p.add_argument("--n-train", type=positive_int, default=None, help="train on the first n samples only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default: cuda when a GPU is present, else cpu), cpu or cuda")
    p.add_argument("--require-target", action="store_true",
                   help="select the best epoch only among those reaching τ")
    p.add_argument("--out", required=True, metavar="PATH.safetensors", help="checkpoint to write")
    add_force(p, "the --out checkpoint")
    add_quiet(p)
    add_data_dir(p)


def parse_clip(items: list[str], flag: str = "--clip", example: str = "pairs=32") -> dict[str, Any]:
    """``["pairs=32", "init=noise"]`` as ``{"pairs": 32, "init": "noise"}`` (values parsed as JSON when they are)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RobustclipError(f"{flag} {item!r} is not KEY=VALUE", f"e.g. {flag} {example}")
        k, v = item.split("=", 1)
        try:
            out[k] = loads_json_bounded(v, max_depth=4, max_bytes=4096, what=f"{flag} {k}")
        except ValueError:
            out[k] = v
    return out


def _is_factory(model: str | None) -> bool:
    """``--model MODULE:CALLABLE`` (the user's code) rather than a built-in name or a JSON spec."""
    return bool(model) and ":" in str(model) and not str(model).strip().startswith("{")


def _spec(args: argparse.Namespace) -> dict[str, Any] | None:
    from ..models import specs as models

    spec = None
    if args.model and _is_factory(args.model):
        return None
    if args.model:
        if args.model.strip().startswith("{"):
            try:
                spec = loads_json_bounded(args.model, max_depth=16, max_bytes=64 * 1024, what="--model")
            except ValueError as exc:
                raise RobustclipError(f"--model is not a valid JSON spec ({exc})",
                                      'e.g. --model \'{"arch": "fc", "sizes": [784, 100, 10]}\'') from None
        else:
            spec = models.default_spec(args.model, args.dataset)
    if args.output_sigmoid:
        spec = dict(spec or models.paper_spec())
        if spec.get("arch") != "fc":
            raise RobustclipError("--output-sigmoid applies to the fc net only", "drop it or use --model fc")
        spec["output_activation"] = "sigmoid"
    return spec


def run(args: argparse.Namespace) -> int:
    """Train as the flags say, save the checkpoint, print a one-line summary."""
    from ..core import validate
    from ..core.inputs import command_inputs
    from ..data.datasets import dataset_folders
    from ..evaluation.pipeline import train_to_checkpoint
    from ..training.config import CUSTOM, TrainConfig
    from ..training.regularizers.registry import REGISTRY, SETTINGS, users

    if args.data is not None and args.dataset is not None:
        raise RobustclipError(f"--data {args.data} and --dataset {args.dataset} name two training sets",
                              "pass one of them")
    args.dataset = CUSTOM if args.data is not None else (args.dataset or "mnist")
    factory = args.model if _is_factory(args.model) else None
    # before any work: fail first, not last; never onto an input (the data, the factory's module), even with --force
    out = validate.output_file(args.out, "--out", force=args.force,
                               inputs=tuple(command_inputs(args.data, args.test_data, model=factory,
                                                           folders=dataset_folders(args.data_dir))))
    for flag, path in (("--data", args.data), ("--test-data", args.test_data)):
        if path is not None and not os.path.exists(path):
            raise RobustclipError(f"{flag} {path} does not exist", "pass an .npz/safetensors file or an image folder")
    spec = _spec(args)
    entry = REGISTRY.get(args.reg)
    if entry is not None and not entry.takes_lam and args.lam not in (None, 0.0):
        raise RobustclipError(f"--reg {args.reg} takes no --lam", "drop --lam, or pick --reg weight or --reg clip")
    tables: dict[str, Any] = {}
    for name, table in SETTINGS.items():
        items = getattr(args, f"table_{name}")
        if items and (entry is None or name not in entry.fields):
            who = users(name)
            raise RobustclipError(f"{table.flag} applies to --reg {', '.join(who)}, not --reg {args.reg}",
                                  f"drop {table.flag}, or pick --reg {who[0]}")
        tables[name] = parse_clip(items, table.flag, table.example) or None
    lam = args.lam if args.lam is not None else (entry.default_lam if entry is not None else 0.0)
    cfg = TrainConfig.for_dataset(
        args.dataset, model=spec, reg=args.reg, lam=lam, target_acc=args.target_acc, lam_step=args.lam_step,
        lam_every=args.lam_every, warmup=args.warmup, **TrainConfig.table_kwargs(tables),
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        lr_schedule=args.lr_schedule, n_train=args.n_train, seed=args.seed, device=_device(args.device),
        require_target=args.require_target or None, factory=factory, data=args.data, test_data=args.test_data,
    )
    cfg.validate()  # every flag checked before the data is loaded
    res = train_to_checkpoint(cfg, out, data_dir=args.data_dir, progress=not args.quiet,
                              command=" ".join(["robustclip", *sys.argv[1:]]))
    best = res.meta.metrics
    summary = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
    print(f"wrote {out}  (best epoch {res.meta.train['best_epoch']}: {summary})")
    if res.interrupted:
        print(f"training was interrupted after {len(res.history)} epochs; the checkpoint holds the best weights so "
              "far and is marked partial", file=sys.stderr)
        return 130
    return 0


def _device(name: str) -> str:
    """``--device`` as TrainConfig takes it: ``auto`` resolved (``cuda`` when a GPU is present, else ``cpu``)."""
    if name.strip().lower() != "auto":
        return name
    from ..core.devices import resolve_device

    return resolve_device("auto").type
