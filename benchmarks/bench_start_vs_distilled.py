"""Does distillation improve on its starting pairs? One distilled set, several evaluations.

Reads the distilled set of a finished ``bench_distill.py`` cell (same settings, so run that
first) and trains fresh models (3 seeds, epoch chosen on val) on the following sets, reporting
test R-sum and the validation R-sum of the chosen epochs:

- ``distilled``: the distilled set with the protocol of the benchmark (SGD with its learned rates
  and momentum, soft targets ``P~``);
- ``distilled_adam_soft`` / ``distilled_adam_identity``: the same pixels and texts with the
  coresets' optimiser (Adam 1e-3), with ``P~`` / identity targets;
- ``start_distilled_protocol``: the real pairs the distillation started from, trained exactly as
  the distilled set is (its learned rates and ``P~``): what the learning of pixels and texts adds;
- ``start_adam_identity``: the same real pairs as a coreset (Adam, identity targets);
- ``learned_images_start_texts`` / ``start_images_learned_texts``: one modality learned, the
  other as it started, both with the distilled protocol: which modality's learning helps or hurts.

Usage::

    python benchmarks/bench_start_vs_distilled.py --budget 100
    python benchmarks/bench_start_vs_distilled.py --budget 100 --grouping skin_tone
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--method", default="mdw")
    p.add_argument("--grouping", default=None, help="openmoji grouping (default: the source's, strict)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", nargs="+", default=None, help="evaluate only these rows (default: all)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from mdw_kit import experiments as X
    from mdw_kit.utils import cache_dir
    from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled
    from mdw_kit.distill.methods import train_pairs
    from mdw_kit.distill.synthetic import DistilledSet

    torch.set_num_threads(args.threads)
    settings = X.grid_settings("default", noise=[args.noise], budgets=[args.budget], methods=[args.method],
                               source_options={"grouping": args.grouping} if args.grouping else None)
    cell = X.cell_dir(cache_dir("bench_distill"), settings, args.noise, args.method, args.budget)
    art = cell / "distill" / "artifacts" / "distilled"
    if not (art / "distilled.safetensors").exists():
        raise SystemExit(f"no distilled set in {art}; run bench_distill.py with the same settings first")
    data = X.load_data(settings, args.noise)
    mc = data.model_config
    images, text = train_pairs(data)
    syn = DistilledSet.load(art)
    idx = torch.as_tensor(syn.init_indices)
    start_pixels, start_text = syn.starting_pairs(images, text)

    def with_start(pixels: bool, texts: bool) -> DistilledSet:
        """A copy of the set (its learned P~ and rates) with its starting pixels and / or texts."""
        out = copy.deepcopy(syn)
        with torch.no_grad():
            if pixels:
                out.images.copy_(start_pixels)
            if texts:
                out.text.copy_(start_text)
        return out

    ecfg = EvalConfig.from_dict(settings["eval"])
    runs = {"distilled": lambda: syn,
            "distilled_adam_soft": lambda: syn,
            "distilled_adam_identity": lambda: syn,
            "start_distilled_protocol": lambda: with_start(True, True),
            "start_adam_identity": lambda: (images[idx], text[idx]),
            "learned_images_start_texts": lambda: with_start(False, True),
            "start_images_learned_texts": lambda: with_start(True, False)}
    overrides = {"distilled_adam_soft": {"use_learned_lr": False},
                 "distilled_adam_identity": {"use_learned_lr": False, "use_soft_targets": False}}
    unknown = sorted(set(args.rows or []) - set(runs))
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; choose from {sorted(runs)}")
    if args.rows:
        runs = {k: v for k, v in runs.items() if k in args.rows}
    rows, t0 = {}, time.perf_counter()
    for name, make in runs.items():
        r = evaluate_distilled(make(), mc, data.val_split(), data.test_split(), settings["seeds"],
                               cfg=replace(ecfg, **overrides.get(name, {})))
        rows[name] = {"R-sum": round(r["mean"]["R-sum"], 2), "sd": round(r["sd"]["R-sum"], 2),
                      "val_R-sum": round(r["val_mean"]["R-sum"], 2),
                      "best_epochs": r["best_epochs"], "trainer": r["trainer"], "test": r["mean"]}
        print(f"{name:26s} R-sum {rows[name]['R-sum']:6.1f} ± {rows[name]['sd']:.1f} "
              f"(val {rows[name]['val_R-sum']:.1f})", flush=True)
    suffix = f"_{args.grouping}" if args.grouping else ""
    out = args.out or ROOT / "benchmarks" / "results" / f"start_vs_distilled_{args.method}_M{args.budget}{suffix}.json"
    out.write_text(json.dumps({
        "command": "python benchmarks/bench_start_vs_distilled.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "cell": str(cell), "settings": settings, "init_true_clean_share": float(data.train.clean[idx].float().mean()),
        "wall_time_s": round(time.perf_counter() - t0, 1), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
