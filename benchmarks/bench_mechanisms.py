"""Are MDW's mechanisms worth inspecting? P~, region maps and image readability, per variant and seed.

Default regime (EfficientNet-Lite0 ImageNet 64 px frozen, MiniLM, linear heads; preset ``default``)
on the ``shapes`` source (scenes with named objects and boxes), 50% noise, 100 pairs. Per variant
(DistillConfig fields over the preset's; a ``"method"`` key picks another method such as the
ablations ``mdw_no_ceo`` / ``mdw_no_corr``, default ``mdw``) and seed it distils once through the stage API and reports
(:func:`mdw_kit.distill.diagnostics.mechanism_figures`, :func:`mdw_kit.evaluation.pointing.distilled_pointing_game`):

- P~: mean off-diagonal share of a row's normalised mass (target >= 5%), the Spearman correlation
  over i != j between P~_ij and the MiniLM cosine of the real captions nearest texts i and j
  (target >= 0.3), mean P~_ij between scenes sharing a named object over scenes sharing none
  (target >= 3x), and the off-diagonal share of the rows that started from a mismatched pair
  against the clean ones, with the AUROC of that share for telling them apart;
- region maps: pointing game of the CEO maps on the starting and the final images (target >= 0.85
  on the final ones; chance about 0.29), the share of images whose top text names one of their
  objects (the game's ceiling) and the hit share among those (the maps' own accuracy);
- images: mean absolute pixel change, and the share of final images whose starting pair's caption
  is in the top 5 of all training captions for a model trained on the truly clean pairs (target >=
  80%), with the starting images' share as the ceiling;
- test R-sum of fresh models trained on the set (3 evaluation seeds).

Each distilled set is kept under ``--work-dir`` (reruns reuse it); ``--grid`` draws the starting
images above every variant's final ones (seed 0) into ``docs/images/mechanisms_before_after.png``.

    python benchmarks/bench_mechanisms.py --variant plain='{}' --out benchmarks/results/mechanisms_plain.json
    python benchmarks/bench_mechanisms.py --variant dsa='{"augment_strength": 1.0}' --out .../mechanisms_dsa.json
    python benchmarks/bench_mechanisms.py --variant no_ceo='{"method": "mdw_no_ceo"}' --out .../mechanisms_no_ceo.json
    python benchmarks/bench_mechanisms.py --grid --variant plain='{}' --variant dsa='{"augment_strength": 1.0}'
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"off_share": 0.05, "caption_spearman": 0.3, "shared_object_ratio": 3.0, "pointing_final": 0.85,
           "recognised_top5": 0.8}


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME=JSON`` -> ``(name, DistillConfig overrides)``; the JSON may also name a ``"method"``."""
    from mdw_kit.cli.common import named_json
    return named_json(text)


def distil_one(mk, data, buf, cfg: dict, seed: int, iterations: int, folder: Path):
    """The distilled set of one (variant, seed), from ``folder`` when a finished one made with the
    same settings is there; one made with others (a variant renamed, a default changed) is an error."""
    from mdw_kit.distill.methods import result_relevant
    from mdw_kit.distill.synthetic import DistilledSet
    cfg = dict(cfg)
    method = cfg.pop("method", "mdw")
    config = {**cfg, "seed": seed, "iterations": iterations, "save_maps_every": iterations, "progress": False}
    dist = mk.distiller(data, buf, method=method, budget=100, config=config, run_dir=folder)
    art = folder / "artifacts" / "distilled"
    if (art / "distilled.json").exists():
        syn = DistilledSet.load(art)
        changed = dist.cfg.changed_fields((syn.meta or {}).get("config") or {}, keys=list(result_relevant(dist.cfg)))
        if changed:
            raise SystemExit(f"error: {art} was distilled with other settings ({', '.join(changed)}); "
                             "give the variant another name or move that folder away")
        return syn
    return dist.run()


def row_for(mk, viz, diag, syn, data, reference, eval_seeds) -> dict:
    """Every figure of one distilled set."""
    from mdw_kit.evaluation.pointing import distilled_pointing_game
    fig = diag.mechanism_figures(syn, data.train, data.train_text, reference)
    games = [distilled_pointing_game(syn, data.train, data.train_text, maps=m) for _, m in syn.map_history]
    fig.update({"pointing_start": games[0]["share"], "pointing_final": games[-1]["share"],
                "pointing_chance": games[-1]["chance"], "pointing_named": games[-1]["named"],
                "pointing_final_named": games[-1]["share_named"],
                "shared_object_ratio": fig.pop("shared_object")["ratio"],
                "shared_object_ratio_start": fig.pop("shared_object_start")["ratio"]})
    mis = fig.pop("mismatched_start", None)
    if mis is not None:  # rows that started from a mismatched pair: how far P~ moved them off the diagonal
        fig.update({"off_share_clean_start": mis["off_share_clean"], "off_share_mismatched_start": mis["off_share_mismatched"],
                    "mismatched_start_auroc": mis["auroc"]})
    if eval_seeds:
        fig["test_rsum"] = mk.evaluate(syn, data, seeds=eval_seeds)["mean"]["R-sum"]
    # a figure undefined for this set (NaN, e.g. no top text names an object) is written as None
    return {k: (None if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v for k, v in fig.items()}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]  # None: undefined for that seed
        if k == "seed" or not vals:
            continue
        out[k] = [round(statistics.mean(vals), 4), round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0]
    out["targets_met"] = {k: out[k][0] >= t for k, t in TARGETS.items() if k in out}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", type=parse_variant, action="append", help="NAME=JSON DistillConfig overrides")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--eval-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--num-images", type=int, default=600)
    p.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mdw-bench-mechanisms")
    p.add_argument("--grid", action="store_true", help="only draw the before/after grid from finished seed-0 sets")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mechanisms.json")
    args = p.parse_args(argv)
    variants = dict(args.variant or [("plain", {})])
    os.environ.setdefault("MDW_NO_PROGRESS", "1")
    import torch

    import mdw_kit as mk
    from mdw_kit import viz
    from mdw_kit.distill import diagnostics as diag

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = mk.prepare_data("shapes", noise=0.5, options={"num_images": args.num_images, "image_size": 64})
    args.work_dir = args.work_dir / f"shapes{args.num_images}_it{args.iterations}"
    buf = mk.build_buffer(data, args.work_dir / "buffer", progress=False)
    if args.grid:
        return draw_grid(mk, diag, data, buf, variants, args)
    reference = diag.clean_reference_model(data.model_config, data.train.pair_inputs(), data.train_text,
                                           data.train.clean)
    rows = []
    for name, cfg in variants.items():
        for seed in args.seeds:
            ts = time.perf_counter()
            syn = distil_one(mk, data, buf, cfg, seed, args.iterations, args.work_dir / name / f"seed{seed}")
            rows.append({"variant": name, "seed": seed, **row_for(mk, viz, diag, syn, data, reference, args.eval_seeds),
                         "seconds": round(time.perf_counter() - ts, 1)})
            print(json.dumps(rows[-1]), flush=True)
            summary = write_result(args, argv, variants, rows, t0)  # after every row: a kill keeps what ran
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


def write_result(args, argv, variants: dict, rows: list[dict], t0: float) -> dict:
    """Write the JSON result (command, setup, per-variant mean/sd and targets, rows); the summary."""
    done = [n for n in variants if any(r["variant"] == n for r in rows)]
    summary = {n: summarise([r for r in rows if r["variant"] == n]) for n in done}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "python benchmarks/bench_mechanisms.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "setup": f"shapes {args.num_images} images 64 px, 50% noise, preset 'default' (EfficientNet-Lite0 frozen, "
                 f"MiniLM, dual-track experts as the preset), 100 pairs, {args.iterations} iterations",
        "variants": variants, "targets": TARGETS, "torch_threads": args.threads,
        "wall_time_s": round(time.perf_counter() - t0, 1), "summary_mean_sd": summary, "rows": rows}, indent=2))
    return summary


def draw_grid(mk, diag, data, buf, variants: dict, args) -> int:
    """The before/after grid of the seed-0 sets of ``variants`` (distilled if not there yet)."""
    sets = {n: distil_one(mk, data, buf, cfg, 0, args.iterations, args.work_dir / n / "seed0")
            for n, cfg in variants.items()}
    first = next(iter(sets.values()))
    caps = [data.train.captions[int(i)] for i in first.init_indices]
    fig = diag.before_after_grid(first.init_images, {n: s.images for n, s in sets.items()}, caps, n=8)
    out = ROOT / "docs" / "images" / "mechanisms_before_after.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
