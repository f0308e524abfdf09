"""The ``mdw`` command: build data, train on full data, detect noise, record experts, distil, evaluate.

Every subcommand that runs something writes one run folder (``--out``) holding
``config.json``, ``metrics.json``, ``log.txt`` and its artifacts; run ``mdw SUBCOMMAND -h``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .runs import RunDir


# ------------------------------------------------------------------ helpers
def parse_options(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``["num_images=100", "image_size=32"]`` -> dict with JSON-decoded values where possible."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"error: {flag} expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--source", default="openmoji", help="data source name (openmoji, shapes, karpathy, hf)")
    g.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="source option, repeatable (e.g. image_size=32, split_json=PATH)")
    g.add_argument("--noise", type=float, default=0.0, help="share of training captions to permute (0..1)")
    g.add_argument("--noise-seed", type=int, default=0)
    g.add_argument("--encoder", default="minilm", help="frozen text encoder (minilm, openclip:ARCH, hash)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--tower", default="convnet3", help="image tower (convnet3, efficientnet_lite0, openclip:ARCH)")
    g.add_argument("--train-layers", default="default", help="which tower layers train (default, last_block, all)")
    g.add_argument("--weights", default=None, help="local weight file for an open_clip tower")
    g.add_argument("--embed-dim", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.07)


def _bundle(args):
    from .pipeline import prepare_data
    return prepare_data(args.source, args.noise, args.noise_seed, parse_options(args.option), args.encoder)


def _model_cfg(args, bundle):
    from .models import ModelConfig
    return ModelConfig(tower=args.tower, text_dim=bundle.text_dim, image_size=bundle.image_size,
                       embed_dim=args.embed_dim, temperature=args.temperature,
                       train_layers=args.train_layers, weights=args.weights)


def _start_run(args, name: str) -> RunDir:
    out = args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunDir(out)
    cfg = {k: v for k, v in vars(args).items() if k != "func"}
    run.write_json("config.json", {"command": name, "argv": sys.argv[1:], **cfg})
    run.log(f"mdw {name} {' '.join(sys.argv[2:])}")
    print(f"run folder: {run.path}")
    return run


# -------------------------------------------------------------- subcommands
def cmd_data(args) -> int:
    """Build (or load from cache) a source, inject noise, print its summary."""
    from .pipeline import save_data_record
    bundle = _bundle(args)
    for k, v in bundle.info.items():
        print(f"{k:>16}: {v}")
    if args.out:
        run = _start_run(args, "data")
        save_data_record(run, bundle)
        if args.gallery:
            from .viz import plot_pairs
            n = min(24, len(bundle.train))
            fig = plot_pairs(bundle.train.pair_pixels(list(range(n))), bundle.train.captions[:n])
            fig.savefig(run.figure_path("train_pairs.png"), dpi=100, bbox_inches="tight")
    return 0


def cmd_train(args) -> int:
    """Train on all (noisy) training pairs, choose the epoch on val, report test retrieval over seeds."""
    from .evaluate import fit_and_evaluate, format_table
    from .pipeline import save_data_record
    from .train import TrainConfig
    run = _start_run(args, "train")
    bundle = _bundle(args)
    save_data_record(run, bundle)
    mcfg = _model_cfg(args, bundle)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    keep = bundle.train.clean.numpy() if args.clean_only else None
    images = bundle.train.pair_pixels() if keep is None else bundle.train.pair_pixels(keep.nonzero()[0])
    text = bundle.train_text if keep is None else bundle.train_text[keep]
    t0 = time.time()
    res = fit_and_evaluate(lambda s: mcfg.build(), images, text, cfg, bundle.val_split(),
                           bundle.test_split(), seeds=args.seeds,
                           callback=lambda e, m, st: run.log(f"seed {st.get('seed')} epoch {e} "
                                                             f"loss {st['loss']:.4f} val R-sum "
                                                             f"{(st.get('val') or {}).get('R-sum', float('nan')):.1f}"))
    for r in res["per_seed"]:
        r.pop("history", None)
    run.write_json("metrics.json", {"model": mcfg.to_dict(), "train": cfg.to_dict(), "wall_time_s":
                                    round(time.time() - t0, 1), **res})
    print(format_table([{"seed": r["seed"], "epoch": r["best_epoch"], **r["test"]} for r in res["per_seed"]]))
    print(f"test R-sum {res['mean']['R-sum']:.1f} +- {res['sd']['R-sum']:.1f} over seeds {list(args.seeds)}")
    return 0


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mdw", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build / inspect a data source with injected noise")
    _add_data_args(p)
    p.add_argument("--out", default=None, help="run folder (optional: also write data.json, noise.json)")
    p.add_argument("--gallery", action="store_true", help="with --out, save a figure of training pairs")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train + evaluate on full (noisy) training data")
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clean-only", action="store_true", help="oracle: train only on truly clean pairs")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_train)

    _register_later_stages(sub)
    return ap


def _register_later_stages(sub) -> None:
    """Subcommands of the later stages (noise report, expert buffer, distillation, pipeline)."""
    from . import cli_stages
    cli_stages.register(sub, _add_data_args, _add_model_args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
