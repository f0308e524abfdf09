"""Full-data training on openmoji: clean, 20% and 50% caption noise, several seeds.

Trains the retrieval model on all training pairs (noisy ones included), chooses the epoch on
val, reports test TR/IR@1/5/10 and R-sum (mean +- sd over seeds) with wall time, and writes
``benchmarks/results/full_data_<tower>.json`` with the command that made it.

    python benchmarks/bench_full_data.py                       # ConvNet-3, 32 px, MiniLM
    python benchmarks/bench_full_data.py --tower efficientnet_lite0 --image-size 96
    python benchmarks/bench_full_data.py --quick               # 1 seed, 3 epochs, clean + 50%
    python benchmarks/bench_full_data.py --grouping skin_tone  # looser split: gender variants may straddle
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdw_kit.evaluation.protocol import fit_and_evaluate  # noqa: E402
from mdw_kit.evaluation.metrics import format_table  # noqa: E402
from mdw_kit.models import ModelConfig  # noqa: E402
from mdw_kit.data.bundle import prepare_data  # noqa: E402
from mdw_kit.train import TrainConfig  # noqa: E402

METRICS = ["TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "R-sum"]


def run_cell(noise: float, args) -> dict:
    t0 = time.time()
    b = prepare_data("openmoji", noise=noise,
                     source_options={"image_size": args.image_size, "grouping": args.grouping})
    mcfg = ModelConfig(tower=args.tower, text_dim=b.text_dim, image_size=b.image_size,
                       train_layers=args.train_layers)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    res = fit_and_evaluate(lambda s: mcfg.build(), b.train.pair_pixels(), b.train_text, cfg,
                           b.val_split(), b.test_split(), seeds=args.seeds)
    epoch_times = [h["time"] for r in res["per_seed"] for h in r["history"]]
    return {"noise": noise, "train_noise_rate": b.info["train_noise_rate"],
            "train_pairs": len(b.train), "test_images": b.test.num_images,
            "mean": res["mean"], "sd": res["sd"], "best_epochs": res["best_epochs"],
            "per_seed_test_rsum": [r["test"]["R-sum"] for r in res["per_seed"]],
            "sec_per_epoch": round(sum(epoch_times) / max(len(epoch_times), 1), 2),
            "wall_time_s": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tower", default="convnet3")
    ap.add_argument("--train-layers", default="default")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grouping", default="strict", choices=["strict", "skin_tone"],
                    help="openmoji concept grouping of the split (skin_tone: gender variants may straddle)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, noise 0 and 0.5")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.noise = [0], 3, [0.0, 0.5]
    rows = [run_cell(n, args) for n in args.noise]
    table = [{"noise": r["noise"], **{m: (r["mean"][m], r["sd"][m]) for m in METRICS},
              "s/epoch": r["sec_per_epoch"], "wall s": r["wall_time_s"]} for r in rows]
    print(format_table(table))
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               f"full_data_{args.tower}_{args.image_size}px"
               f"{'' if args.grouping == 'strict' else '_' + args.grouping}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "machine": {
        "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
        "cuda": torch.cuda.is_available()}, "model": vars(args), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
