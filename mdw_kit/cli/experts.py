"""``mdw noise-report`` (dual-track noise detection) and ``mdw buffer`` (record expert trajectories)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from .common import (Run, add_data_args, add_model_args, bundle, check_model_flags, config_overrides,
                     data_provenance, save_data_record)


def dual_cfg(args: argparse.Namespace) -> Any:
    """The DualTrackConfig of the preset, ``--expert-epochs`` and ``--naive``; keys in ``--dual-config`` win.

    Example:
        >>> ns = argparse.Namespace(expert_epochs=3, naive=False, dual_config='{"mode": "weight"}')
        >>> c = dual_cfg(ns); (c.epochs, c.mode, c.num_tracks)
        (3, 'weight', 2)
    """
    import mdw_kit as mk
    from mdw_kit.experts.dual_track import DualTrackConfig
    base = {} if args.expert_epochs is None else {"epochs": args.expert_epochs}
    over = config_overrides(getattr(args, "dual_config", None), "--dual-config", DualTrackConfig)
    return mk.dual_track_config({**base, **over}, preset=getattr(args, "preset", None), naive=args.naive)


def labelled(report: Any, data: Any) -> Any:
    """The report with each pair's image id and caption, so every ``noise_report.csv`` has those columns."""
    ids = [data.train.image_ids[int(i)] for i in data.train.pair_image]
    return dataclasses.replace(report, captions=list(data.train.captions), image_ids=ids)


def cmd_noise_report(args: argparse.Namespace) -> int:
    """Dual-track training on the noisy training pairs; writes noise_report.json + the per-pair tables."""
    import mdw_kit as mk
    from mdw_kit.experts.mismatch import mismatch_report
    cfg = dual_cfg(args)  # bad settings fail before any run folder is made
    check_model_flags(args)
    run = Run(args, "noise-report")
    b = bundle(args)
    r = run.open(data_provenance(b))
    save_data_record(r, b)
    rep, res = mk.noise_report(b, cfg, with_result=True, preset=args.preset)
    rep = labelled(rep, b)
    rep.save(r.path)
    # ranked pairs + best other caption: mismatch_report.csv
    mismatch_report(rep, res.states, b.model_config.build, b.train.pair_inputs(), b.train_text, out_dir=r.path)
    warm = res.report(epoch=res.warmup_epoch).summary()
    r.write_json("metrics.json", {"final": rep.summary(), "end_of_warmup": warm,
                                  "detection_per_epoch": res.detection, "wall_time_s": res.wall_time_s})
    for k, v in rep.summary().items():
        print(f"{k:>28}: {v}")
    return 0


def cmd_buffer(args: argparse.Namespace) -> int:
    """Record expert trajectories (dual-track by default, ``--naive`` for plain experts)."""
    import mdw_kit as mk
    cfg = dual_cfg(args)
    check_model_flags(args)
    run = Run(args, "buffer")
    b = bundle(args)
    r = run.open(data_provenance(b))
    save_data_record(r, b)
    buf = mk.build_buffer(b, r.path / "buffer", cfg, runs=args.runs, naive=args.naive, preset=args.preset)
    if buf is None:
        print("this rank finished its runs; rank 0 writes the index")
        return 0
    labelled(buf.consensus, b).save(r.path)
    summ = {"trajectories": buf.num_trajectories, "epochs": buf.num_epochs,
            "size_mib": round(buf.size_bytes / 2**20, 2), "noise_report": buf.consensus.summary()}
    r.write_json("metrics.json", summ)
    print(json.dumps(summ, indent=2, default=str))
    return 0


def _expert_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experts")
    g.add_argument("--expert-epochs", type=int, default=None, help="training epochs of each track (default: preset)")
    g.add_argument("--naive", action="store_true", help="plain training on all pairs (naive experts)")
    g.add_argument("--dual-config", default=None, help="JSON of DualTrackConfig overrides, e.g. "
                   "'{\"mode\": \"weight\", \"min_weight\": 0.01}' with --expert-epochs 30 for AUROC >= 0.95 "
                   "and experts >= naive + 40 at 50%% noise (0.05: sharper detection, weaker experts), "
                   "'{\"keep_fraction\": 0.45}' to keep a fixed share of the pairs instead of p > 0.5; "
                   "its keys win over --expert-epochs and --naive")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``noise-report`` and ``buffer`` to the ``mdw`` parser."""
    p = sub.add_parser("noise-report", help="dual-track noise detection: per-pair clean probabilities")
    add_data_args(p)
    add_model_args(p)
    _expert_args(p)
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_noise_report)

    p = sub.add_parser("buffer", help="record expert trajectories (resumable; shard with torchrun)")
    add_data_args(p)
    add_model_args(p)
    _expert_args(p)
    p.add_argument("--runs", type=int, default=None, help="runs, each one trajectory per track (default: preset)")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_buffer)
