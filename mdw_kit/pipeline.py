"""The main job: :class:`PipelineConfig` (a preset plus overrides) and :func:`run_pipeline`, which runs
every stage through :mod:`mdw_kit.stages` and writes the run folder, its table and its HTML report.

``DataBundle`` and the raw loader ``prepare_data`` live in :mod:`mdw_kit.data.bundle` (they are
importable from here too).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .data.bundle import DataBundle, HashTextEncoder, get_text_encoder, prepare_data, save_data_record  # noqa: F401
from .runs import RunDir


# ---------------------------------------------------------------------------------- pipeline
@dataclass
class PipelineConfig:
    """The README's main job: a preset (:mod:`mdw_kit.presets`) with overrides.

    ``None`` fields keep the preset's value; ``quick=True`` means the ``smoke`` preset. A
    ``source`` other than the preset's starts from empty source options (``source_options``
    gives them); ``model`` holds :class:`~mdw_kit.models.ModelConfig` fields (e.g.
    ``{"tower": "convnet3"}``). :meth:`resolved` is the whole preset the run uses, written to
    the run folder's ``config.json``.

    Example:
        >>> PipelineConfig(budget=200).resolved()["distill"]["budget"]
        200
        >>> PipelineConfig(quick=True).resolved()["distill"]["config"]["iterations"] < 50
        True
    """

    preset: str = "default"
    source: str | None = None
    noise: float | None = None
    budget: int | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    encoder: str | None = None
    iterations: int | None = None
    expert_epochs: int | None = None
    expert_runs: int | None = None
    eval_epochs: int | None = None
    seeds: tuple[int, ...] | None = None
    baselines: tuple[str, ...] | None = None
    distill_overrides: dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def resolved(self) -> dict[str, Any]:
        """The preset with every given field laid over it."""
        from .presets import load_preset, merge
        p = load_preset("smoke" if self.quick else self.preset)
        data = dict(p["data"])
        if self.source is not None and self.source != data.get("source"):
            data = {**data, "source": self.source, "options": {}}
        data["options"] = {**data.get("options", {}), **self.source_options}
        over: dict[str, Any] = {"data": {k: v for k, v in (("noise", self.noise), ("encoder", self.encoder))
                                         if v is not None}, "model": dict(self.model),
                                "experts": {"dual_track": {}}, "distill": {"config": dict(self.distill_overrides)},
                                "eval": {"config": {}}}
        if self.expert_epochs is not None:
            over["experts"]["dual_track"]["epochs"] = self.expert_epochs
        if self.expert_runs is not None:
            over["experts"]["runs"] = self.expert_runs
        if self.budget is not None:
            over["distill"]["budget"] = self.budget
        if self.iterations is not None:
            over["distill"]["config"]["iterations"] = self.iterations
        if self.eval_epochs is not None:
            over["eval"]["config"]["epochs"] = self.eval_epochs
        if self.seeds is not None:
            over["eval"]["seeds"] = list(self.seeds)
        if self.baselines is not None:
            over["baselines"] = list(self.baselines)
        from .presets import model_section
        out = merge({**p, "data": data, "model": model_section(p["model"], over.pop("model"))}, over)
        from .distill.distiller import merge_iterations
        out["distill"]["config"] = merge_iterations(p["distill"].get("config", {}), over["distill"]["config"])
        d, e = out["distill"]["config"], out["experts"]["dual_track"]
        if "max_start_epoch" in d and "epochs" in e:  # leave room for the matched segment
            d["max_start_epoch"] = max(1, min(d["max_start_epoch"], e["epochs"] - d.get("segment_epochs", 2)))
        return out


def _distill_history_figure(history: list[dict]):
    from .viz import plot_curves
    panels: dict[str, Any] = {"matching loss": [(h["iteration"], h["loss"]) for h in history
                                                if h.get("loss") is not None]}
    eta = [(h["iteration"], h["eta"]) for h in history if isinstance(h.get("eta"), dict)]
    if eta:
        panels["student rates"] = {g: [(i, e[g]) for i, e in eta] for g in eta[0][1]}
    return plot_curves(panels, title="distillation")


def _say(run: RunDir, t0: float, msg: str) -> None:
    line = f"{msg}  (t={time.time() - t0:.0f}s)"
    print(line, flush=True)
    run.log(line)


def _result_rows(results: dict[str, Any], budget: int, reference: str = "clean_random") -> list[dict]:
    """One table row per method; ``x <reference>`` is its R-sum over the reference's."""
    ref = results.get(reference, {}).get("mean", {}).get("R-sum")
    rows = []
    for k, v in results.items():
        pairs = v.get("selection", {}).get("num_pairs", budget) if v.get("kind") == "reference" else budget
        row = {"method": k, "pairs": pairs, **{m: (v["mean"][m], v["sd"][m]) for m in METRICS}}
        if ref:
            row[f"x {reference}"] = v["mean"]["R-sum"] / ref
        rows.append(row)
    return rows


def run_pipeline(out: str | Path, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Run the whole pipeline into ``out`` through the stage API (resumable) and write the report.

    Stages: data (with cached backbone features) -> dual-track experts and their noise report ->
    MDW distillation -> evaluation of MDW and the preset's baselines (coresets, all noisy
    pairs) on the same protocol -> ``report.html``, ``summary.txt``, ``metrics.json``.
    """
    from . import stages
    from .evaluation.metrics import format_table

    cfg = cfg or PipelineConfig()
    p = cfg.resolved()
    run = RunDir(out)
    run.write_json("config.json", {"command": "pipeline", "preset": p, "overrides": cfg.__dict__})
    t_start = time.time()
    run.log(f"pipeline start: {cfg}")
    d = p["data"]
    _say(run, t_start, f"[1/5] data: {d['source']}, {d['noise']:.0%} caption noise, {p['model']['tower']} features")
    data = stages.prepare_data(preset=p)
    save_data_record(run, data)
    e = p["experts"]
    _say(run, t_start, f"[2/5] dual-track experts: {e['runs']} run(s) x 2 tracks x {e['dual_track']['epochs']} epochs")
    buf = stages.build_buffer(data, Path(run.path) / "experts", preset=p)
    report = dataclasses.replace(buf.consensus, captions=list(data.train.captions),
                                 image_ids=[data.train.image_ids[int(i)] for i in data.train.pair_image])
    report.save(run.path)
    budget = p["distill"]["budget"]
    dist = stages.distiller(data, buf, run_dir=Path(run.path) / "distill", preset=p)
    _say(run, t_start, f"[3/5] MDW distillation: {budget} pairs, {dist.cfg.iterations} iterations")
    syn = dist.run()
    run.write_json("distill/history.json", dist.history)
    _say(run, t_start, f"[4/5] evaluation: fresh models on MDW and {len(p['baselines'])} baselines, "
                       f"seeds {p['eval']['seeds']}")
    results = {"mdw": {"kind": "distill", **stages.evaluate(syn, data, preset=p)}}
    for name in p["baselines"]:
        results[name] = stages.run_method(name, data, budget, {"dual_track": buf}, preset=p,
                                          run_dir=Path(run.path) / "baselines" / name)
        _say(run, t_start, f"      {name}: R-sum {results[name]['mean']['R-sum']:.1f}")
    rows = _result_rows(results, budget)
    summary = {"config": p, "data": data.info, "noise_report": report.summary(),
               "distill": {**dist.summary(), "config": dist.cfg.to_dict()},
               "results": {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in results.items()},
               "wall_time_s": round(time.time() - t_start, 1)}
    run.write_json("metrics.json", summary)
    table = format_table(rows)
    (run.path / "summary.txt").write_text(table + "\n")
    print(table)
    _say(run, t_start, "[5/5] report and exports")
    _write_pipeline_report(run, data, report, buf, dist, syn, rows, summary)
    print(f"done in {summary['wall_time_s']:.0f} s: {run.path / 'report.html'}")
    return summary


METRICS = ["TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "R-sum"]


def _write_pipeline_report(run: RunDir, data: DataBundle, report, buf, dist, syn, rows, summary) -> None:
    import torch as _t

    from .distill.export import export_png
    from .report import HtmlReport
    from .viz import plot_correspondence, plot_noise_histograms, plot_region

    rep = HtmlReport("mdw-kit pipeline report")
    rep.add_text(f"Source {data.info['source']}: {data.info['train_pairs']} training pairs "
                 f"({data.info['train_noise_rate']:.0%} mismatched by injected noise), "
                 f"{data.info['val_pairs']} val, {data.info['test_pairs']} test pairs. "
                 f"Total wall time {summary['wall_time_s']:.0f} s.")
    rep.add_heading("Results (test retrieval, epoch chosen on val; mean ± sd over seeds)")
    rep.add_table(rows)
    rep.add_heading("Stage 1: dual-track noise detection")
    s = report.summary()
    rep.add_table([{k: v for k, v in s.items() if isinstance(v, (int, float))}], digits=3)
    p = _t.as_tensor(report.p_clean)
    fig = plot_noise_histograms({"consensus clean probability": p.numpy()}, true_clean=report.true_clean,
                                xlabel="clean probability", threshold=report.threshold)
    rep.add_figure(fig, "consensus clean probability of every training pair, split by the ground truth")
    from .experts.mismatch import buffer_states, mismatch_report
    mc = data.model_config
    table = mismatch_report(report, buffer_states(buf, mc.build), mc.build, data.train.pair_inputs(),
                            data.train_text, out_dir=run.path)
    rep.add_heading("The pairs most likely mismatched (ranked by noise score)")
    rep.add_mismatch_table(table, images=data.train.images[data.train.pair_image])
    rep.add_heading("Stage 3: trajectory matching")
    rep.add_figure(_distill_history_figure(dist.history), "matching loss and learned student rates")
    rep.add_heading("Learned correspondence")
    init = _t.eye(syn.num_pairs)
    rep.add_figure(plot_correspondence(syn.targets().numpy(), init.numpy()), "learned P~ vs its start")
    rep.add_heading("Stage 4: emphasised regions (CEO maps)")
    caps = syn.nearest_captions(data.train_text, data.train.captions, 1)
    for i in range(min(6, syn.num_pairs)):
        region = syn.maps[i] if syn.maps is not None else _t.zeros(syn.image_size, syn.image_size)
        rep.add_figure(plot_region(syn.images[i].detach().clamp(0, 1), region, syn.init_images[i],
                                   title=f"{caps[i][0][0]} (cos {caps[i][0][1]:.2f})"),
                       f"synthetic pair {i}")
    export_png(syn, run.path / "distilled_png", data.train_text, data.train.captions)
    rep.save(run.path / "report.html")
