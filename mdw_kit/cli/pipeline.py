"""``mdw pipeline``: the whole job (experts, distillation, evaluation, report) on one dataset."""
from __future__ import annotations

import argparse

from mdw_kit.runs import check_run_folder

from .common import add_data_args, add_model_args, check_budget, check_model_flags, check_seeds, model_fields, \
    parse_options


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run :func:`mdw_kit.pipeline.run_pipeline` with the preset and the shared data/model options."""
    from mdw_kit.pipeline import PipelineConfig, run_pipeline
    check_model_flags(args)
    seeds = None if args.seeds is None else check_seeds(args.seeds)
    if args.budget is not None:
        check_budget(args.budget)
    check_run_folder(args.out, "pipeline")
    cfg = PipelineConfig(preset=args.preset, source=args.source, noise=args.noise, budget=args.budget,
                         source_options=parse_options(args.option), model=model_fields(args),
                         encoder=args.encoder, iterations=args.iterations, expert_epochs=args.expert_epochs,
                         expert_runs=args.runs, seeds=seeds, quick=args.quick)
    run_pipeline(args.out, cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pipeline`` to the ``mdw`` parser."""
    p = sub.add_parser("pipeline", help="the whole pipeline + HTML report (the README's main job)")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--budget", type=int, default=None, help="synthetic pairs M (default: preset)")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations (default: preset)")
    p.add_argument("--expert-epochs", type=int, default=None)
    p.add_argument("--runs", type=int, default=None, help="expert runs")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--quick", action="store_true", help="the smoke preset (a minute; for smoke tests)")
    p.add_argument("--out", default="runs/pipeline")
    p.set_defaults(func=cmd_pipeline)
