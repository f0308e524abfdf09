"""How good are the experts along their trajectories? Validation R-sum of every saved expert state.

Trajectory matching can teach a student only what the expert states it matches know: a distilled
set is trained to move the student from expert epoch ``t`` to epoch ``t + segment_epochs``, with
``t < max_start_epoch``. This script evaluates every state of every trajectory of the grid's
dual-track and naive buffers (and records the share of pairs the dual-track consensus calls noisy) (the ones ``bench_distill.py`` builds, same work folder) on the
validation split, so the distilled sets' scores can be read against the epochs they match.

Usage::

    python benchmarks/bench_expert_curve.py --noise 0.5 0
    python benchmarks/bench_expert_curve.py --noise 0 --expert-option chance_gate=null --out .../expert_curve_no_gate.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def curves(buffer, data) -> list[list[float]]:
    """Validation R-sum of every state of every trajectory of ``buffer``."""
    import torch
    from mdw_kit.evaluation.metrics import evaluate_val
    from mdw_kit.experts.buffer import _model_fn
    from mdw_kit.models.retrieval import set_flat
    build = _model_fn(buffer.model_config)
    out = []
    for i in range(buffer.num_trajectories):
        traj, row = buffer.trajectory(i), []
        for state in traj:
            model = build(0)
            set_flat(model, state.float())
            with torch.no_grad():
                row.append(round(evaluate_val(model.eval(), data.val_split())["R-sum"], 2))
        out.append(row)
    return out


def mixture_at_chance(data, settings) -> dict:
    """One dual-track run of the grid's experts: per track, the last epoch's mixture components'
    mean raw losses against the chance loss ``log N`` (what ``DualTrackConfig.chance_gate`` reads)."""
    from mdw_kit import experiments as X
    from mdw_kit import stages
    _, res = stages.noise_report(data, X.expert_config(settings, "dual_track"), with_result=True, validate=False)
    out = {}
    for track, fits in res.gmm.items():
        g = fits[max(fits)]
        chance = g.get("chance_loss")
        out[track] = {"epoch": max(fits), "raw_means": [round(v, 3) for v in g["raw_means"]],
                      "chance_loss": chance, "noise_free": g["noise_free"],
                      "high_mean_over_chance": round(g["raw_means"][1] / chance, 3) if chance else None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--noise", type=float, nargs="+", default=[0.5, 0.0])
    p.add_argument("--work-dir", type=Path, default=None, help="bench_distill.py's work folder")
    p.add_argument("--expert-option", action="append", default=[], metavar="KEY=VALUE",
                   help="DualTrackConfig field of the dual-track experts over the preset's (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "expert_curve.json")
    args = p.parse_args(argv)

    import torch
    from mdw_kit import experiments as X
    from mdw_kit.runs import write_json
    from mdw_kit.utils import cache_dir

    torch.set_num_threads(args.threads)
    root = args.work_dir or cache_dir("bench_distill")
    from mdw_kit.cli import parse_options
    options = parse_options(args.expert_option, "--expert-option") if args.expert_option else {}
    settings = X.grid_settings(args.preset, noise=args.noise, experts={"options": options} if options else None)
    t0 = time.perf_counter()
    rows = []
    for noise in args.noise:
        data = X.load_data(settings, noise)
        mix = mixture_at_chance(data, settings)
        print(f"noise {noise:g} high-loss component / chance loss at the last epoch: "
              f"{[m['high_mean_over_chance'] for m in mix.values()]}", flush=True)
        for kind, buf in X.ensure_buffers(root, settings, noise, data=data).items():
            c = curves(buf, data)
            mean = [round(statistics.mean(col), 2) for col in zip(*c)]
            called = buf.consensus.summary()["estimated_noise_rate"] if kind == "dual_track" else None
            rows.append({"noise": noise, "experts": kind, "val_rsum_by_epoch": c, "mean_by_epoch": mean,
                         "share_called_noisy": called, "mixture_at_chance": mix if called is not None else None})
            print(f"noise {noise:g} {kind:10s} mean val R-sum by epoch: {mean}"
                  + (f"; consensus calls {called:.1%} of the pairs noisy" if called is not None else ""), flush=True)
    d = settings["distill"]
    write_json(args.out, {
        "command": shlex.join(["python", "benchmarks/bench_expert_curve.py", *(argv or sys.argv[1:])]),
        "settings": {k: settings[k] for k in ("source", "source_options", "model", "experts", "encoder")},
        "matched_epochs": {"max_start_epoch": d.get("max_start_epoch"), "segment_epochs": d.get("segment_epochs"),
                           "latest_target_epoch": (d.get("max_start_epoch", 5) - 1) + d.get("segment_epochs", 2)},
        "rows": rows, "wall_time_s": round(time.perf_counter() - t0, 1)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
