"""Headline benchmark: every method at 0% / 50% noise and 100 / 200 / 500 pairs, in the default regime.

Default regime = the ``default`` preset (openmoji at 64 px, EfficientNet-Lite0 with ImageNet
weights frozen and its features cached, MiniLM text, dual-track experts 2 runs x 10 epochs).
The grid (cells, buffers, caching, resuming, stale cells) is :mod:`mdw_kit.experiments`; this
script chooses the cells, orders them (50% noise and 100 pairs first, so a stopped run has
the most important rows), measures the costs and writes the table.

Writes ``benchmarks/results/headline.json`` (``--out``) after every finished cell, so a long run
that is stopped keeps what it measured (``"complete": false`` until every cell is in):
``{"command", "regime", "rows": [{"noise", "budget", "method", "rsum_mean", "rsum_sd", "seeds",
"time_s", ...}], "costs": {...}, "targets": [...]}``, each target met / missed / ``null`` (a cell
it needs did not run).

Usage::

    python benchmarks/bench_distill.py --threads 1                          # the headline table (hours)
    python benchmarks/bench_distill.py --noise 0.5 --budgets 100 --methods mdw lors clean_random \\
        --distill-option lr_img=0.001 --out benchmarks/results/some_probe.json
    python benchmarks/bench_distill.py --preset scratch --tower convnet3     # the from-scratch regime
    python benchmarks/bench_distill.py --costs-only --out benchmarks/results/iteration_cost.json  # the probe alone
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdw_kit import experiments as X  # noqa: E402

ABLATIONS = ["mdw_no_dual", "mdw_no_ceo", "mdw_no_corr"]
START_VARIANTS = ["mdw_kcenter_init", "mdw_balanced_init"]
ALL_METHODS = X.HEADLINE_METHODS + START_VARIANTS


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable flag as a dict ({} when the flag is not used)."""
    if not pairs:
        return {}
    from mdw_kit.cli import parse_options
    return parse_options(pairs, flag)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help="settings preset (name or .json file; default: default)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.5, 0.0], help="noise rates (default 0.5 0)")
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 500], help="budgets (default 100 200 500)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=X.HEADLINE_METHODS,
                   help="methods (default: the headline set, ablations and references included)")
    p.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default: the preset's)")
    p.add_argument("--source", help="data source (default: the preset's)")
    p.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="source option, repeatable (e.g. image_size=96)")
    p.add_argument("--tower", help="image tower (default: the preset's)")
    p.add_argument("--train-layers", help="trainable part of a pretrained tower (none / last_block / all)")
    p.add_argument("--encoder", help="frozen text encoder (minilm; hash for a smoke run)")
    p.add_argument("--distill-option", action="append", default=[], metavar="KEY=VALUE",
                   help="DistillConfig field over the preset's, e.g. lr_img=0.001 (repeatable)")
    p.add_argument("--eval-option", action="append", default=[], metavar="KEY=VALUE",
                   help="EvalConfig field over the preset's, e.g. epochs=100 (repeatable)")
    p.add_argument("--expert-epochs", type=int, help="training epochs per expert track (default: the preset's)")
    p.add_argument("--expert-runs", type=int, help="dual-track (and naive) runs per buffer (default: the preset's)")
    p.add_argument("--expert-option", action="append", default=[], metavar="KEY=VALUE",
                   help="other DualTrackConfig field of the dual-track experts, e.g. mode=select (repeatable)")
    p.add_argument("--work-dir", type=Path, help="buffers and cells, reused across runs "
                   "(default: cache_dir('bench_distill'))")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "headline.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell process (default 1)")
    p.add_argument("--skip-costs", action="store_true", help="skip the iteration-cost probe")
    p.add_argument("--costs-only", action="store_true",
                   help="run only the iteration-cost probe and write {command, probe} to --out")
    p.add_argument("--collect-only", action="store_true",
                   help="write the table from the cells already done in the work folder, run nothing "
                        "(for a grid split over several processes)")
    p.add_argument("--markdown", action="store_true",
                   help="print the table of the --out file as markdown (runs nothing)")
    p.add_argument("--child", choices=["cost"], help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The grid's settings (:func:`mdw_kit.experiments.grid_settings`) from the command line."""
    model = {k: v for k, v in (("tower", args.tower), ("train_layers", args.train_layers)) if v}
    experts = {k: v for k, v in (("epochs", args.expert_epochs), ("num_runs", args.expert_runs)) if v}
    if args.expert_option:
        experts["options"] = _options(args.expert_option, "--expert-option")
    try:
        return X.grid_settings(args.preset, noise=args.noise, budgets=args.budgets, methods=args.methods,
                               seeds=args.seeds, source=args.source,
                               source_options=_options(args.source_option, "--source-option"), model=model,
                               encoder=args.encoder, experts=experts,
                               distill=_options(args.distill_option, "--distill-option"),
                               eval=_options(args.eval_option, "--eval-option"))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def priority_order(settings: dict[str, Any]) -> list[tuple[float, str, int | None]]:
    """50% noise before 0%; per noise rate the main methods budget by budget (coresets, MDW and its
    rivals, the references after the first budget), then the ablations budget by budget."""
    all_cells = X.cells(settings)
    rank_noise = {n: (0 if n == 0.5 else 1, i) for i, n in enumerate(settings["noise"])}
    rank_budget = {b: i for i, b in enumerate(settings["budgets"])}

    def key(c):
        noise, method, budget = c
        late = method in ABLATIONS or method in START_VARIANTS
        b = rank_budget.get(budget, 0.5)  # references (None) right after the first budget
        return (rank_noise[noise], late, b, settings["methods"].index(method))
    return sorted(all_cells, key=key)


# ------------------------------------------------------------------ cost probe (child process)
def probe_cell(settings: dict[str, Any]) -> tuple[int, float]:
    """The (budget, noise) the cost probe measures: the smallest budget, 50% noise where present."""
    return min(settings["budgets"]), 0.5 if 0.5 in settings["noise"] else settings["noise"][0]


def child_cost(root: Path, settings: dict[str, Any], out: Path, cycles: int = 2) -> None:
    """Seconds per distillation iteration (MDW, smallest budget, 50% noise) next to one forward +
    backward of the image tower over the M synthetic images, to the pixels.

    CEO refreshes its region maps every ``ceo_every`` iterations, so the probe times ``cycles``
    whole refresh periods after a first iteration (which also warms up and builds the first maps)
    and divides the sums: ``iteration_over_backbone`` is the amortised cost, maps included.
    ``iteration_over_backbone_without_maps`` is the median over the iterations that reuse the maps.
    """
    import torch

    from mdw_kit import stages
    budget, noise = probe_cell(settings)
    data = X.load_data(settings, noise)
    buf = X.ensure_buffers(root, settings, noise, data)["dual_track"]
    over = dict(settings["distill"], progress=False, checkpoint_every=0, save_maps_every=0, lr_init=0.01)
    dist = stages.distiller(data, buf, method="mdw", budget=budget, config=over, preset={})
    dist.initialise()
    every = dist.cfg.ceo_every if dist.cfg.ceo_beta > 0 else 1
    iters_s, backbone_s, refresh = [], [], []
    for it in range(1, 2 + cycles * every):
        maps_before = dist.ceo_maps
        t0 = time.perf_counter()
        dist.step(it)
        iters_s.append(time.perf_counter() - t0)
        refresh.append(dist.ceo_maps is not maps_before)  # the step built new CEO maps
        x = dist.syn.images.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        dist.model.tower(x).sum().backward()
        backbone_s.append(time.perf_counter() - t0)
    plain = sorted(a / b for a, b, r in zip(iters_s[1:], backbone_s[1:], refresh[1:]) if not r)
    out.write_text(json.dumps({"iteration_s": iters_s, "backbone_fwd_bwd_s": backbone_s, "map_refresh": refresh,
                               "iteration_over_backbone": sum(iters_s[1:]) / sum(backbone_s[1:]),
                               "iteration_over_backbone_without_maps": plain[len(plain) // 2] if plain else None,
                               "ceo_every": every, "budget": budget,
                               "syn_steps": dist.cfg.syn_steps, "batch_syn": dist.cfg.batch_syn,
                               "threads": torch.get_num_threads()}))


def run_cost_probe(root: Path, settings: dict[str, Any], threads: int, run: bool = True) -> dict[str, Any] | None:
    """The probe's figures (run now unless ``run`` is false or it ran before with these settings).

    Keyed by what decides the probe (not the grid's other budgets, noise rates or methods), so
    grids that share a work folder share it."""
    key = {k: v for k, v in settings.items() if k not in ("methods", "budgets", "noise")}
    key["budget"], key["noise"] = probe_cell(settings)
    key["probe"] = "amortised"  # the probe's definition: older probe files are not reused
    f = root / "probes" / f"cost-{X.short_hash(key)}-t{threads}.json"
    if run and not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        print("probe: iteration cost vs one backbone forward + backward ...", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "cost", "--threads", str(threads),
               "--child-args", json.dumps({"root": str(root), "settings": settings, "out": str(f)})]
        with open(f.with_suffix(".log"), "a") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, MDW_NO_PROGRESS="1"))
    return json.loads(f.read_text()) if f.exists() else None


# ------------------------------------------------------------------ table
def _target(name: str, value: float | None, threshold: float, higher: bool = True) -> dict[str, Any]:
    met = None if value is None else (value >= threshold if higher else value <= threshold)
    return {"target": name, "value": value, "threshold": threshold, "met": met}


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline targets, each met / missed / ``None`` (a cell it needs did not run)."""
    R = lambda n, m, b: X.rsum(results, n, m, b)  # noqa: E731
    out = []
    for b, k in ((100, 2.0), (200, 1.6), (500, 1.3)):
        out.append(_target(f"50% noise, M={b}: MDW / clean_random >= {k}", X.ratio(R(0.5, "mdw", b),
                                                                               R(0.5, "clean_random", b)), k))
    for b in (100, 200, 500):
        for rival in ("lors", "mtt_vl"):
            out.append(_target(f"50% noise, M={b}: MDW / {rival} >= 1.15",
                               X.ratio(R(0.5, "mdw", b), R(0.5, rival, b)), 1.15))
        out.append(_target(f"0% noise, M={b}: MDW / lors >= 0.98", X.ratio(R(0.0, "mdw", b), R(0.0, "lors", b)), 0.98))
    out.append(_target("50% noise: MDW M=100 / full_noisy >= 1.6", X.ratio(R(0.5, "mdw", 100),
                                                                            R(0.5, "full_noisy", None)), 1.6))
    out.append(_target("50% noise: MDW M=200 / clean_oracle >= 0.8", X.ratio(R(0.5, "mdw", 200),
                                                                              R(0.5, "clean_oracle", None)), 0.8))
    return out


def costs(root: Path, settings: dict[str, Any], results: list[dict[str, Any]], probe: dict | None) -> dict:
    """Buffer build times, evaluation time of a 100-pair coreset, seconds per iteration of each
    distillation cell, the probe's iteration / backbone ratio, and the largest peak RSS of a cell."""
    evals = {f"noise{r['noise']:g}/M{r['budget']}": sum(s.get("train_time_s", 0) for s in r.get("per_seed", []))
             for r in results if r["method"] == "clean_random"}
    iters = {f"noise{r['noise']:g}/{r['method']}/M{r['budget']}": (r.get("distill") or {}).get("time_per_iteration_s")
             for r in results if r.get("kind") == "distill"}
    peaks = [r["peak_rss_mib"] for r in results if r.get("peak_rss_mib")]
    return {"buffer_build_s": X.buffer_build_times(root, settings),
            "eval_coreset_all_seeds_s": evals, "distill_iteration_s": iters, "probe": probe,
            "peak_rss_mib_max": max(peaks) if peaks else None}


def environment(threads: int) -> dict[str, Any]:
    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": threads,
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "cuda": torch.cuda.is_available(),
            "commit": commit}


def regime(settings: dict[str, Any]) -> dict[str, Any]:
    """What the figures were made from: the settings every cell shares."""
    return {k: settings[k] for k in ("source", "source_options", "encoder", "model", "experts", "distill", "eval")}


def command(args: argparse.Namespace) -> str:
    """The command line a results file records (``main``'s own arguments)."""
    return shlex.join(["python", "benchmarks/bench_distill.py", *args.argv])


def write_report(out: Path, args: argparse.Namespace, settings: dict[str, Any], root: Path,
                 results: list[dict[str, Any]], probe: dict | None, t0: float, complete: bool) -> None:
    from mdw_kit.runs import write_json
    write_json(out, {"command": command(args),
                     "regime": regime(settings),
                     "seeds": settings["seeds"], "complete": complete, "cells_expected": len(X.cells(settings)),
                     "cells_done": len(results), "environment": environment(args.threads),
                     "wall_time_s": time.perf_counter() - t0, "rows": X.headline_rows(results),
                     "costs": costs(root, settings, results, probe), "targets": targets(results)})


def markdown_table(report: dict[str, Any]) -> str:
    """The rows of a headline report as a markdown table: one row per method and noise rate, one
    column per budget (test R-sum mean +- sd over the seeds; validation R-sum in brackets)."""
    rows = report["rows"]
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None})
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    keys = sorted({(r["noise"], r["method"]) for r in rows}, key=lambda k: (-k[0], order.get(k[1], 99)))
    cell = {(r["noise"], r["method"], r["budget"]): r for r in rows}
    head = "| noise | method | " + " | ".join(f"{b} pairs" for b in budgets) + " | all pairs |"
    out = [head, "|" + "---|" * (len(budgets) + 3)]
    for noise, method in keys:
        vals = []
        for b in [*budgets, None]:
            r = cell.get((noise, method, b))
            vals.append("" if r is None else f"{r['rsum_mean']:.1f} ± {r['rsum_sd']:.1f} ({r['val_rsum_mean']:.1f})")
        out.append(f"| {noise:.0%} | {method} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv  # the command the files record
    if args.markdown:
        print(markdown_table(json.loads(args.out.read_text())))
        return 0
    import torch
    torch.set_num_threads(args.threads)
    if args.child:
        c = json.loads(args.child_args)
        child_cost(Path(c["root"]), c["settings"], Path(c["out"]))
        return 0
    settings = build_settings(args)
    from mdw_kit.utils import cache_dir
    root = args.work_dir or cache_dir("bench_distill")
    t0 = time.perf_counter()
    if args.costs_only:
        probe = run_cost_probe(root, settings, args.threads)
        if probe is None:
            raise SystemExit(f"error: the cost probe failed; its log is under {root / 'probes'}")
        from mdw_kit.runs import write_json
        write_json(args.out, {"command": command(args),
                              "regime": regime(settings), "environment": environment(args.threads),
                              "probe": probe, "target": "iteration <= 1.5x one backbone forward + backward",
                              "met": probe["iteration_over_backbone"] <= 1.5})
        plain = probe["iteration_over_backbone_without_maps"]
        print(f"iteration / backbone forward+backward: {probe['iteration_over_backbone']:.2f} amortised "
              f"(maps every {probe['ceo_every']})" + ("" if plain is None else f", {plain:.2f} without map refreshes")
              + f"; wrote {args.out}")
        return 0
    order = priority_order(settings)
    print(f"{len(order)} cells; work folder {root}; writing {args.out} as cells finish", flush=True)
    probe = None if args.skip_costs else run_cost_probe(root, settings, args.threads, run=not args.collect_only)
    results = X.run_grid(root, settings, threads=args.threads, order=order, run_missing=not args.collect_only,
                         on_result=lambda rs: write_report(args.out, args, settings, root, rs, probe, t0, False))
    write_report(args.out, args, settings, root, results, probe, t0, len(results) == len(order))
    for row in X.headline_rows(results):
        print(f"  noise {row['noise']:.0%}  M={row['budget'] or 'all':>4}  {row['method']:<14} "
              f"R-sum {row['rsum_mean']:6.1f} +- {row['rsum_sd']:4.1f}")
    for t in targets(results):
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  [{mark:>12}] {t['target']}: {'-' if t['value'] is None else format(t['value'], '.3f')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
