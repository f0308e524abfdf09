"""Pointing game of CEO region maps in the from-scratch set-up (ConvNet-3 at 32 px), per map method and seed.

The default regime's figures (EfficientNet-Lite0 at 64 px, the set-up of notebook 04) come from
``bench_mechanisms.py``.

The ``shapes`` source (1000 images, 32 px, 30% injected noise) has object boxes and captions
that name the objects. For each seed: dual-track experts (one run, 12 epochs), 40 synthetic
pairs distilled with MDW (starting among the predicted-clean pairs) for 40 iterations, maps saved
every 10 iterations (the configuration notebook 04 used before it moved to the default regime, with the seed and
the map method varied; ``pointing_game.json`` was made when this set-up started from uniformly drawn pairs). A hit
is a region-map peak inside the box of an object the image's top text names
(:func:`mdw_kit.evaluation.pointing.distilled_pointing_game`); reported for the maps of the starting images
(iteration 0) and of the final images, with chance (the boxes' area share) and the share of
images whose top text names one of their objects at all (the ceiling), and the share of starting
pairs that are truly clean.

    python benchmarks/bench_pointing_game.py                                  # saliency and occlusion, 3 seeds
    python benchmarks/bench_pointing_game.py --methods occlusion --seeds 0
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(method: str, seed: int, lr_img: float, buffer, data, model_cfg, eval_seeds,
            start_scores: dict) -> dict:
    """One distillation and its pointing game; ``start_scores`` caches the starting pairs' test
    R-sum by their indices (the same for every ``lr_img`` of a seed)."""
    import mdw_kit as mk
    from mdw_kit.evaluation.pointing import distilled_pointing_game
    from mdw_kit.evaluation.protocol import evaluate_distilled

    images = data.train.images[data.train.pair_image]
    cfg = dict(iterations=40, syn_steps=5, segment_epochs=2, max_start_epoch=5, batch_syn=20, ceo_every=5,
               ceo_method=method, save_maps_every=10, lr_img=lr_img, seed=seed, progress=False)
    t0 = time.perf_counter()
    syn = mk.distill(data, buffer, method="mdw", budget=40, config=cfg, preset={})
    seconds = time.perf_counter() - t0
    games = [distilled_pointing_game(syn, data.train, data.train_text, maps=m) for _, m in syn.map_history]
    first, last = games[0], games[-1]
    init = syn.init_indices.cpu()
    start_pixels, start_text = syn.starting_pairs(images, data.train_text)
    row = {"method": method, "seed": seed, "lr_img": lr_img, "start": round(first["share"], 3),
           "start_named": round(first["share_named"], 3), "final": round(last["share"], 3),
           "final_named": round(last["share_named"], 3), "chance": round(last["chance"], 3),
           "top_text_names_an_object": round(last["named"], 3),
           "by_saved_iteration": {str(it): round(g["share"], 3) for (it, _), g in zip(syn.map_history, games)},
           "start_truly_clean": round(float(data.train.clean[init].float().mean()), 3),
           "mean_pixel_change": round(float((syn.images.detach().cpu() - start_pixels).abs().mean()), 4),
           "seconds": round(seconds, 1)}
    if eval_seeds:
        val, test = data.val_split(), data.test_split()
        row["test_rsum_distilled"] = round(evaluate_distilled(syn, model_cfg, val, test, seeds=eval_seeds)["mean"]["R-sum"], 1)
        key = tuple(init.tolist())
        if key not in start_scores:
            start_scores[key] = round(evaluate_distilled((start_pixels, start_text), model_cfg, val, test,
                                                         seeds=eval_seeds)["mean"]["R-sum"], 1)
        row["test_rsum_start"] = start_scores[key]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["saliency", "occlusion"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr-img", type=float, nargs="+", default=[0.01, 0.005, 0.0025],
                   help="pixel step sizes to compare (DistillConfig.lr_img; the set-up's 0.0025)")
    p.add_argument("--eval-seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="fresh models trained on each distilled set and on its starting pairs (none: skip)")
    p.add_argument("--num-images", type=int, default=1000, help="shapes images (default 1000)")
    p.add_argument("--expert-config", default='{"epochs": 12, "warmup_epochs": 4, "batch_size": 16}',
                   help="DualTrackConfig fields as JSON (default: the set-up's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pointing_game.json")
    args = p.parse_args(argv)
    os.environ.setdefault("MDW_NO_PROGRESS", "1")

    import torch

    import mdw_kit as mk
    from mdw_kit.experts.dual_track import DualTrackConfig

    torch.set_num_threads(args.threads)
    data = mk.prepare_data("shapes", noise=0.3, options={"num_images": args.num_images, "image_size": 32},
                           model="convnet3")
    try:
        expert_kw = json.loads(args.expert_config)
        expert_cfg = DualTrackConfig.from_dict({**expert_kw, "progress": False})
    except (ValueError, TypeError) as e:
        p.error(f"--expert-config: {e}")
    model_cfg = data.model_config
    rows, t0, start_scores = [], time.perf_counter(), {}
    with tempfile.TemporaryDirectory(prefix="mdw-pointing-") as tmp:
        buffer = mk.build_buffer(data, tmp, expert_cfg, runs=1, progress=False)
        buffer_auroc = buffer.consensus.summary()["auroc"]
        print(f"expert noise detection AUROC {buffer_auroc:.3f}", flush=True)
        for method in args.methods:
            for lr_img in args.lr_img:
                for seed in args.seeds:
                    rows.append(run_one(method, seed, lr_img, buffer, data, model_cfg, args.eval_seeds,
                                        start_scores))
                    print(json.dumps(rows[-1]), flush=True)
    keys = ("start", "start_named", "final", "final_named", "chance", "top_text_names_an_object",
            "start_truly_clean", "mean_pixel_change") + (("test_rsum_distilled", "test_rsum_start")
                                                        if args.eval_seeds else ())
    summary = {}
    for method in args.methods:
        for lr_img in args.lr_img:
            rs = [r for r in rows if r["method"] == method and r["lr_img"] == lr_img]
            name = f"{method} lr_img={lr_img:g}"
            summary[name] = {k: [round(statistics.mean(r[k] for r in rs), 3),
                                 round(statistics.stdev(r[k] for r in rs), 3) if len(rs) > 1 else 0.0]
                             for k in keys}
            print(f"{name:28s} " + "  ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" for k, v in summary[name].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_pointing_game.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "setup": f"shapes {args.num_images} images, 32 px, 30% noise; dual-track experts 1 run, {expert_kw}; "
                 "40 pairs, 40 iterations, syn_steps 5, batch_syn 20, ceo_beta 0.5, ceo_every 5",
        "expert_detection_auroc": round(float(buffer_auroc), 3),
        "torch_threads": args.threads, "wall_time_s": round(time.perf_counter() - t0, 1),
        "summary_mean_sd": summary, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
