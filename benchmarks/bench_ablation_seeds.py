"""Do MDW's mechanisms help? MDW against its ablations over several distillation seeds.

One headline cell is one distillation evaluated with several seeds, so its sd says how much
evaluation varies, not how much distillation does. This script distils MDW and each ablation
once per distillation seed (``DistillConfig.seed``), in the headline grid's cells (same work
folder, same cache: seed 0 is the headline's own cell), and compares them paired by seed:
for each ablation, the per-seed difference ``MDW - ablation`` of the mean test R-sum, its mean,
its standard error over the distillation seeds and ``z = mean / SE``. The issue's target is that
each ablation loses at least 2 standard errors (``z >= 2``).

A ``--variant NAME=JSON`` is a method with DistillConfig fields of its own, compared like the
methods: ``{"method": "mdw", "distill": {"ceo_beta": 0.2}}`` is MDW with a weaker CEO (a CEO
strength sweep). The first of ``--methods`` (then the variants) is the reference the others are
compared against.

Writes ``{"command", "distill_seeds", "distill_settings", "variants", "rows": [{"method",
"distill_seed", "rsum_mean", "seeds", "val_rsum_mean"}], "summary": {name: {...}},
"comparisons": [{"ablation", "diffs", "mean_diff", "se", "z", "met"}]}`` (``method`` is the
variant's name; ``variants`` says what each name ran).

Usage::

    python benchmarks/bench_ablation_seeds.py --threads 1 --work-dir W --distill-seeds 0 1 2 \\
        --out benchmarks/results/ablation_seeds_noise50_M100.json
    python benchmarks/bench_ablation_seeds.py --methods mdw mdw_no_ceo --distill-option lr_img=0.001 ...
    python benchmarks/bench_ablation_seeds.py --methods mdw_no_ceo mdw \\
        --variant 'beta0.2={"method": "mdw", "distill": {"ceo_beta": 0.2}}' ...
"""
from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdw_kit import experiments as X  # noqa: E402

ABLATIONS = ["mdw_no_dual", "mdw_no_ceo", "mdw_no_corr"]
TARGET_Z = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default", help="settings preset (default: default)")
    p.add_argument("--noise", type=float, default=0.5, help="noise rate (default 0.5)")
    p.add_argument("--budget", type=int, default=100, help="pairs (default 100)")
    p.add_argument("--methods", nargs="+", default=["mdw", "mdw_no_ceo", "mdw_no_corr"],
                   choices=["mdw", *ABLATIONS], help="the reference (first) and the ablations")
    p.add_argument("--distill-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--distill-option", action="append", default=[], metavar="KEY=VALUE",
                   help="DistillConfig field over the preset's, for every method (repeatable)")
    p.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="NAME=JSON",
                   help='a method with DistillConfig fields of its own, compared after --methods, e.g. '
                        '\'beta0.2={"method": "mdw", "distill": {"ceo_beta": 0.2}}\' (repeatable)')
    p.add_argument("--expert-runs", type=int, help="dual-track (and naive) runs per buffer (default: the preset's)")
    p.add_argument("--expert-epochs", type=int, help="epochs per expert run (default: the preset's)")
    p.add_argument("--work-dir", type=Path, help="buffers and cells (default: cache_dir('bench_distill'))")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--collect-only", action="store_true", help="only read the cells already done")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablation_seeds.json")
    return p.parse_args(argv)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` -> ``(NAME, {"method": ..., "distill": {...}})``; a clear error otherwise.

    >>> parse_variant('b={"method": "mdw", "distill": {"ceo_beta": 0.2}}')
    ('b', {'method': 'mdw', 'distill': {'ceo_beta': 0.2}})
    """
    from mdw_kit.cli.common import named_json
    from mdw_kit.distill.methods import METHODS
    name, spec = named_json(text)
    if not isinstance(spec, dict) or set(spec) - {"method", "distill"} or not isinstance(spec.get("distill", {}), dict):
        raise argparse.ArgumentTypeError(f"--variant {name}: wants an object with 'method' and 'distill' "
                                         f"(DistillConfig fields), got {text.partition('=')[2]}")
    method = spec.get("method", "mdw")
    if method not in METHODS or METHODS[method].kind != "distill":
        raise argparse.ArgumentTypeError(f"--variant {name}: 'method' must be a distillation method, got {method!r}")
    if "seed" in spec.get("distill", {}):
        raise argparse.ArgumentTypeError(f"--variant {name}: the seed is set by --distill-seeds")
    return name, {"method": method, "distill": dict(spec.get("distill", {}))}


def paired_comparison(ref: Mapping[int, float], other: Mapping[int, float]) -> dict[str, Any]:
    """``ref - other`` paired by distillation seed: the differences, their mean, standard error and z.

    >>> c = paired_comparison({0: 10.0, 1: 12.0, 2: 14.0}, {0: 8.0, 1: 9.0, 2: 10.0})
    >>> c["diffs"], c["mean_diff"], round(c["se"], 3), round(c["z"], 2)
    ([2.0, 3.0, 4.0], 3.0, 0.577, 5.2)
    """
    seeds = sorted(set(ref) & set(other))
    diffs = [ref[s] - other[s] for s in seeds]
    out: dict[str, Any] = {"distill_seeds": seeds, "diffs": diffs,
                           "mean_diff": statistics.fmean(diffs) if diffs else None, "se": None, "z": None}
    if len(diffs) >= 2:
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        out["se"] = se
        out["z"] = out["mean_diff"] / se if se > 0 else (math.inf if out["mean_diff"] > 0 else None)
    return out


def summarise(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> tuple[dict, list[dict]]:
    """Per method (or variant name): mean and sd of the per-seed cell means (and over every
    evaluation); per ablation: :func:`paired_comparison` against the first, with ``met`` = ``z >= 2``."""
    per = {m: {r["distill_seed"]: r["rsum_mean"] for r in rows if r["method"] == m} for m in methods}
    summary = {}
    for m in methods:
        means = list(per[m].values())
        evals = [v for r in rows if r["method"] == m for v in r["seeds"] if v is not None]
        summary[m] = {"distill_seeds": sorted(per[m]),
                      "rsum_mean": statistics.fmean(means) if means else None,
                      "rsum_sd_over_distill_seeds": statistics.stdev(means) if len(means) >= 2 else None,
                      "rsum_sd_over_all_evaluations": statistics.stdev(evals) if len(evals) >= 2 else None}
    comps = []
    for m in methods[1:]:
        c = paired_comparison(per[methods[0]], per[m])
        c.update(reference=methods[0], ablation=m,
                 met=None if c["z"] is None else bool(c["mean_diff"] > 0 and c["z"] >= TARGET_Z))
        comps.append(c)
    return summary, comps


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from mdw_kit.cli import parse_options
    from mdw_kit.distill.methods import get_method
    from mdw_kit.runs import write_json
    from mdw_kit.utils import cache_dir
    opts = parse_options(args.distill_option, "--distill-option") if args.distill_option else {}
    if "seed" in opts:
        raise SystemExit("error: --distill-option seed=... is set by --distill-seeds")
    variants = {m: {"method": m, "distill": {}} for m in args.methods}
    for name, v in args.variant:
        if name in variants:
            raise SystemExit(f"error: --variant {name}: that name is taken (by --methods or another variant)")
        variants[name] = v
    names = list(variants)
    root = args.work_dir or cache_dir("bench_distill")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    experts = {k: v for k, v in (("epochs", args.expert_epochs), ("num_runs", args.expert_runs)) if v}
    settings_by_seed, plan = {}, []
    for s in args.distill_seeds:  # every cell's settings first, so a bad override fails before any runs
        # seed 0 is DistillConfig's default: leaving it out keeps the headline grid's cell key
        over = dict(opts, **({"seed": s} if s else {}))
        for name, v in variants.items():
            try:
                settings = X.grid_settings(args.preset, noise=[args.noise], budgets=[args.budget],
                                           methods=[v["method"]], distill={**over, **v["distill"]},
                                           experts=experts)
                get_method(v["method"]).distill_config(args.budget, settings["distill"])
            except ValueError as e:
                raise SystemExit(f"error: {name}: {e}") from None
            plan.append((s, name, settings))
        base = X.grid_settings(args.preset, noise=[args.noise], budgets=[args.budget],
                               methods=["mdw"], distill=over, experts=experts)
        settings_by_seed[s] = base["distill"]
    for s, name, settings in plan:
        print(f"distillation seed {s}: {name}", flush=True)
        for r in X.run_grid(root, settings, threads=args.threads, run_missing=not args.collect_only):
            row = X.headline_rows([r])[0]
            rows.append({"method": name, "distill_seed": s, "rsum_mean": row["rsum_mean"],
                         "rsum_sd": row["rsum_sd"], "seeds": row["seeds"],
                         "val_rsum_mean": row["val_rsum_mean"], "time_s": row["time_s"]})
    summary, comps = summarise(rows, names)
    write_json(args.out, {"command": shlex.join(["python", "benchmarks/bench_ablation_seeds.py", *argv]),
                          "noise": args.noise, "budget": args.budget, "distill_seeds": args.distill_seeds,
                          "distill_settings": settings_by_seed, "variants": variants,
                          "experts": base["experts"], "rows": rows,
                          "summary": summary,
                          "comparisons": comps, "target": f"each ablation loses >= {TARGET_Z:g} SE (z)",
                          "wall_time_s": time.perf_counter() - t0})
    for m, v in summary.items():
        mean = "-" if v["rsum_mean"] is None else f"{v['rsum_mean']:.1f}"
        print(f"{m:12s} {mean:>6s} over distillation seeds {v['distill_seeds']}")
    for c in comps:
        z = "-" if c["z"] is None else f"{c['z']:.2f}"
        diff = "-" if c["mean_diff"] is None else f"{c['mean_diff']:+.1f}"
        print(f"{c['reference']} - {c['ablation']}: {diff} (z {z}; target z >= {TARGET_Z:g}: "
              f"{'met' if c['met'] else 'missed' if c['met'] is False else 'not measured'})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
