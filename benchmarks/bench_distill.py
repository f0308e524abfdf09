"""Distillation benchmark: every method on openmoji at 0% / 50% noise, budgets 100 / 200 / 500.

CPU towers (ConvNet-3 on 32 px, frozen MiniLM + linear text head). For each noise
rate the dual-track and naive expert buffers are built once and cached under
``--work-dir``; every (noise, method, budget) cell then runs in its own process
(so its peak memory is its own) through :func:`mdw_kit.distill.methods.run_method`
and leaves ``result.json`` in its folder, so a rerun skips finished cells and a
killed distillation resumes from its checkpoint. Cell folders carry a hash of the
settings: changed settings get fresh cells.

Also measured: the cost of one distillation iteration against the plain SGD steps
it unrolls (same process, same model and set; both gradient modes), and the peak
memory of the constant-memory mode at 10 vs 40 student steps (each in a fresh
process; peak RSS growth over the set-up, Linux ``VmHWM`` reset before the
iterations), with the unrolled mode for contrast.

Writes ``benchmarks/results/distill.json`` (``distill_quick.json`` with ``--quick``):
the exact command line, the settings, every cell, the table, and each target
marked met / missed (``null`` when a cell it needs was not run).

Usage::

    python benchmarks/bench_distill.py --quick                       # 50% noise, 100 pairs, 4 methods
    python benchmarks/bench_distill.py                               # everything (hours on 2 cores)
    python benchmarks/bench_distill.py --noise 0.5 --budgets 100 200 --methods mdw lors --iterations 200
"""
from __future__ import annotations

import argparse
import hashlib
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

ALL_METHODS = ["random", "herding", "kcenter", "clean_random", "mtt_vl", "lors", "mdw", "mdw_no_dual",
               "mdw_no_ceo", "mdw_no_corr", "mdw_kcenter_init", "mdw_balanced_init", "full_noisy",
               "clean_oracle"]
QUICK_METHODS = ["clean_random", "mtt_vl", "lors", "mdw"]
METRICS = ["TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10"]
PROBE_VERSION = 2  # bump when the cost probe measures differently, so its cached result is not reused


# ------------------------------------------------------------------ settings
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50%% noise, 100 pairs, mdw/lors/mtt_vl/clean_random, "
                   "short expert / distillation / evaluation runs")
    p.add_argument("--noise", type=float, nargs="+", help="noise rates (default 0.0 0.5)")
    p.add_argument("--budgets", type=int, nargs="+", help="budgets in pairs (default 100 200 500)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, help="methods (default all)")
    p.add_argument("--iterations", type=int, help="distillation iterations (default 150; quick 60)")
    p.add_argument("--syn-steps", type=int, help="student steps per distillation iteration (default 10)")
    p.add_argument("--batch-syn", type=int, help="synthetic pairs per student step (default 50)")
    p.add_argument("--max-start-epoch", type=int,
                   help="expert start epochs are drawn below this (default min(5, expert epochs - 2))")
    p.add_argument("--distill-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other DistillConfig field for the distilled methods, e.g. lr_img=0.005 (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default 0 1 2)")
    p.add_argument("--eval-epochs", type=int, help="epochs on a distilled set / coreset (default 150)")
    p.add_argument("--expert-epochs", type=int, help="epochs per expert track (default 10)")
    p.add_argument("--expert-runs", type=int, help="dual-track (and naive) runs per buffer (default 2; quick 1)")
    p.add_argument("--expert-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other DualTrackConfig field for the dual-track experts, e.g. mode=weight "
                        "(repeatable; the naive experts ignore the noise handling)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="buffers and cell results, reused across runs (default: cache_dir('bench_distill'))")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/distill.json)")
    p.add_argument("--source", default="openmoji", help="data source (openmoji; shapes for a smoke run)")
    p.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="source option, repeatable (default image_size=32)")
    p.add_argument("--preset", default="default",
                   help="preset whose dual-track settings the experts use (mdw_kit/presets; default: default)")
    p.add_argument("--tower", default="efficientnet_lite0",
                   help="image tower (default efficientnet_lite0, ImageNet weights; convnet3 = from scratch)")
    p.add_argument("--train-layers", default=None,
                   help="trainable part of a pretrained tower (default none: frozen backbone, cached features)")
    p.add_argument("--encoder", default="minilm", help="frozen text encoder (minilm; hash for a smoke run)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--skip-costs", action="store_true", help="skip the iteration-cost and memory probes")
    p.add_argument("--child", choices=["cell", "cost", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--child-args", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable flag as a dict ({} when the flag is not used)."""
    if not pairs:
        return {}
    from mdw_kit.cli import parse_options  # imports torch: only when the flag is used
    return parse_options(pairs, flag)


def build_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that decides the results, as plain JSON."""
    q = args.quick
    options = {"image_size": 32 if args.tower.startswith("convnet") else 64}
    for kv in args.source_option:
        k, v = kv.split("=", 1)
        options[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false", "null") else v
    from mdw_kit.presets import load_preset
    preset = load_preset(args.preset)
    dual = preset.get("experts", {}).get("dual_track", {})
    expert_epochs = args.expert_epochs or dual.get("epochs", 10)
    extra = _options(args.distill_option, "--distill-option")
    # the preset's dual-track settings, then --expert-option; only what is set enters the cache keys
    expert_opts = {**{k: v for k, v in dual.items() if k not in ("epochs", "warmup_epochs")},
                   **_options(args.expert_option, "--expert-option")}
    expert_extra = {"options": expert_opts} if expert_opts else {}
    clash = sorted(set(expert_extra.get("options", {})) & {"epochs", "warmup_epochs", "naive", "num_runs"})
    if clash:
        raise SystemExit(f"error: --expert-option cannot set {', '.join(clash)} "
                         "(use --expert-epochs / --expert-runs; the naive buffer is built alongside)")
    distill = {"iterations": args.iterations or (60 if q else 150), "syn_steps": args.syn_steps or 10,
               "expert_epochs": 2, "max_start_epoch": args.max_start_epoch or max(1, min(5, expert_epochs - 2)),
               "batch_syn": args.batch_syn or 50}
    return {
        "source": args.source, "source_options": options, "encoder": args.encoder, "noise_seed": 0,
        "model": {"tower": args.tower, "image_size": int(options["image_size"]), "embed_dim": 256,
                  "text_head": "linear",
                  **({} if args.tower.startswith("convnet") else {"train_layers": args.train_layers or "none"})},
        "experts": {"epochs": expert_epochs, "warmup_epochs": 2, "num_runs": args.expert_runs or (1 if q else 2),
                    **expert_extra},
        "distill": {**distill, **extra},
        "eval": {"epochs": args.eval_epochs or 150, "eval_every": 10,
                 "full_epochs": 10 if q else 20},
        "seeds": args.seeds or [0, 1, 2],
        "noise": args.noise or ([0.5] if q else [0.0, 0.5]),
        "budgets": args.budgets or ([100] if q else [100, 200, 500]),
        "methods": args.methods or (QUICK_METHODS if q else ALL_METHODS),
    }


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def work_dir(args: argparse.Namespace) -> Path:
    if args.work_dir is not None:
        return args.work_dir
    from mdw_kit.utils import cache_dir
    return cache_dir("bench_distill")


# ------------------------------------------------------------------ data and buffers
def load_data(settings: dict[str, Any], noise: float):
    """The bundle of one noise rate through the stage API: the settings' model, cached backbone features."""
    from mdw_kit import stages
    return stages.prepare_data(settings["source"], noise, noise_seed=settings["noise_seed"],
                               options=settings["source_options"], encoder=settings["encoder"],
                               model=settings["model"], preset={})


def expert_settings(settings: dict[str, Any], kind: str) -> dict[str, Any]:
    """The expert settings that decide a ``kind`` buffer: the naive experts leave out the
    dual-track-only ``options`` (they have no noise handling to configure)."""
    e = settings["experts"]
    return e if kind == "dual_track" else {k: v for k, v in e.items() if k != "options"}


def buffer_dirs(root: Path, settings: dict[str, Any], noise: float) -> dict[str, Path]:
    """One folder per kind, keyed by the data, the model and :func:`expert_settings`."""
    base = {k: settings[k] for k in ("source", "source_options", "encoder", "noise_seed", "model")}
    return {kind: root / "buffers" / f"noise{noise:g}" /
            f"{kind}-{short_hash({**base, 'experts': expert_settings(settings, kind)})}"
            for kind in ("dual_track", "naive")}


def ensure_buffers(root: Path, settings: dict[str, Any], noise: float, data=None) -> dict[str, Any]:
    """Build (or load) the dual-track and naive buffers of one noise rate; build_buffer resumes."""
    from mdw_kit import stages
    from mdw_kit.experts.buffer import load_buffer
    from mdw_kit.experts.dual_track import DualTrackConfig
    data = data or load_data(settings, noise)
    out = {}
    for kind, path in buffer_dirs(root, settings, noise).items():
        if (path / "consensus.safetensors").exists():
            try:
                out[kind] = load_buffer(path, data_fingerprint=data.fingerprint())
                continue
            except Exception as e:  # noqa: BLE001 - an unusable buffer is rebuilt (resumes its runs)
                print(f"buffer {path} not usable ({e}); building", flush=True)
        e = expert_settings(settings, kind)
        cfg = DualTrackConfig(**{"epochs": e["epochs"], "warmup_epochs": e["warmup_epochs"], **e.get("options", {})},
                              naive=kind == "naive")
        t0 = time.perf_counter()
        print(f"building {kind} buffer at noise {noise:g} in {path}", flush=True)
        out[kind] = stages.build_buffer(data, path, cfg, runs=e["num_runs"], progress=False)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


# ------------------------------------------------------------------ cells (child processes)
def cell_dir(root: Path, settings: dict[str, Any], noise: float, method: str, budget: int | None) -> Path:
    key = short_hash({k: settings[k] for k in ("source", "source_options", "encoder", "noise_seed", "model",
                                                 "experts", "distill", "eval", "seeds")})
    name = f"{method}-M{budget}" if budget is not None else method
    return root / "cells" / f"noise{noise:g}" / f"{name}-{key}"


def child_cell(root: Path, settings: dict[str, Any], noise: float, method: str, budget: int | None) -> None:
    """Run one cell in this process; ``run_method`` writes ``result.json`` into the cell folder."""
    from mdw_kit.distill.methods import run_method
    data = load_data(settings, noise)
    buffers = ensure_buffers(root, settings, noise, data)
    d = cell_dir(root, settings, noise, method, budget)
    r = run_method(method, data, budget, buffers, distill=cell_distill_options(settings), eval_cfg=settings["eval"],
                   seeds=settings["seeds"], run_dir=d, model_cfg=data.model_config)
    print(f"{method} M={budget} noise={noise:g}: R-sum {r['mean']['R-sum']:.1f} +- {r['sd']['R-sum']:.1f}",
          flush=True)


def run_child(kind: str, payload: dict[str, Any], args: argparse.Namespace, log: Path) -> int:
    """Run ``kind`` in a fresh process (its own peak memory); output appended to ``log``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-args", json.dumps(payload),
           "--threads", str(args.threads)]
    env = dict(os.environ, MDW_NO_PROGRESS=os.environ.get("MDW_NO_PROGRESS", "1"))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)).returncode


# ------------------------------------------------------------------ cost and memory probes
def _probe_distiller(root: Path, settings: dict[str, Any], mode: str, syn_steps: int):
    """An initialised MDW distiller (100 pairs, or the smallest budget) on the 50%-noise (else first)
    buffers, fixed start rate (the probes time and size iterations; they do not need a good rate)."""
    budget = min(100, *settings["budgets"])
    from mdw_kit.distill.methods import distiller_for
    noise = 0.5 if 0.5 in settings["noise"] else settings["noise"][0]
    data = load_data(settings, noise)
    buf = ensure_buffers(root, settings, noise, data)["dual_track"]
    over = dict(settings["distill"], syn_steps=syn_steps, mode=mode, lr_init=0.01, progress=False,
                checkpoint_every=0, save_maps_every=0)
    dist = distiller_for("mdw", data, budget, buf, over)
    dist.initialise()
    return dist


def child_cost(root: Path, settings: dict[str, Any], out: Path, iters: int = 6) -> None:
    """Iteration time vs the plain SGD steps it unrolls, both modes, same process / model / set.

    Each iteration is timed right before the plain steps it is compared with, and the ratio is the
    median of these paired ratios, so a machine whose load drifts (a shared CPU) biases it little.
    """
    import torch

    from mdw_kit.distill.matching import time_plain_steps
    res = {}
    for mode in ("unroll", "constant_memory"):
        dist = _probe_distiller(root, settings, mode, settings["distill"]["syn_steps"])
        start = dist.buffer.trajectory(0)[0]
        iters_s, plain_s = [], []
        for it in range(1, iters + 1):
            t0 = time.perf_counter()
            dist.step(it)
            iters_s.append(time.perf_counter() - t0)
            plain_s.append(time_plain_steps(dist.model, dist.syn, start, dist.cfg.syn_steps, dist.cfg.batch_syn,
                                            generator=torch.Generator().manual_seed(it)))
        ratios = sorted(a / b for a, b in zip(iters_s[1:], plain_s[1:]))  # iteration 1 also builds CEO maps
        backbone_s = [backbone_pass_time(dist) for _ in range(3)]
        res[mode] = {"ratio": ratios[len(ratios) // 2], "iteration_s": iters_s, "plain_steps_s": plain_s,
                     "backbone_fwd_bwd_s": backbone_s,
                     "iteration_over_backbone": sorted(iters_s[1:])[len(iters_s[1:]) // 2] / sorted(backbone_s)[1],
                     "iterations": iters, "syn_steps": dist.cfg.syn_steps, "budget": dist.cfg.num_pairs,
                     "batch_syn": dist.cfg.batch_syn}
    out.write_text(json.dumps(res, indent=2))


def backbone_pass_time(dist) -> float:
    """Seconds of one forward + backward of the whole image tower over the M synthetic images (to the pixels)."""
    x = dist.syn.images.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    dist.model.tower(x).sum().backward()
    return time.perf_counter() - t0


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child_memory(root: Path, settings: dict[str, Any], mode: str, syn_steps: int, out: Path,
                 iters: int = 3) -> None:
    """Peak RSS growth over the set-up during the first ``iters`` iterations (VmHWM reset after set-up).

    The window starts before the first iteration: memory the allocator keeps after a step would
    otherwise hide that step's peak from a later window.
    """
    import gc
    dist = _probe_distiller(root, settings, mode, syn_steps)
    gc.collect()
    base = _rss_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    for it in range(1, iters + 1):
        dist.step(it)
    peak = _rss_kib("VmHWM")
    out.write_text(json.dumps({"mode": mode, "syn_steps": syn_steps, "base_rss_mib": (base or 0) / 1024,
                               "peak_rss_mib": (peak or 0) / 1024, "peak_reset": reset,
                               "growth_mib": ((peak or 0) - (base or 0)) / 1024,
                               "budget": dist.cfg.num_pairs, "batch_syn": dist.cfg.batch_syn}))


# ------------------------------------------------------------------ orchestration
def cells(settings: dict[str, Any]) -> list[tuple[float, str, int | None]]:
    """(noise, method, budget) of every cell; references once per noise rate."""
    from mdw_kit.distill.methods import METHODS
    out = []
    for noise in settings["noise"]:
        for method in settings["methods"]:
            budgets = [None] if METHODS[method].kind == "reference" else settings["budgets"]
            out.extend((noise, method, b) for b in budgets)
    return out


def cell_distill_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The DistillConfig overrides a cell runs with (the settings' plus quiet, frequent checkpoints)."""
    return dict(settings["distill"], progress=False, checkpoint_every=25)


def stale_distill_config(old: dict[str, Any] | None, method: str, budget: int | None,
                         distill: dict[str, Any] | None) -> bool:
    """Whether a stored distillation config differs from what ``method`` would run with now.

    Only the settings that change a result count (``_result_relevant``); a field the stored
    config lacks (added to DistillConfig since) counts as its default. So a changed default
    of DistillConfig retires the cells made with the old one, and a new field at its default
    retires nothing.
    """
    from mdw_kit.distill.methods import METHODS, _result_relevant
    spec = METHODS[method]
    if spec.kind != "distill" or old is None or distill is None or budget is None:
        return False
    now = spec.distill_config(budget, distill)
    return bool(now.changed_fields(old, keys=list(_result_relevant(now))))


def retire_stale_cell(d: Path, method: str, budget: int | None = None,
                      distill: dict[str, Any] | None = None) -> Path | None:
    """Move a cell aside when its result was made by another definition of ``method``.

    The cell folder's name hashes the settings, not the method's switches or the library's
    defaults, so a method whose definition changed (say its default start), or a distillation
    default that changed, would otherwise be read from the old result. With ``distill`` (the
    cell's DistillConfig overrides) and ``budget``, the stored distillation config is checked
    too (:func:`stale_distill_config`). The old folder is kept beside it as
    ``<name>-stale-<hash>``; nothing is deleted.
    """
    from mdw_kit.distill.methods import METHODS, MethodSpec
    from mdw_kit.runs import read_json
    f = d / "result.json"
    if not f.exists():
        return None
    old = read_json(f)
    old_spec = old.get("spec") or {}
    try:
        old_fields = MethodSpec(**old_spec).result_fields()
    except (TypeError, ValueError):  # a spec this version cannot read: treat it as another definition
        old_fields = None
    old_config = (old.get("distill") or {}).get("config")
    if old_fields == METHODS[method].result_fields():
        if not stale_distill_config(old_config, method, budget, distill):
            return None
        why, tag = "other distillation settings", short_hash({"spec": old_spec, "config": old_config})
    else:
        why, tag = f"another definition of {method!r}", short_hash(old_spec)
    dest = d.with_name(f"{d.name}-stale-{tag}")
    if dest.exists():
        raise FileExistsError(f"{d}: its result is from {why}, and {dest} already exists; move one of them away")
    d.rename(dest)
    print(f"cell {d.name}: made by {why}; moved to {dest.name}", flush=True)
    return dest


def run_all(root: Path, settings: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build buffers per noise rate, run missing cells in child processes, collect every result."""
    from mdw_kit.runs import read_json
    results = []
    for noise in settings["noise"]:
        todo = [c for c in cells(settings) if c[0] == noise]
        if any(not (cell_dir(root, settings, *c) / "result.json").exists() for c in todo):
            ensure_buffers(root, settings, noise)
        for _, method, budget in todo:
            d = cell_dir(root, settings, noise, method, budget)
            retire_stale_cell(d, method, budget, cell_distill_options(settings))
            if not (d / "result.json").exists():
                t0 = time.perf_counter()
                print(f"cell noise={noise:g} {method} M={budget} ...", flush=True)
                rc = run_child("cell", {"root": str(root), "settings": settings, "noise": noise,
                                        "method": method, "budget": budget}, args, d / "cell.log")
                status = "done" if rc == 0 else f"FAILED (exit {rc}, see {d / 'cell.log'})"
                print(f"  {status} in {time.perf_counter() - t0:.0f} s", flush=True)
            if (d / "result.json").exists():
                results.append(dict(read_json(d / "result.json"), noise=noise, cell_dir=str(d)))
    return results


def run_probes(root: Path, settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Iteration cost (one child) and memory at N = 10 / 40 in both modes (one child each)."""
    probes = root / "probes" / short_hash(settings)
    probes.mkdir(parents=True, exist_ok=True)
    base = {"root": str(root), "settings": settings}
    cost = probes / f"cost-v{PROBE_VERSION}.json"
    if not cost.exists():
        print("probe: iteration cost vs plain steps ...", flush=True)
        run_child("cost", dict(base, out=str(cost)), args, probes / "probe.log")
    memory = {}
    for mode in ("constant_memory", "unroll"):
        for n in (10, 40):
            f = probes / f"memory-{mode}-N{n}.json"
            if not f.exists():
                print(f"probe: memory {mode} N={n} ...", flush=True)
                run_child("memory", dict(base, mode=mode, syn_steps=n, out=str(f)), args, probes / "probe.log")
            if f.exists():
                memory[f"{mode}_N{n}"] = json.loads(f.read_text())
    return {"cost": json.loads(cost.read_text()) if cost.exists() else None, "memory": memory}


# ------------------------------------------------------------------ summary
def _rsum(results: list[dict], noise: float, method: str, budget: int | None) -> float | None:
    for r in results:
        if r["noise"] == noise and r["method"] == method and r["budget"] == budget:
            return r["mean"]["R-sum"]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per cell: metrics, R-sum mean +- sd, ratios to LoRS / random, costs."""
    rows = []
    for r in sorted(results, key=lambda r: (r["noise"], r["budget"] or 0, ALL_METHODS.index(r["method"]))):
        d = r.get("distill") or {}
        rsum = r["mean"]["R-sum"]
        rows.append({"noise": f"{r['noise']:.0%}", "M": "all" if r["budget"] is None else str(r["budget"]),
                     "method": r["method"], **{k: r["mean"][k] for k in METRICS},
                     "R-sum": (rsum, r["sd"]["R-sum"]),
                     "x LoRS": _ratio(rsum, _rsum(results, r["noise"], "lors", r["budget"])),
                     "x random": _ratio(rsum, _rsum(results, r["noise"], "random", r["budget"])),
                     "s/iter": d.get("time_per_iteration_s"), "iter/plain": d.get("iteration_over_plain"),
                     "peak MiB": r.get("peak_rss_mib")})
    return rows


def _target(name: str, value: float | None, threshold: float, higher: bool = True) -> dict[str, Any]:
    met = None if value is None else (value >= threshold if higher else value <= threshold)
    return {"target": name, "value": value, "threshold": threshold, "met": met}


def targets(results: list[dict], settings: dict[str, Any], probes: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's targets, each met / missed / null (not measured)."""
    R = lambda n, m, b: _rsum(results, n, m, b)  # noqa: E731
    out = []
    for b in settings["budgets"]:
        mdw = R(0.5, "mdw", b)
        out.append(_target(f"50% noise, M={b}: MDW / LoRS >= 1.15", _ratio(mdw, R(0.5, "lors", b)), 1.15))
        out.append(_target(f"50% noise, M={b}: MDW / MTT-VL >= 1.15", _ratio(mdw, R(0.5, "mtt_vl", b)), 1.15))
        out.append(_target(f"50% noise, M={b}: MDW / clean_random >= 1.5",
                           _ratio(mdw, R(0.5, "clean_random", b)), 1.5))
        out.append(_target(f"0% noise, M={b}: MDW / LoRS >= 0.98", _ratio(R(0.0, "mdw", b), R(0.0, "lors", b)),
                           0.98))
    out.append(_target("MDW M=100 at 50% / MTT-VL M=100 at 0% >= 0.9",
                       _ratio(R(0.5, "mdw", 100), R(0.0, "mtt_vl", 100)), 0.9))
    out.append(_target("MDW M=200 at 50% / full noisy data at 50% >= 1.0",
                       _ratio(R(0.5, "mdw", 200), R(0.5, "full_noisy", None)), 1.0))
    cost = (probes.get("cost") or {})
    for mode in ("unroll", "constant_memory"):
        out.append(_target(f"{mode}: iteration / plain steps <= 3", (cost.get(mode) or {}).get("ratio"), 3.0,
                           higher=False))
    mem = probes.get("memory") or {}
    a, b = mem.get("constant_memory_N40"), mem.get("constant_memory_N10")
    growth = _ratio(a["growth_mib"], b["growth_mib"]) if a and b else None
    out.append(_target("constant memory: peak growth N=40 / N=10 <= 1.1", growth, 1.1, higher=False))
    return out


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "cuda": torch.cuda.is_available()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    settings = build_settings(args)
    root = work_dir(args)
    t0 = time.perf_counter()
    results = run_all(root, settings, args)
    probes = {} if args.skip_costs else run_probes(root, settings, args)
    from mdw_kit.evaluate import format_table
    rows = table_rows(results)
    table = format_table(rows, digits=2) if rows else "(no finished cells)"
    tg = targets(results, settings, probes)
    print("\n" + table + "\n")
    for t in tg:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        val = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"  [{mark:>12}] {t['target']}: {val}")
    out = args.out or ROOT / "benchmarks" / "results" / ("distill_quick.json" if args.quick else "distill.json")
    report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
              "settings": settings, "work_dir": str(root), "environment": environment(args),
              "wall_time_s": time.perf_counter() - t0, "table": table, "targets": tg, "probes": probes,
              "cells": [{k: v for k, v in r.items() if k not in ("per_seed",)} | {"per_seed": [
                  {k: v for k, v in s.items() if k != "history"} for s in r.get("per_seed", [])]}
                  for r in results]}
    from mdw_kit.runs import write_json
    write_json(out, report)
    print(f"\nwrote {out}")
    return 0


def child_main(args: argparse.Namespace) -> int:
    p = json.loads(args.child_args)
    root, settings = Path(p["root"]), p["settings"]
    if args.child == "cell":
        child_cell(root, settings, p["noise"], p["method"], p["budget"])
    elif args.child == "cost":
        child_cost(root, settings, Path(p["out"]))
    else:
        child_memory(root, settings, p["mode"], p["syn_steps"], Path(p["out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
