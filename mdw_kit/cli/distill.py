"""``mdw distill`` (distil with a method from recorded experts) and ``mdw evaluate`` (a saved set)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (CliError, Run, add_data_args, add_model_args, bundle, check_budget, check_model_flags,
                     check_seeds, config_overrides, data_provenance, path_identity)

ARTIFACT = Path("distill") / "artifacts" / "distilled"


def _method_names() -> list[str]:
    from mdw_kit.distill.methods import METHODS
    return sorted(METHODS)


def _distill_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--distill-config`` overrides (checked keys, types and values) with ``--iterations``."""
    from mdw_kit.distill import DistillConfig
    over = config_overrides(args.distill_config, "--distill-config", DistillConfig)
    if args.iterations is not None:
        over.setdefault("iterations", args.iterations)
    try:
        DistillConfig.from_dict({**over, "num_pairs": args.budget})  # the values' own checks, before any work
    except (TypeError, ValueError) as e:
        raise CliError(f"--distill-config: {e}") from None
    return over


def _load_buffers(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    from mdw_kit.experts.buffer import load_buffer
    return {kind: load_buffer(path, data_fingerprint=data.fingerprint())
            for kind, path in (("dual_track", args.buffer), ("naive", args.naive_buffer)) if path}


def _stamp(run_path: Path, data: Any) -> None:
    """Record the text encoder and data in the saved set's meta (checked by ``mdw evaluate``)."""
    from mdw_kit.distill import DistilledSet
    folder = run_path / ARTIFACT
    if (folder / "distilled.json").exists():
        dset = DistilledSet.load(folder)
        dset.meta.update(text_encoder=data.encoder_name, data_fingerprint=data.fingerprint())
        dset.save(folder)


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil with one method (mdw by default) from buffers made by ``mdw buffer``; evaluate it."""
    import mdw_kit as mk
    over = _distill_settings(args)
    seeds, budget = check_seeds(args.seeds), check_budget(args.budget)
    check_model_flags(args)
    prov = {"buffer": path_identity(args.buffer), "naive_buffer": path_identity(args.naive_buffer)}
    run = Run(args, "distill")
    b = bundle(args)
    buffers = _load_buffers(args, b)
    r = run.open({**prov, **data_provenance(b)})
    ecfg = None if args.eval_epochs is None else {"epochs": args.eval_epochs}
    res = mk.run_method(args.method, b, budget, buffers, distill_config=over, eval_config=ecfg, seeds=seeds,
                        run_dir=r.path, preset=args.preset)
    res.pop("distilled_set", None)
    _stamp(r.path, b)
    r.update_metrics(**{k: v for k, v in res.items() if k not in ("spec",)})
    print(f"{args.method} M={budget}: test R-sum {res['mean']['R-sum']:.1f} +- {res['sd']['R-sum']:.1f}")
    return 0


def _check_set(dset: Any, data: Any, where: str) -> None:
    """The set must have been distilled in this text encoder's space and for this model."""
    enc = dset.meta.get("text_encoder")
    if enc is not None and enc != data.encoder_name:
        raise CliError(f"{where} was distilled with text encoder {enc!r}, but --encoder gives "
                       f"{data.encoder_name!r}; evaluate it with the same encoder")
    dim = int(dset.text.shape[1])
    if dim != data.text_dim:
        raise CliError(f"{where} holds {dim}-d texts, but --encoder gives {data.text_dim}-d embeddings "
                       f"({data.encoder_name}); evaluate it with the encoder it was distilled with")
    tower = (dset.meta.get("model_config") or {}).get("tower")
    if tower is not None and tower != data.model_config.tower:
        raise CliError(f"{where} was distilled for tower {tower!r}, not {data.model_config.tower!r}; "
                       f"pass --tower {tower}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved distilled set (train fresh models with its targets and rates)."""
    import mdw_kit as mk
    from mdw_kit.distill import DistilledSet
    from mdw_kit.evaluation.metrics import format_table
    seeds = check_seeds(args.seeds)
    dset = DistilledSet.load(args.distilled)
    run = Run(args, "evaluate")
    b = bundle(args)
    _check_set(dset, b, args.distilled)
    r = run.open({"distilled": path_identity(args.distilled), **data_provenance(b)})
    ecfg = None if args.eval_epochs is None else {"epochs": args.eval_epochs}
    res = mk.evaluate(dset, b, seeds=seeds, config=ecfg, preset=args.preset)
    r.write_json("metrics.json", res)
    print(format_table([{"seed": x["seed"], "epoch": x["best_epoch"], **x["test"]} for x in res["per_seed"]]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``distill`` and ``evaluate`` to the ``mdw`` parser."""
    p = sub.add_parser("distill", help="distil a dataset with a method and evaluate it")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--method", default="mdw", choices=_method_names(), help="a method of the registry")
    p.add_argument("--budget", type=int, default=100, help="synthetic pairs M")
    p.add_argument("--buffer", default=None, help="dual-track buffer folder (from mdw buffer)")
    p.add_argument("--naive-buffer", default=None, help="naive buffer folder (mdw buffer --naive)")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations (default: preset)")
    p.add_argument("--distill-config", default=None, help="JSON of DistillConfig overrides, e.g. "
                   "'{\"ceo_method\": \"occlusion\"}' for region maps that stay on the objects at 32 px, or "
                   "'{\"select_every\": 50}' to return the set (the start included) that validates best")
    p.add_argument("--eval-epochs", type=int, default=None, help="evaluation epochs (default: preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="evaluate a saved distilled set")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("distilled", help="path of a saved distilled set")
    p.add_argument("--eval-epochs", type=int, default=None, help="evaluation epochs (default: preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_evaluate)
