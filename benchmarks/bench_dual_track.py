"""Dual-track collaborative learning on openmoji: noise detection and expert quality.

For each injected noise rate and seed: dual-track experts, naive experts (plain training
on all pairs, the experts of the MTT-VL / LoRS baselines) and a clean-only oracle (trained
on the truly clean pairs; uses ground truth). Reports

- noise detection (AUROC / precision / recall / F1 of each track and of the consensus) at
  the end of warm-up and at the end of training, next to the naive run's own detection;
- test R-sum of each model at the epoch chosen on the validation split (never test), and of
  the two dual-track tracks together (mean similarity, each at its best validation epoch);
- wall time and the size of one run's trajectories in the buffer.

Prints a table and writes ``benchmarks/results/dual_track.json`` with the command line.

    python benchmarks/bench_dual_track.py                      # 20% and 50% noise, 3 seeds
    python benchmarks/bench_dual_track.py --quick              # small openmoji subset, 1 seed, a few minutes
    python benchmarks/bench_dual_track.py --dual-config '{"mode": "weight"}'
    python benchmarks/bench_dual_track.py --merge a.json b.json --out ab.json   # join parallel runs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdw_kit import stages  # noqa: E402
from mdw_kit.evaluation.metrics import evaluate_ensemble, evaluate_val, format_table, summarize  # noqa: E402
from mdw_kit.evaluation.protocol import fit_and_evaluate  # noqa: E402
from mdw_kit.experts.dual_track import DualTrackConfig, DualTrackResult  # noqa: E402
from mdw_kit.models import ModelConfig, set_flat  # noqa: E402
from mdw_kit.data.bundle import DataBundle  # noqa: E402
from mdw_kit.runs import save_tensors, write_json  # noqa: E402
from mdw_kit.train import TrainConfig  # noqa: E402

DET_KEYS = ("auroc", "auroc_p_clean", "precision", "recall", "f1", "true_residual_noise")


def best_val_model(res: DualTrackResult, track: str, mcfg: ModelConfig) -> torch.nn.Module:
    """``track``'s model at its best validation epoch, restored from its trajectory."""
    model = mcfg.build()
    set_flat(model, res.trajectories[track][res.best_val_epoch(track)])
    return model.to(next(iter(res.states[track].values())).device)


def test_rsum_at_best_val(res: DualTrackResult, track: str, model: torch.nn.Module, data: DataBundle) -> dict:
    """Test metrics (evaluated once) of ``track``'s best-validation ``model``."""
    epoch = res.best_val_epoch(track)
    val = next(h["val"] for h in res.history[track] if h["epoch"] == epoch)
    return {"best_epoch": epoch, "val_rsum": val["R-sum"], "test": evaluate_val(model, data.test_split())}


def detection_at(res: DualTrackResult, which: str) -> dict[str, dict[str, float]]:
    """Detection metrics per track and consensus at the end of warm-up or of training."""
    epoch = res.warmup_epoch if which == "warmup" else res.final_epoch
    d = next(x for x in res.detection if x["epoch"] == epoch)
    return {k: {m: round(float(v[m]), 4) for m in DET_KEYS} for k, v in d.items() if k != "epoch"}


def buffer_bytes(res: DualTrackResult) -> int:
    """Bytes one run of this result takes in a float32 buffer (trajectory files as written)."""
    with tempfile.TemporaryDirectory() as tmp:
        total = 0
        for t, traj in res.trajectories.items():
            save_tensors(Path(tmp) / f"{t}.safetensors", {"trajectory": traj})
            total += (Path(tmp) / f"{t}.safetensors").stat().st_size
    return total


def run_dual(data: DataBundle, mcfg: ModelConfig, cfg: DualTrackConfig) -> dict[str, Any]:
    _, res = stages.noise_report(data, cfg, with_result=True)
    models = {t: best_val_model(res, t, mcfg) for t in cfg.tracks}
    per_track = {t: test_rsum_at_best_val(res, t, m, data) for t, m in models.items()}
    # both tracks together (mean similarity), each at its best validation epoch
    ens = evaluate_ensemble(list(models.values()), data.test_split()) if len(models) > 1 else None
    return {"detection_warmup": detection_at(res, "warmup"), "detection_final": detection_at(res, "final"),
            "detection_per_epoch": [{k: (v if k == "epoch" else round(float(v["auroc"]), 4))
                                     for k, v in d.items()} for d in res.detection],
            "per_track": per_track,
            "test_rsum": sum(v["test"]["R-sum"] for v in per_track.values()) / len(per_track),
            "test": summarize([v["test"] for v in per_track.values()])[0],
            "ensemble_test_rsum": None if ens is None else ens["R-sum"], "ensemble_test": ens,
            "wall_time_s": round(res.wall_time_s, 1), "buffer_bytes_per_run": buffer_bytes(res),
            "val_rsum_per_epoch": {t: [round(h["val"]["R-sum"], 1) for h in res.history[t] if h["val"]]
                                   for t in cfg.tracks}}


def run_oracle(data: DataBundle, mcfg: ModelConfig, cfg: DualTrackConfig, seed: int) -> dict[str, Any]:
    keep = data.train.clean
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                       momentum=cfg.momentum, weight_decay=cfg.weight_decay, device=cfg.device)
    t0 = time.time()
    r = fit_and_evaluate(lambda s: mcfg.build(), data.train.pair_inputs()[keep], data.train_text[keep], tcfg,
                         data.val_split(), data.test_split(), seeds=(seed,))
    return {"test_rsum": r["mean"]["R-sum"], "test": r["mean"], "best_epoch": r["best_epochs"][0],
            "train_pairs": int(keep.sum()), "wall_time_s": round(time.time() - t0, 1)}


def run_cell(noise: float, seed: int, args, over: dict) -> dict[str, Any]:
    data = stages.prepare_data("openmoji", noise, noise_seed=args.noise_seed, options=args.source_options,
                               model={"tower": args.tower, "train_layers": "default" if args.tower.startswith("convnet")
                                      else "none"}, preset={})  # a frozen backbone runs once per image (cached)
    mcfg = data.model_config
    base = dict(epochs=args.epochs, warmup_epochs=args.warmup, progress=not args.no_progress)
    dual = DualTrackConfig(**{**base, "seed_a": 2 * seed, "seed_b": 2 * seed + 1, **over})
    naive = DualTrackConfig(**{**base, **over, "seed_a": 2 * seed, "seed_b": 2 * seed + 1, "naive": True,
                               "num_tracks": 1})
    out = {"noise": noise, "seed": seed, "train_pairs": len(data.train),
           "train_noise_rate": data.info["train_noise_rate"], "dual_config": dual.to_dict()}
    out["dual_track"] = run_dual(data, mcfg, dual)
    out["naive"] = run_dual(data, mcfg, naive)
    out["oracle"] = run_oracle(data, mcfg, dual, 2 * seed)
    return out


def _mean_sd(vals: list[float]) -> tuple[float, float]:
    m, s = summarize([{"v": v} for v in vals])
    return m["v"], s["v"]


def summary_rows(cells: list[dict]) -> list[dict]:
    rows = []
    for noise in sorted({c["noise"] for c in cells}):
        cs = [c for c in cells if c["noise"] == noise]
        for when in ("warmup", "final"):
            row: dict[str, Any] = {"noise": f"{noise:.0%}", "when": when}
            for who in ("A", "B", "consensus"):
                row[f"AUROC {who}"] = _mean_sd([c["dual_track"][f"detection_{when}"][who]["auroc"] for c in cs])
            row["AUROC cons (p_clean)"] = _mean_sd(
                [c["dual_track"][f"detection_{when}"]["consensus"]["auroc_p_clean"] for c in cs])
            row["P cons"] = _mean_sd([c["dual_track"][f"detection_{when}"]["consensus"]["precision"] for c in cs])
            row["R cons"] = _mean_sd([c["dual_track"][f"detection_{when}"]["consensus"]["recall"] for c in cs])
            row["AUROC naive"] = _mean_sd([c["naive"][f"detection_{when}"]["A"]["auroc"] for c in cs])
            if when == "final":
                for who in ("dual_track", "naive", "oracle"):
                    row[f"R-sum {who}"] = _mean_sd([c[who]["test_rsum"] for c in cs])
                ens = [c["dual_track"].get("ensemble_test_rsum") for c in cs]
                if all(v is not None for v in ens):  # cells made before the ensemble column lack it
                    row["R-sum dual ensemble"] = _mean_sd(ens)
                row["wall dual s"] = _mean_sd([c["dual_track"]["wall_time_s"] for c in cs])
            rows.append(row)
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.2, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise-seed", type=int, default=0, help="seed of the injected noise (same for all seeds)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dual-config", default="{}", help="JSON of DualTrackConfig overrides")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tower", default="efficientnet_lite0",
                    help="image tower: efficientnet_lite0 (ImageNet, frozen, 64 px; default) or convnet3 (32 px)")
    ap.add_argument("--quick", action="store_true", help="800 openmoji images, 1 seed, 50%% noise, 5 epochs")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dual_track.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="train nothing: join the cells of these result files (same settings, different "
                         "seeds, e.g. from parallel runs) into one table written to --out")
    args = ap.parse_args(argv)
    args.source_options = {"image_size": 32 if args.tower.startswith("convnet") else 64}
    if args.quick:
        args.noise, args.seeds, args.epochs, args.warmup = [0.5], [0], 5, 1
        args.source_options["limit"] = 800
        if args.out == ap.get_default("out"):
            args.out = str(ROOT / "benchmarks" / "results" / "dual_track_quick.json")
    return args


SAME_SETTINGS = ("quick", "epochs", "warmup_epochs", "dual_config_overrides", "source_options", "model")


def merge_results(paths: list[str]) -> dict[str, Any]:
    """One result document from several runs of the same settings on different (noise, seed) cells.

    A file that is missing, is not a result of this script, differs in a setting, or repeats a
    cell of an earlier file is refused with an error naming it.
    """
    docs = []
    for p in paths:
        try:
            docs.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"--merge: cannot read {p}: {e}")
        if not isinstance(docs[-1], dict) or "cells" not in docs[-1] or "summary" not in docs[-1]:
            raise SystemExit(f"--merge: {p} is not a bench_dual_track.py result (no 'cells'/'summary')")
    first, cells, seen = docs[0], [], {}
    for p, d in zip(paths, docs):
        for k in SAME_SETTINGS:
            if d.get(k) != first.get(k):
                raise SystemExit(f"--merge: {p} has {k}={d.get(k)!r} but {paths[0]} has {first.get(k)!r}")
        for c in d["cells"]:
            key = (c["noise"], c["seed"])
            if key in seen:
                raise SystemExit(f"--merge: noise {key[0]}, seed {key[1]} is in both {seen[key]} and {p}")
            seen[key] = p
            cells.append(c)
    cells.sort(key=lambda c: (c["noise"], c["seed"]))
    return {**{k: first.get(k) for k in SAME_SETTINGS},
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "merged_from": [{"file": Path(p).name, "command": d.get("command"), "wall_time_s": d.get("wall_time_s"),
                             "torch_threads": d.get("torch_threads")} for p, d in zip(paths, docs)],
            "platform": first.get("platform"), "cpu_count": first.get("cpu_count"),
            "wall_time_s": round(sum(d.get("wall_time_s") or 0.0 for d in docs), 1),
            "summary": summary_rows(cells), "cells": cells}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.merge:
        doc = merge_results(args.merge)
        write_json(args.out, doc)
        print(format_table(doc["summary"], digits=3))
        print(f"wrote {args.out} ({len(doc['cells'])} cells from {len(args.merge)} files)")
        return
    torch.set_num_threads(args.threads)
    if args.no_progress:
        os.environ["MDW_NO_PROGRESS"] = "1"
    over = json.loads(args.dual_config)
    t0 = time.time()
    cells, doc = [], {}
    for noise in args.noise:
        for seed in args.seeds:
            print(f"== noise {noise:.0%}, seed {seed}", flush=True)
            cells.append(run_cell(noise, seed, args, over))
            c = cells[-1]
            print(f"   AUROC consensus warm-up {c['dual_track']['detection_warmup']['consensus']['auroc']:.3f} "
                  f"final {c['dual_track']['detection_final']['consensus']['auroc']:.3f}; test R-sum dual "
                  f"{c['dual_track']['test_rsum']:.1f} naive {c['naive']['test_rsum']:.1f} oracle "
                  f"{c['oracle']['test_rsum']:.1f}", flush=True)
            doc = {"command": " ".join([Path(sys.executable).name] + sys.argv), "quick": args.quick,
                   "epochs": args.epochs, "warmup_epochs": args.warmup, "dual_config_overrides": over,
                   "source_options": args.source_options, "model": f"{args.tower} {args.source_options['image_size']}px + MiniLM + linear head",
                   "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                   "cpu_count": os.cpu_count(), "wall_time_s": round(time.time() - t0, 1),
                   "summary": summary_rows(cells), "cells": cells}
            write_json(args.out, doc)  # after every cell, so a long run leaves partial results
    print(format_table(doc["summary"], digits=3))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
