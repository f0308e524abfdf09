"""``mdw`` subcommands of the later stages: noise report, expert buffer, distil, evaluate, pipeline."""
from __future__ import annotations

import argparse
import json
from typing import Any


def _json_object(text: str | None, flag: str) -> dict[str, Any]:
    """The JSON object given to ``flag`` ({} when not given); bad JSON is an error naming the flag."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object of settings, got {text!r}")
    return value


def _dual_cfg(args) -> Any:
    """The DualTrackConfig of ``--expert-epochs`` / ``--naive``; keys in ``--dual-config`` win."""
    from .experts.dual_track import DualTrackConfig
    base = {"epochs": args.expert_epochs, "naive": args.naive, "num_tracks": 1 if args.naive else 2}
    return DualTrackConfig.from_dict({**base, **_json_object(getattr(args, "dual_config", None), "--dual-config")})


def cmd_noise_report(args) -> int:
    """Dual-track training on the noisy training pairs; writes noise_report.json + per-pair table."""
    from .cli import _bundle, _model_cfg, _start_run
    from .experts.dual_track import train_dual_track
    from .pipeline import save_data_record
    cfg = _dual_cfg(args)  # a bad --dual-config fails before any run folder is made
    run = _start_run(args, "noise-report")
    b = _bundle(args)
    save_data_record(run, b)
    mcfg = _model_cfg(args, b)
    res = train_dual_track(lambda s: mcfg.build(), b.train.pair_pixels(), b.train_text, cfg,
                           clean=b.train.clean if b.train.noise_known else None, val=b.val_split())
    rep = res.report(captions=b.train.captions,
                     image_ids=[b.train.image_ids[int(i)] for i in b.train.pair_image])
    rep.save(run.path)
    from .experts.mismatch import mismatch_report  # ranked pairs + best other caption: mismatch_report.csv
    mismatch_report(rep, res.states, mcfg.build, b.train.pair_pixels(), b.train_text, out_dir=run.path)
    warm = res.report(epoch=res.warmup_epoch).summary()
    run.write_json("metrics.json", {"final": rep.summary(), "end_of_warmup": warm,
                                    "detection_per_epoch": res.detection, "wall_time_s": res.wall_time_s})
    for k, v in rep.summary().items():
        print(f"{k:>28}: {v}")
    return 0


def cmd_buffer(args) -> int:
    """Record expert trajectories (dual-track by default, ``--naive`` for plain experts)."""
    from .cli import _bundle, _model_cfg, _start_run
    from .experts.buffer import build_buffer
    cfg = _dual_cfg(args)
    run = _start_run(args, "buffer")
    b = _bundle(args)
    mcfg = _model_cfg(args, b)
    buf = build_buffer(run.path / "buffer", mcfg, b.train.pair_pixels(), b.train_text, cfg,
                       args.runs, b.fingerprint(), b.encoder_name,
                       noise={"rate": args.noise, "seed": args.noise_seed}, dtype=args.dtype,
                       clean=b.train.clean if b.train.noise_known else None)
    if buf is None:
        print("this rank finished its runs; rank 0 writes the index")
        return 0
    summ = {"trajectories": buf.num_trajectories, "epochs": buf.num_epochs,
            "size_mib": round(buf.size_bytes / 2**20, 2), "noise_report": buf.consensus.summary()}
    run.write_json("metrics.json", summ)
    print(json.dumps(summ, indent=2, default=str))
    return 0


def cmd_distill(args) -> int:
    """Distil with one method (mdw by default) from buffers made by ``mdw buffer``; evaluate it."""
    from .cli import _bundle, _start_run
    from .distill.evaluate import EvalConfig
    from .distill.methods import run_method
    from .experts.buffer import load_buffer
    over = _json_object(args.distill_config, "--distill-config")
    over.setdefault("iterations", args.iterations)
    run = _start_run(args, "distill")
    b = _bundle(args)
    buffers = {}
    for kind, path in (("dual_track", args.buffer), ("naive", args.naive_buffer)):
        if path:
            buffers[kind] = load_buffer(path, data_fingerprint=b.fingerprint())
    res = run_method(args.method, b, args.budget, buffers, distill=over,
                     eval_cfg=EvalConfig(epochs=args.eval_epochs), seeds=args.seeds, run_dir=run.path)
    res.pop("distilled_set", None)
    print(f"{args.method} M={args.budget}: test R-sum {res['mean']['R-sum']:.1f} +- {res['sd']['R-sum']:.1f}")
    return 0


def cmd_evaluate(args) -> int:
    """Evaluate a saved distilled set (train fresh models with its targets and rates)."""
    from .cli import _bundle, _start_run
    from .distill import DistilledSet
    from .distill.evaluate import EvalConfig, evaluate_distilled
    from .evaluate import format_table
    from .models import ModelConfig
    run = _start_run(args, "evaluate")
    b = _bundle(args)
    dset = DistilledSet.load(args.distilled)
    mcfg = ModelConfig.from_dict(dset.meta["model_config"]) if "model_config" in dset.meta else None
    if mcfg is None:
        raise ValueError(f"{args.distilled}: the distilled set's meta has no 'model_config'")
    res = evaluate_distilled(dset, mcfg, b.val_split(), b.test_split(), seeds=args.seeds,
                             cfg=EvalConfig(epochs=args.eval_epochs))
    run.write_json("metrics.json", res)
    print(format_table([{"seed": r["seed"], "epoch": r["best_epoch"], **r["test"]} for r in res["per_seed"]]))
    return 0


def cmd_pipeline(args) -> int:
    """The whole MDW pipeline on one dataset: experts, distillation, evaluation, report."""
    from .pipeline import PipelineConfig, run_pipeline
    cfg = PipelineConfig(source=args.source, noise=args.noise, budget=args.budget,
                         iterations=args.iterations, expert_epochs=args.expert_epochs,
                         expert_runs=args.runs, seeds=tuple(args.seeds), encoder=args.encoder,
                         quick=args.quick)
    run_pipeline(args.out, cfg)
    return 0


def register(sub, add_data_args, add_model_args) -> None:
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
    p.add_argument("--runs", type=int, default=2, help="runs (each gives one trajectory per track)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_buffer)

    p = sub.add_parser("distill", help="distil a dataset with a method and evaluate it")
    add_data_args(p)
    p.add_argument("--method", default="mdw", help="mdw, lors, mtt_vl, mdw_no_dual, mdw_no_ceo, "
                   "mdw_no_corr, mdw_kcenter_init, mdw_balanced_init, random, herding, kcenter, "
                   "clean_random, full_noisy, clean_oracle")
    p.add_argument("--budget", type=int, default=100, help="synthetic pairs M")
    p.add_argument("--buffer", default=None, help="dual-track buffer folder (from mdw buffer)")
    p.add_argument("--naive-buffer", default=None, help="naive buffer folder (mdw buffer --naive)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--distill-config", default=None, help="JSON of DistillConfig overrides, e.g. "
                   "'{\"ceo_method\": \"occlusion\"}' for region maps that stay on the objects at 32 px, or "
                   "'{\"select_every\": 50}' to return the set (the start included) that validates best")
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="evaluate a saved distilled set")
    add_data_args(p)
    p.add_argument("distilled", help="path of a saved distilled set")
    p.add_argument("--eval-epochs", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="the whole pipeline + HTML report (the README's main job)")
    p.add_argument("--source", default="openmoji")
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations (default: preset)")
    p.add_argument("--expert-epochs", type=int, default=None)
    p.add_argument("--runs", type=int, default=None, help="expert runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="tiny settings (a minute; for smoke tests)")
    p.add_argument("--out", default="runs/pipeline")
    p.set_defaults(func=cmd_pipeline)


def _expert_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experts")
    g.add_argument("--expert-epochs", type=int, default=12)
    g.add_argument("--naive", action="store_true", help="plain training on all pairs (naive experts)")
    g.add_argument("--dual-config", default=None, help="JSON of DualTrackConfig overrides, e.g. "
                   "'{\"mode\": \"weight\", \"min_weight\": 0.01}' with --expert-epochs 30 for AUROC >= 0.95 "
                   "and experts >= naive + 40 at 50%% noise (0.05: sharper detection, weaker experts), "
                   "'{\"keep_fraction\": 0.45}' to keep a fixed share of the pairs instead of p > 0.5; "
                   "its keys win over --expert-epochs and --naive")
