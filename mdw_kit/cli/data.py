"""``mdw data`` (build and inspect a source) and ``mdw train`` (train on all training pairs)."""
from __future__ import annotations

import argparse
import time

from .common import (Run, add_data_args, add_model_args, bundle, check_model_flags, check_seeds, data_provenance,
                     save_data_record)


def cmd_data(args: argparse.Namespace) -> int:
    """Build (or load from cache) a source, inject noise, print its summary; with ``--out`` record it."""
    run = Run(args, "data") if args.out else None
    b = bundle(args, features=False)
    for k, v in b.info.items():
        print(f"{k:>24}: {v}")
    if run is not None:
        r = run.open(data_provenance(b))
        save_data_record(r, b)
        r.write_json("metrics.json", b.info)
        if args.gallery:
            from mdw_kit.viz import plot_pairs
            n = min(24, len(b.train))
            fig = plot_pairs(b.train.pair_pixels(list(range(n))), b.train.captions[:n])
            fig.savefig(r.figure_path("train_pairs.png"), dpi=100, bbox_inches="tight")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train on all (noisy) training pairs, choose the epoch on val, report test retrieval over seeds."""
    from mdw_kit.evaluation.protocol import fit_and_evaluate
    from mdw_kit.evaluation.metrics import format_table
    from mdw_kit.train import TrainConfig
    check_model_flags(args)
    seeds = check_seeds(args.seeds)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    run = Run(args, "train")
    b = bundle(args)
    r = run.open(data_provenance(b))
    save_data_record(r, b)
    mcfg = b.model_config
    keep = b.train.clean.nonzero().flatten() if args.clean_only else None
    images, text = b.train.pair_inputs(keep), b.train_text if keep is None else b.train_text[keep]
    t0 = time.time()
    res = fit_and_evaluate(lambda s: mcfg.build(), images, text, cfg, b.val_split(), b.test_split(),
                           seeds=seeds, callback=lambda e, m, st: r.log(
                               f"seed {st.get('seed')} epoch {e} loss {st['loss']:.4f} val R-sum "
                               f"{(st.get('val') or {}).get('R-sum', float('nan')):.1f}"))
    for row in res["per_seed"]:
        row.pop("history", None)
    r.write_json("metrics.json", {"model": mcfg.to_dict(), "train": cfg.to_dict(),
                                  "wall_time_s": round(time.time() - t0, 1), **res})
    print(format_table([{"seed": x["seed"], "epoch": x["best_epoch"], **x["test"]} for x in res["per_seed"]]))
    print(f"test R-sum {res['mean']['R-sum']:.1f} +- {res['sd']['R-sum']:.1f} over seeds {list(seeds)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` and ``train`` to the ``mdw`` parser."""
    p = sub.add_parser("data", help="build / inspect a data source with injected noise")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--out", default=None, help="run folder (optional: also write data.json, noise.json)")
    p.add_argument("--gallery", action="store_true", help="with --out, save a figure of training pairs")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train + evaluate on full (noisy) training data")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clean-only", action="store_true", help="oracle: train only on truly clean pairs")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_train)
