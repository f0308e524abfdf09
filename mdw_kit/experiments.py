"""Experiment grids: every (noise rate, method, budget) cell of a comparison, cached and resumable.

A grid is described by plain JSON *settings* (:func:`grid_settings`: a preset's data, model,
expert, distillation and evaluation sections, plus the noise rates, budgets, methods and seeds
to cover). For each noise rate the dual-track and naive expert buffers are built once through
:func:`mdw_kit.stages.build_buffer` and cached under a work folder; every cell then runs in its
own process (its peak memory is its own) through :func:`mdw_kit.stages.run_method` and leaves
``result.json`` in its folder, so a rerun skips finished cells and a killed distillation resumes
from its checkpoint. Folder names carry a hash of the settings: changed settings get fresh cells,
and a cell whose stored method definition or distillation settings differ from today's is moved
aside (:func:`retire_stale_cell`), never silently reused.

The benchmark scripts (``benchmarks/bench_distill.py``) are thin wrappers over :func:`run_grid`
and :func:`headline_rows`.

Example:
    >>> s = grid_settings("smoke", noise=[0.5], budgets=[20], methods=["random", "mdw", "full_noisy"])
    >>> [(n, m, b) for n, m, b in cells(s)]
    [(0.5, 'random', 20), (0.5, 'mdw', 20), (0.5, 'full_noisy', None)]
    >>> s["distill"]["iterations"], s["experts"]["num_runs"]
    (6, 1)
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

METRICS = ["TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10"]
HEADLINE_METHODS = ["random", "herding", "kcenter", "clean_random", "mtt_vl", "lors", "mdw", "mdw_no_dual",
                    "mdw_no_ceo", "mdw_no_corr", "full_noisy", "clean_oracle"]
_SETTINGS_KEYS = ("source", "source_options", "encoder", "noise_seed", "model")


def short_hash(obj: Any) -> str:
    """Ten hex digits of the SHA-256 of ``obj`` as sorted JSON (names folders after their settings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


# ------------------------------------------------------------------ settings
def grid_settings(preset: str | Mapping[str, Any] = "default", *, noise: Sequence[float] | None = None,
                  budgets: Sequence[int] | None = None, methods: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None, source: str | None = None,
                  source_options: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
                  encoder: str | None = None, experts: Mapping[str, Any] | None = None,
                  distill: Mapping[str, Any] | None = None, eval: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything that decides a grid's results, as plain JSON: the preset's sections with overrides.

    ``experts`` may set ``epochs``, ``warmup_epochs``, ``num_runs`` and ``options`` (other
    :class:`~mdw_kit.experts.dual_track.DualTrackConfig` fields of the dual-track buffer);
    ``distill`` and ``eval`` are DistillConfig / EvalConfig fields over the preset's. Unknown
    methods are an error naming them.
    """
    from mdw_kit.distill.methods import METHODS
    from mdw_kit.presets import load_preset, model_section
    p = dict(preset) if isinstance(preset, Mapping) else load_preset(preset)
    data = p.get("data", {})
    src = source or data.get("source", "openmoji")
    opts = dict(data.get("options", {})) if src == data.get("source", "openmoji") else {}
    opts.update(source_options or {})
    mdl = model_section(dict(p.get("model", {})), dict(model or {}))
    if mdl.get("tower", "").startswith("convnet"):
        mdl.pop("train_layers", None)
    if "image_size" in opts:
        mdl["image_size"] = int(opts["image_size"])
    dual = dict(p.get("experts", {}).get("dual_track", {}))
    ex = dict(experts or {})
    options = {**{k: v for k, v in dual.items() if k not in ("epochs", "warmup_epochs")}, **ex.pop("options", {})}
    clash = sorted(set(options) & {"epochs", "warmup_epochs", "naive", "num_runs"})
    if clash:
        raise ValueError(f"expert options cannot set {', '.join(clash)} (they are grid settings of their own; "
                         "the naive buffer is built alongside)")
    exp = {"epochs": int(ex.pop("epochs", dual.get("epochs", 10))),
           "warmup_epochs": int(ex.pop("warmup_epochs", dual.get("warmup_epochs", 2))),
           "num_runs": int(ex.pop("num_runs", p.get("experts", {}).get("runs", 2)))}
    if ex:
        raise ValueError(f"unknown expert settings {sorted(ex)}; known: epochs, warmup_epochs, num_runs, options")
    if options:
        exp["options"] = options
    from mdw_kit.distill.distiller import merge_iterations
    dist = merge_iterations(dict(p.get("distill", {}).get("config", {})), dict(distill or {}))
    ev = {**p.get("eval", {}).get("config", {}), **(eval or {})}
    methods = list(methods or HEADLINE_METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    return {"source": src, "source_options": opts, "encoder": encoder or data.get("encoder", "minilm"),
            "noise_seed": int(data.get("noise_seed", 0)), "model": mdl, "experts": exp, "distill": dist,
            "eval": ev, "seeds": [int(s) for s in (seeds or p.get("eval", {}).get("seeds", [0, 1, 2]))],
            "noise": [float(n) for n in (noise if noise is not None else [data.get("noise", 0.5)])],
            "budgets": [int(b) for b in (budgets or [p.get("distill", {}).get("budget", 100)])],
            "methods": methods}


def cells(settings: Mapping[str, Any]) -> list[tuple[float, str, int | None]]:
    """(noise, method, budget) of every cell; references (budget-free) once per noise rate."""
    from mdw_kit.distill.methods import METHODS
    out = []
    for noise in settings["noise"]:
        for method in settings["methods"]:
            budgets = [None] if METHODS[method].kind == "reference" else settings["budgets"]
            out.extend((noise, method, b) for b in budgets)
    return out


# ------------------------------------------------------------------ data and buffers
def load_data(settings: Mapping[str, Any], noise: float):
    """The bundle of one noise rate through the stage API (the settings' model, cached backbone features)."""
    from mdw_kit import stages
    return stages.prepare_data(settings["source"], noise, noise_seed=settings["noise_seed"],
                               options=settings["source_options"], encoder=settings["encoder"],
                               model=settings["model"], preset={})


def expert_settings(settings: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The expert settings that decide a ``kind`` buffer: the naive experts leave out the
    dual-track-only ``options`` (they have no noise handling to configure)."""
    e = settings["experts"]
    return dict(e) if kind == "dual_track" else {k: v for k, v in e.items() if k != "options"}


def buffer_dirs(root: Path, settings: Mapping[str, Any], noise: float) -> dict[str, Path]:
    """One folder per kind, keyed by the data, the model and :func:`expert_settings`."""
    base = {k: settings[k] for k in _SETTINGS_KEYS}
    return {kind: Path(root) / "buffers" / f"noise{noise:g}" /
            f"{kind}-{short_hash({**base, 'experts': expert_settings(settings, kind)})}"
            for kind in ("dual_track", "naive")}


def expert_config(settings: Mapping[str, Any], kind: str):
    """The :class:`~mdw_kit.experts.dual_track.DualTrackConfig` of a ``kind`` buffer."""
    from mdw_kit.experts.dual_track import DualTrackConfig
    e = expert_settings(settings, kind)
    return DualTrackConfig.from_dict({"epochs": e["epochs"], "warmup_epochs": e["warmup_epochs"],
                                      **e.get("options", {}), "naive": kind == "naive", "progress": False})


def ensure_buffers(root: Path, settings: Mapping[str, Any], noise: float, data=None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or load) the dual-track and naive buffers of one noise rate; a half-built one resumes."""
    from mdw_kit import stages
    from mdw_kit.experts.buffer import load_buffer
    data = data or load_data(settings, noise)
    out = {}
    for kind, path in buffer_dirs(root, settings, noise).items():
        if (path / "consensus.safetensors").exists():
            try:
                out[kind] = load_buffer(path, data_fingerprint=data.fingerprint())
                continue
            except Exception as e:  # noqa: BLE001 - an unusable buffer is rebuilt (its runs resume)
                log(f"buffer {path} not usable ({e}); building")
        t0 = time.perf_counter()
        log(f"building {kind} buffer at noise {noise:g} in {path}")
        out[kind] = stages.build_buffer(data, path, expert_config(settings, kind),
                                        runs=settings["experts"]["num_runs"], progress=False)
        took = time.perf_counter() - t0
        path.mkdir(parents=True, exist_ok=True)
        (path / "build_time.json").write_text(json.dumps({"seconds": took, "runs": settings["experts"]["num_runs"]}))
        log(f"  done in {took:.0f} s")
    return out


def buffer_build_times(root: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Seconds each buffer of the grid took to build (``{"noise0.5/dual_track": s, ...}``; those built here)."""
    out = {}
    for noise in settings["noise"]:
        for kind, path in buffer_dirs(root, settings, noise).items():
            f = path / "build_time.json"
            if f.exists():
                out[f"noise{noise:g}/{kind}"] = json.loads(f.read_text())["seconds"]
    return out


# ------------------------------------------------------------------ cells
def cell_dir(root: Path, settings: Mapping[str, Any], noise: float, method: str, budget: int | None) -> Path:
    """The folder of one cell, named after the method, budget and a hash of the settings that decide it."""
    key = short_hash({k: settings[k] for k in (*_SETTINGS_KEYS, "experts", "distill", "eval", "seeds")})
    name = f"{method}-M{budget}" if budget is not None else method
    return Path(root) / "cells" / f"noise{noise:g}" / f"{name}-{key}"


def cell_distill_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The DistillConfig overrides a cell runs with (the settings' plus quiet, frequent checkpoints)."""
    return dict(settings["distill"], progress=False, checkpoint_every=25)


def run_cell(root: Path, settings: Mapping[str, Any], noise: float, method: str, budget: int | None) -> dict:
    """Run one cell in this process through the stage API; ``result.json`` lands in its folder."""
    from mdw_kit import stages
    data = load_data(settings, noise)
    buffers = ensure_buffers(root, settings, noise, data)
    d = cell_dir(root, settings, noise, method, budget)
    return stages.run_method(method, data, budget, buffers, distill_config=cell_distill_options(settings),
                             eval_config=settings["eval"], seeds=settings["seeds"], run_dir=d, preset={})


def stale_distill_config(old: Mapping[str, Any] | None, method: str, budget: int | None,
                         distill: Mapping[str, Any] | None) -> bool:
    """Whether a stored distillation config differs from what ``method`` would run with now.

    Only the settings that change a result count; a field the stored config lacks (added since)
    counts as its default, so a changed default retires the cells made with the old one and a
    new field at its default retires nothing.
    """
    from mdw_kit.distill.methods import METHODS, result_relevant
    spec = METHODS[method]
    if spec.kind != "distill" or old is None or distill is None or budget is None:
        return False
    now = spec.distill_config(budget, distill)
    return bool(now.changed_fields(dict(old), keys=list(result_relevant(now))))


def retire_stale_cell(d: Path, method: str, budget: int | None = None,
                      distill: Mapping[str, Any] | None = None,
                      log: Callable[[str], None] = print) -> Path | None:
    """Move a cell aside when its result was made by another definition of ``method``.

    The folder's name hashes the settings, not the method's switches or the library's defaults,
    so a method whose definition changed, or a distillation default that changed, would otherwise
    be read from the old result. With ``distill`` (the cell's DistillConfig overrides) and
    ``budget`` the stored distillation config is checked too (:func:`stale_distill_config`). The
    old folder is kept beside it as ``<name>-stale-<hash>``; nothing is deleted.
    """
    from mdw_kit.distill.methods import METHODS, MethodSpec
    from mdw_kit.runs import read_json
    d = Path(d)
    f = d / "result.json"
    if not f.exists():
        return None
    old = read_json(f)
    old_spec = old.get("spec") or {}
    try:
        old_fields = MethodSpec(**old_spec).result_fields()
    except (TypeError, ValueError):  # a spec this version cannot read: another definition
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
    log(f"cell {d.name}: made by {why}; moved to {dest.name}")
    return dest


def run_child(payload: Mapping[str, Any], log_file: Path, threads: int = 1) -> int:
    """Run one cell in a fresh process (``python -m mdw_kit.experiments``); its output goes to ``log_file``."""
    cmd = [sys.executable, "-m", "mdw_kit.experiments", json.dumps(dict(payload)), "--threads", str(threads)]
    here = str(Path(__file__).resolve().parents[1])  # the child imports this very copy of mdw_kit
    env = dict(os.environ, MDW_NO_PROGRESS=os.environ.get("MDW_NO_PROGRESS", "1"),
               PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def run_grid(root: Path, settings: Mapping[str, Any], threads: int = 1,
             order: Iterable[tuple[float, str, int | None]] | None = None,
             on_result: Callable[[list[dict[str, Any]]], None] | None = None,
             log: Callable[[str], None] = print, run_missing: bool = True) -> list[dict[str, Any]]:
    """Build the buffers, run the missing cells (each in a child process), collect every result.

    ``order`` runs the cells in another order (default :func:`cells`); ``on_result`` is called
    with all results so far after each cell, so a caller can write a partial table as it goes.
    Each result carries its ``noise``, ``cell_dir`` and ``time_s``. ``run_missing=False`` only
    collects the cells already done (a table of a grid that several processes share).
    """
    from mdw_kit.runs import read_json
    todo = list(order) if order is not None else cells(settings)
    results: list[dict[str, Any]] = []
    built: set[float] = set()
    for noise, method, budget in todo:
        d = cell_dir(root, settings, noise, method, budget)
        retire_stale_cell(d, method, budget, cell_distill_options(settings), log=log)
        if run_missing and not (d / "result.json").exists():
            if noise not in built:
                ensure_buffers(root, settings, noise, log=log)
                built.add(noise)
            t0 = time.perf_counter()
            log(f"cell noise={noise:g} {method} M={budget} ...")
            rc = run_child({"root": str(root), "settings": dict(settings), "noise": noise, "method": method,
                            "budget": budget}, d / "cell.log", threads)
            status = "done" if rc == 0 else f"FAILED (exit {rc}, see {d / 'cell.log'})"
            log(f"  {status} in {time.perf_counter() - t0:.0f} s")
        if (d / "result.json").exists():
            results.append(dict(read_json(d / "result.json"), noise=noise, cell_dir=str(d)))
            if on_result is not None:
                on_result(results)
    return results


# ------------------------------------------------------------------ tables
def find(results: Sequence[Mapping[str, Any]], noise: float, method: str, budget: int | None):
    """The result of one cell, or ``None``."""
    for r in results:
        if r["noise"] == noise and r["method"] == method and r["budget"] == budget:
            return r
    return None


def rsum(results: Sequence[Mapping[str, Any]], noise: float, method: str, budget: int | None) -> float | None:
    """Mean R-sum of one cell, or ``None`` when it did not run."""
    r = find(results, noise, method, budget)
    return None if r is None else r["mean"]["R-sum"]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def headline_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: ``noise, budget, method, rsum_mean, rsum_sd, seeds`` (each seed's test R-sum),
    ``val_rsum_mean``, the six recall metrics, ``time_s`` and ``peak_rss_mib``; sorted by noise,
    budget and method."""
    rank = {m: i for i, m in enumerate(HEADLINE_METHODS)}
    rows = []
    for r in sorted(results, key=lambda r: (r["noise"], r["budget"] or 0, rank.get(r["method"], 99), r["method"])):
        seeds = r.get("per_seed") or []
        rows.append({"noise": r["noise"], "budget": r["budget"], "method": r["method"],
                     "rsum_mean": r["mean"]["R-sum"], "rsum_sd": r["sd"]["R-sum"],
                     "seeds": [(s.get("test") or {}).get("R-sum") for s in seeds],
                     "seed_ids": [s.get("seed") for s in seeds],
                     "val_rsum_mean": (r.get("val_mean") or {}).get("R-sum"),
                     **{k: r["mean"].get(k) for k in METRICS},
                     "time_s": r.get("time_s"), "peak_rss_mib": r.get("peak_rss_mib")})
    return rows


def _child_main(argv: Sequence[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m mdw_kit.experiments", description="run one grid cell")
    p.add_argument("payload", help="JSON: root, settings, noise, method, budget")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    c = json.loads(a.payload)
    r = run_cell(Path(c["root"]), c["settings"], c["noise"], c["method"], c["budget"])
    print(f"{c['method']} M={c['budget']} noise={c['noise']:g}: R-sum {r['mean']['R-sum']:.1f} "
          f"+- {r['sd']['R-sum']:.1f}", flush=True)
    return 0


__all__ = ["grid_settings", "cells", "load_data", "buffer_dirs", "expert_config", "ensure_buffers", "cell_dir",
           "cell_distill_options", "run_cell", "buffer_build_times", "stale_distill_config", "retire_stale_cell", "run_grid",
           "headline_rows", "find", "rsum", "ratio", "short_hash", "HEADLINE_METHODS", "METRICS"]

if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
