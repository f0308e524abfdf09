"""Pointing game of CEO region maps in the notebook-04 set-up, per map method and seed.

The ``shapes`` source (600 images, 32 px, 30% injected noise) has object boxes and captions
that name the objects. For each seed: dual-track experts (one run, 8 epochs), 40 synthetic
pairs distilled for 40 iterations with CEO on, maps saved every 10 iterations (exactly the
configuration of notebook 04 in full mode, with the seed and the map method varied). A hit
is a region-map peak inside the box of an object the image's top text names
(:func:`mdw_kit.viz.distilled_pointing_game`); reported for the maps of the starting images
(iteration 0) and of the final images, with chance (the boxes' area share) and the share of
images whose top text names one of their objects at all (the ceiling).

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


def run_one(method: str, seed: int, buffer, data, model_cfg) -> dict:
    from mdw_kit import viz
    from mdw_kit.distill import DistillConfig, Distiller

    images = data.train.images[data.train.pair_image]
    cfg = DistillConfig(num_pairs=40, iterations=40, syn_steps=5, expert_epochs=2, max_start_epoch=5,
                        batch_syn=20, ceo_beta=0.5, ceo_every=5, ceo_method=method, save_maps_every=10,
                        seed=seed, progress=False)
    t0 = time.perf_counter()
    syn = Distiller(cfg, buffer, model_cfg, images, data.train_text).run()
    first = viz.distilled_pointing_game(syn, data.train, data.train_text, maps=syn.map_history[0][1])
    last = viz.distilled_pointing_game(syn, data.train, data.train_text)
    return {"method": method, "seed": seed, "start": round(first["share"], 3),
            "start_named": round(first["share_named"], 3), "final": round(last["share"], 3),
            "final_named": round(last["share_named"], 3), "chance": round(last["chance"], 3),
            "top_text_names_an_object": round(last["named"], 3), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["saliency", "occlusion"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pointing_game.json")
    args = p.parse_args(argv)
    os.environ.setdefault("MDW_NO_PROGRESS", "1")

    import torch

    from mdw_kit.experts.buffer import build_buffer
    from mdw_kit.experts.dual_track import DualTrackConfig
    from mdw_kit.models import ModelConfig
    from mdw_kit.pipeline import prepare_data

    torch.set_num_threads(args.threads)
    data = prepare_data("shapes", noise=0.3, source_options={"num_images": 600, "image_size": 32})
    model_cfg = ModelConfig(tower="convnet3", text_dim=data.text_dim, image_size=data.image_size)
    images = data.train.images[data.train.pair_image]
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mdw-pointing-") as tmp:
        buffer = build_buffer(tmp, model_cfg, images, data.train_text,
                              DualTrackConfig(epochs=8, warmup_epochs=2, batch_size=64, progress=False),
                              num_runs=1, data_fingerprint=data.fingerprint(),
                              text_encoder_name=data.encoder_name, clean=data.train.clean)
        for method in args.methods:
            for seed in args.seeds:
                rows.append(run_one(method, seed, buffer, data, model_cfg))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for method in args.methods:
        rs = [r for r in rows if r["method"] == method]
        summary[method] = {k: [round(statistics.mean(r[k] for r in rs), 3),
                               round(statistics.stdev(r[k] for r in rs), 3) if len(rs) > 1 else 0.0]
                           for k in ("start", "start_named", "final", "final_named", "chance",
                                     "top_text_names_an_object")}
        print(f"{method:10s} " + "  ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" for k, v in summary[method].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_pointing_game.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "setup": "shapes 600 images, 32 px, 30% noise; dual-track experts 1 run x 8 epochs; 40 pairs, "
                 "40 iterations, syn_steps 5, batch_syn 20, ceo_beta 0.5, ceo_every 5",
        "torch_threads": args.threads, "wall_time_s": round(time.perf_counter() - t0, 1),
        "summary_mean_sd": summary, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
