"""The ``robustclip`` command line.

Every user error ends in one line on stderr, ``robustclip: error: ...``, and
exit status 2; no traceback. Output files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .errors import RobustclipError

EPILOG_MAIN = """\
examples:
  robustclip demo                                   # the main job: a small end-to-end sweep and report
  robustclip data --check --data-dir ../shared/data
  robustclip train --dataset mnist --reg clip --lam 0.1 --epochs 10 --out runs/clip.safetensors
  robustclip evaluate runs/clip.safetensors --suite attacks/paper-mnist.toml --out runs/eval
  robustclip sweep sweeps/demo.toml --out runs/sweep && robustclip report runs/sweep --out reports/mine
  robustclip check runs/clip.safetensors --suite attacks/ci-quick.toml --baseline reports/baselines/clip.json

Data: --data-dir D, else $ROBUSTCLIP_DATA, else the cache, else Debian's
/usr/share/datasets, else a checked download from the official mirrors.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fmt(cls):
    return lambda prog: cls(prog, max_help_position=32)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="D", default=None,
                   help="folder holding mnist/ and fashion-mnist/ (default: $ROBUSTCLIP_DATA, cache, download)")


def _positive_int(v: str) -> int:
    try:
        i = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {i}")
    return i


def build_parser() -> argparse.ArgumentParser:
    fmt = _fmt(argparse.RawDescriptionHelpFormatter)
    ap = _Parser(prog="robustclip", description="CLIP: cheap Lipschitz training of neural networks, "
                 "and an honest robustness evaluation to compare it with weight regularisation.",
                 epilog=EPILOG_MAIN, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("data", help="find and check the datasets", formatter_class=fmt,
                       description="Report where MNIST and Fashion-MNIST are found, their counts, and whether "
                       "their content matches the official files.",
                       epilog="examples:\n  robustclip data --check --data-dir ../shared/data\n"
                              "  robustclip data --check --dataset mnist --download\n")
    p.add_argument("--check", action="store_true", help="verify counts and SHA-256 of the content (default action)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "all"], default="all")
    p.add_argument("--download", action="store_true", help="download missing data from the official mirrors")
    _add_data_dir(p)

    from .data import DATASETS
    from .regularizers import REGULARIZERS

    p = sub.add_parser("train", help="train a model (plain, weight regularisation or CLIP)", formatter_class=fmt,
                       description="Train a model and write a .safetensors checkpoint holding the full config "
                       "and per-epoch history in its metadata.",
                       epilog="examples:\n"
                       "  robustclip train --dataset mnist --reg clip --lam 0.1 --epochs 10 --out runs/clip.safetensors\n"
                       "  robustclip train --dataset mnist --reg clip --lam 0.05 --target-acc 0.97 --lam-step 0.01 \\\n"
                       "      --warmup 2 --epochs 20 --out runs/clip-tau97.safetensors   # discrepancy principle\n"
                       "  robustclip train --dataset regression --reg weight --lam 0.001 --out runs/reg.safetensors\n")
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default mnist)")
    p.add_argument("--model", default=None, help="fc (784-200-80-10 sigmoid), cnn, mlp1d, or a JSON spec")
    p.add_argument("--output-sigmoid", action="store_true", help="squash the fc net's outputs with a sigmoid (authors' net)")
    p.add_argument("--reg", default="none", help=f"one of {', '.join(REGULARIZERS)} (default none)")
    p.add_argument("--lam", type=float, default=None, help="λ: fixed, or the start value with --target-acc")
    p.add_argument("--target-acc", type=float, default=None, metavar="TAU",
                   help="discrepancy principle: raise λ while train accuracy ≥ τ, else lower it")
    p.add_argument("--lam-step", type=float, default=0.01, help="dλ for the discrepancy principle (default 0.01)")
    p.add_argument("--lam-every", type=_positive_int, default=1, help="update λ every k epochs (default 1)")
    p.add_argument("--warmup", type=int, default=0, help="epochs at λ = 0 first (default 0)")
    p.add_argument("--clip", action="append", default=[], metavar="KEY=VALUE",
                   help="CLIP setting, repeatable: pairs, init, radius, ascent_steps, eta, reduce, cap, refresh_every, every")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n-train", type=_positive_int, default=None, help="train on the first n samples only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--require-target", action="store_true", help="select the best epoch only among those reaching τ")
    p.add_argument("--out", required=True, metavar="PATH.safetensors", help="checkpoint to write")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_data_dir(p)

    p = sub.add_parser("evaluate", help="evaluate checkpoints under an attack suite", formatter_class=fmt,
                       description="Evaluate saved checkpoints: clean, noise and attack accuracies per ε, the "
                       "per-sample worst case, certified accuracy, Lipschitz bounds and sanity flags. Writes "
                       "DIR/results.csv, DIR/results.json and DIR/lipschitz.json.",
                       epilog="examples:\n  robustclip evaluate runs/clip.safetensors --suite attacks/paper-mnist.toml --out runs/eval\n"
                              "  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --n 500 --out runs/cmp\n")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--suite", default="demo", help="suite TOML path, a name under ./attacks/, or 'demo' (built in)")
    p.add_argument("--n", type=_positive_int, default=None, help="test samples (default: the suite's n, else all)")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--seed", type=int, default=None, help="attack seed (default: the suite's)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--quiet", action="store_true")
    _add_data_dir(p)

    from . import cli_more

    cli_more.add_commands(sub, fmt)
    return ap


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("robustclip")
    except Exception:
        return "unknown"


def cmd_data(args: argparse.Namespace) -> int:
    from . import data

    names = data.IMAGE_DATASETS if args.dataset == "all" else (args.dataset,)
    ok = True
    for name in names:
        try:
            rep = data.verify(name, args.data_dir, download=bool(args.download))
        except RobustclipError as exc:
            print(f"{name:14s} MISSING  {exc}")
            ok = False
            continue
        counts = ", ".join(f"{k} {v['count']}" for k, v in rep["splits"].items())
        content = "content OK (SHA-256 matches the official files)" if all(rep["files"].values()) else \
            "content MISMATCH: " + ", ".join(f for f, good in rep["files"].items() if not good)
        print(f"{name:14s} found via {rep['origin']}: {rep['folder']}\n{'':14s} {counts}; {content}")
        ok &= rep["ok"]
    if not ok:
        raise RobustclipError("some data is missing or does not match the official files",
                              "pass --data-dir D holding mnist/ and fashion-mnist/, or use --download")
    return 0


def _parse_clip(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RobustclipError(f"--clip {item!r} is not KEY=VALUE", "e.g. --clip pairs=32")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from . import checkpoints, models
    from .training import TrainConfig, train

    out = Path(args.out)
    if not out.parent.is_dir():
        raise RobustclipError(f"output folder {out.parent} does not exist", f"create it first: mkdir -p {out.parent}")
    if out.is_dir():
        raise RobustclipError(f"--out {out} is a folder", "pass a file path ending in .safetensors")
    spec = None
    if args.model:
        if args.model.strip().startswith("{"):
            try:
                spec = json.loads(args.model)
            except ValueError:
                raise RobustclipError("--model is not valid JSON", 'e.g. --model \'{"arch": "fc", "sizes": [784, 100, 10]}\'') from None
        else:
            spec = models.default_spec(args.model, args.dataset)
    if args.output_sigmoid:
        spec = dict(spec or models.paper_spec())
        if spec.get("arch") != "fc":
            raise RobustclipError("--output-sigmoid applies to the fc net only", "drop it or use --model fc")
        spec["output_activation"] = "sigmoid"
    if args.reg == "none" and args.lam not in (None, 0.0):
        raise RobustclipError("--reg none takes no --lam", "drop --lam, or pick --reg weight or --reg clip")
    lam = args.lam if args.lam is not None else (0.1 if args.reg == "clip" else 1e-4 if args.reg == "weight" else 0.0)
    cfg = TrainConfig.for_dataset(
        args.dataset, model=spec, reg=args.reg, lam=lam, target_acc=args.target_acc, lam_step=args.lam_step,
        lam_every=args.lam_every, warmup=args.warmup, clip=_parse_clip(args.clip) or None, epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, n_train=args.n_train, seed=args.seed,
        device=args.device, require_target=args.require_target or None,
    )
    res = train(cfg, data_dir=args.data_dir, progress=not args.quiet)
    res.meta["command"] = " ".join(["robustclip", *sys.argv[1:]])
    checkpoints.save(res.model, out, res.meta)
    best = res.meta["metrics"]
    summary = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
    print(f"wrote {out}  (best epoch {res.meta['train']['best_epoch']}: {summary})")
    if res.interrupted:
        print("training was interrupted; the checkpoint holds the best weights so far", file=sys.stderr)
        return 130
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import _io
    from .attacks import load_suite
    from .evaluation import evaluate_checkpoint

    suite = load_suite(args.suite)
    for c in args.checkpoints:  # fail before any work on a bad path
        if not Path(c).is_file():
            raise RobustclipError(f"checkpoint {c} does not exist", "check the path")
    frames, lips, metas, flags = [], [], [], []
    for c in args.checkpoints:
        res, lip = evaluate_checkpoint(c, suite=suite, data_dir=args.data_dir, n=args.n, batch_size=args.batch_size,
                                       seed=args.seed, progress=not args.quiet)
        frames.append(res.frame)
        lips.append(lip)
        metas.append({**res.meta, "flags": res.flags, "seconds": res.seconds})
        flags += [f"{lip['model']}: {f}" for f in res.flags]
    frame = pd.concat(frames, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_text(out / "results.csv", frame.to_csv(index=False))
    _io.write_json(out / "results.json", {"suite": suite.name, "suite_file": suite.path, "suite_config": suite.raw,
                                          "versions": _io.versions(), "runs": metas,
                                          "results": frame.to_dict(orient="records")})
    _io.write_json(out / "lipschitz.json", lips)
    print(console_table(frame, lips))
    for f in flags:
        print(f"WARNING {f}", file=sys.stderr)
    print(f"wrote {out / 'results.csv'}, {out / 'results.json'}, {out / 'lipschitz.json'}")
    return 0


def console_table(frame, lips: list[dict[str, Any]] | None = None) -> str:
    """A compact pivot: one row per model, one column per attack@ε."""
    f = frame.copy()
    f["col"] = [a if nm == "none" else f"{a}@{nm}:{e:g}" for a, nm, e in zip(f.attack, f.norm, f.eps)]
    order = list(dict.fromkeys(f["col"]))
    piv = f.pivot_table(index="model", columns="col", values="accuracy", sort=False)[order]
    text = (piv * 100).round(1).to_string()
    if lips:
        text += "\n\nLipschitz (L2)   lower    upper    upper/lower"
        for lp in lips:
            text += f"\n{lp['model'][:14]:14s} {lp['lower']:8.3g} {lp['upper']:8.3g} {lp['ratio']:10.3g}"
    return text


COMMANDS = {"data": cmd_data, "train": cmd_train, "evaluate": cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from . import cli_more

    handler = COMMANDS.get(args.command) or cli_more.COMMANDS[args.command]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sanity flags are printed by the commands themselves
            return int(handler(args) or 0)
    except RobustclipError as exc:
        print(f"robustclip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustclip: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
