"""The stage API: one public function per stage, the way every caller goes through the pipeline.

``prepare_data`` -> ``noise_report`` / ``build_buffer`` -> ``distill`` -> ``evaluate`` -> ``export``.
Each takes the :class:`~mdw_kit.data.bundle.DataBundle` that :func:`prepare_data` returns: it
carries the model configuration and, for a frozen pretrained backbone (the default regime,
EfficientNet-Lite0 with ImageNet weights), the cached backbone features of every real image
(:mod:`mdw_kit.features`), so expert training, noise scoring, coresets and evaluation train
the heads on features while distillation backpropagates through the backbone to the pixels.
Settings come from a preset (:mod:`mdw_kit.presets`) with keyword overrides.

Example:
    >>> import mdw_kit as mk
    >>> data = mk.prepare_data("shapes", noise=0.3, options={"num_images": 60, "image_size": 32},
    ...                        encoder="hash", preset="smoke")
    >>> data.model_config.tower, data.train.pair_inputs().shape[1]
    ('efficientnet_lite0', 1280)
    >>> report = mk.noise_report(data, {"epochs": 2, "warmup_epochs": 1})
    >>> len(report.p_clean) == len(data.train)
    True
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mdw_kit.presets import load_preset, model_section

__all__ = ["prepare_data", "model_config", "dual_track_config", "noise_report", "build_buffer", "distiller", "distill",
           "evaluate", "run_method", "export"]


def _preset(preset: str | Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(preset) if isinstance(preset, Mapping) else load_preset(preset or "default")


def model_config(data: Any, model: Any = None, preset: str | Mapping[str, Any] | None = None) -> Any:
    """The :class:`~mdw_kit.models.ModelConfig` for ``data``: ``model`` (a config, its dict or a tower
    name) over the preset's ``model`` section, at the data's image size and text dimension.

    Example:
        >>> from mdw_kit.data.bundle import prepare_data as raw
        >>> d = raw("shapes", source_options={"num_images": 12, "image_size": 32}, encoder="hash")
        >>> model_config(d, "convnet3").tower, model_config(d).train_layers
        ('convnet3', 'none')
    """
    from mdw_kit.models import ModelConfig
    if isinstance(model, ModelConfig):
        return model
    fields = dict(_preset(preset).get("model", {}))
    if isinstance(model, str):
        model = {"tower": model}
    if isinstance(model, Mapping):
        fields = model_section(fields, dict(model))
    fields.setdefault("image_size", data.image_size)
    fields.setdefault("text_dim", data.text_dim)
    return ModelConfig.from_dict(fields)


def prepare_data(source: str | None = None, noise: float | None = None, *, options: Mapping[str, Any] | None = None,
                 noise_seed: int | None = None, encoder: str | None = None, model: Any = None,
                 preset: str | Mapping[str, Any] | None = None, features: bool = True) -> Any:
    """Load a source, inject caption noise into its training split, embed the captions, cache the
    frozen backbone's features; the preset's ``data`` and ``model`` sections fill what is not given.

    Returns a :class:`~mdw_kit.data.bundle.DataBundle` whose ``model_config`` every later stage uses.
    ``features=False`` keeps pixels only (the backbone then runs on every batch).
    """
    from mdw_kit.features import with_features
    from mdw_kit.data.bundle import prepare_data as _load
    p = _preset(preset)
    d = p.get("data", {})
    if source is not None and source != d.get("source"):
        d = {**d, "options": {}}  # the preset's source options belong to its own source
    opts = {**d.get("options", {}), **(options or {})}
    data = _load(source or d.get("source", "openmoji"), d.get("noise", 0.0) if noise is None else noise,
                 d.get("noise_seed", 0) if noise_seed is None else noise_seed, opts,
                 encoder or d.get("encoder", "minilm"))
    mc = model_config(data, model, p)
    if features:
        data = with_features(data, mc)
    return dataclasses.replace(data, model_config=mc)


def dual_track_config(config: Any = None, preset: str | Mapping[str, Any] | None = None, naive: bool = False) -> Any:
    """A :class:`~mdw_kit.experts.DualTrackConfig`: ``config`` (or its dict of fields) over the preset's."""
    from mdw_kit.experts.dual_track import DualTrackConfig
    if isinstance(config, DualTrackConfig):
        return dataclasses.replace(config, naive=True, num_tracks=1) if naive else config
    fields = {**_preset(preset).get("experts", {}).get("dual_track", {}), **dict(config or {})}
    if naive:
        fields.update(naive=True, num_tracks=1)
    return DualTrackConfig.from_dict(fields)


def noise_report(data: Any, config: Any = None, *, run_dir: str | Path | None = None,
                 preset: str | Mapping[str, Any] | None = None, with_result: bool = False, naive: bool = False,
                 validate: bool = True, callback: Callable | None = None,
                 epoch_callback: Callable | None = None) -> Any:
    """Stage 1 on its own: dual-track training on the noisy training pairs; the :class:`NoiseReport`
    (per-pair clean probability, noise score, flags, detection metrics where the noise is known).

    Pairs of one image (several captions) are not each other's negatives when scored. With
    ``run_dir`` the report and the per-epoch detection are saved there. ``with_result=True``
    returns ``(report, DualTrackResult)`` (the tracks' states, per-epoch detection, timings).
    ``naive=True`` trains one plain track instead (the comparison without noise handling);
    ``validate=False`` skips the per-epoch validation R-sum. ``callback(track, epoch, model,
    stats)`` and ``epoch_callback(epoch, detection)`` feed a live monitor
    (:class:`widgets.TrainingMonitor`).
    """
    from mdw_kit.experts.dual_track import train_dual_track
    cfg = dual_track_config(config, preset, naive=naive)
    mc = data.model_config
    res = train_dual_track(lambda s: mc.build(), data.train.pair_inputs(), data.train_text, cfg,
                           clean=data.train.clean if data.train.noise_known else None,
                           val=data.val_split() if validate else None, groups=data.train.pair_image,
                           callback=callback, epoch_callback=epoch_callback)
    rep = res.report(captions=data.train.captions,
                     image_ids=[data.train.image_ids[int(i)] for i in data.train.pair_image],
                     meta={"data_fingerprint": data.fingerprint(), "epochs": cfg.epochs})
    if run_dir is not None:
        rep.save(run_dir)
    return (rep, res) if with_result else rep


def build_buffer(data: Any, run_dir: str | Path, config: Any = None, *, runs: int | None = None,
                 naive: bool = False, preset: str | Mapping[str, Any] | None = None,
                 progress: bool = True) -> Any:
    """Stage 1: record expert trajectories (dual-track, or ``naive`` for plain experts) in ``run_dir``.

    Resumable: finished runs in ``run_dir`` are kept. The buffer's consensus noise report is
    ``buffer.consensus`` (the same setting made the experts and the report).
    """
    from mdw_kit.experts.buffer import build_buffer as _build
    p = _preset(preset)
    cfg = dual_track_config(config, p, naive=naive)
    runs = int(runs if runs is not None else p.get("experts", {}).get("runs", 2))
    noise = data.full.meta.get("noise") or {}
    return _build(Path(run_dir), data.model_config, data.train.pair_inputs(), data.train_text, cfg, runs,
                  data.fingerprint(), data.encoder_name, noise={"rate": noise.get("rate"), "seed": noise.get("seed")},
                  clean=data.train.clean if data.train.noise_known else None, progress=progress,
                  groups=data.train.pair_image)


def _distill_overrides(config: Mapping[str, Any] | None, preset: dict[str, Any]) -> dict[str, Any]:
    from mdw_kit.distill.distiller import merge_iterations
    return merge_iterations(dict(preset.get("distill", {}).get("config", {})), dict(config or {}))


def distiller(data: Any, buffer: Any, *, method: str | None = None, budget: int | None = None,
              config: Mapping[str, Any] | None = None, run_dir: str | Path | None = None,
              preset: str | Mapping[str, Any] | None = None, callback: Callable | None = None) -> Any:
    """The :class:`~mdw_kit.distill.Distiller` that :func:`distill` runs, not run yet: for step-by-step
    control (``initialise``, ``step``), its ``history`` and ``summary()`` after ``run()``, or a live
    monitor (``callback(iteration, stats)``). Arguments as :func:`distill`."""
    from mdw_kit.distill.methods import distiller_for
    p = _preset(preset)
    d = p.get("distill", {})
    return distiller_for(method or d.get("method", "mdw"), data, int(budget or d.get("budget", 100)), buffer,
                         _distill_overrides(config, p), run_dir, callback=callback)


def distill(data: Any, buffer: Any, *, method: str | None = None, budget: int | None = None,
            config: Mapping[str, Any] | None = None, run_dir: str | Path | None = None,
            preset: str | Mapping[str, Any] | None = None, callback: Callable | None = None) -> Any:
    """Stages 2-4: distil ``budget`` synthetic pairs with ``method`` (``"mdw"`` or an ablation /
    baseline of :data:`~mdw_kit.distill.methods.METHODS`) from ``buffer``; the :class:`DistilledSet`.

    ``config`` holds :class:`~mdw_kit.distill.DistillConfig` fields over the preset's. With
    ``run_dir`` the run checkpoints (a killed run resumes) and saves the set in
    ``run_dir/artifacts/distilled``. ``callback(iteration, stats)`` feeds a live monitor.
    """
    return distiller(data, buffer, method=method, budget=budget, config=config, run_dir=run_dir, preset=preset,
                     callback=callback).run()


def evaluate(what: Any, data: Any, *, seeds: Sequence[int] | None = None, config: Any = None,
             preset: str | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train fresh models on a distilled set or real pairs ``(images, text_emb)``; test retrieval.

    The epoch of each seed is chosen on the validation split; the test split is scored once.
    Returns ``{"mean", "sd", "per_seed", ...}`` (see :func:`~mdw_kit.evaluation.protocol.evaluate_distilled`).
    """
    from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled
    p = _preset(preset).get("eval", {})
    cfg = config if isinstance(config, EvalConfig) else EvalConfig.from_dict({**p.get("config", {}),
                                                                               **dict(config or {})})
    return evaluate_distilled(what, data.model_config, data.val_split(), data.test_split(),
                              tuple(seeds if seeds is not None else p.get("seeds", (0, 1, 2))), cfg=cfg)


def run_method(name: str, data: Any, budget: int | None, buffers: Mapping[str, Any] | None = None, *,
               distill_config: Mapping[str, Any] | None = None, eval_config: Any = None,
               seeds: Sequence[int] | None = None, run_dir: str | Path | None = None,
               preset: str | Mapping[str, Any] | None = None, p_clean: torch.Tensor | None = None) -> dict[str, Any]:
    """One method (coreset, distillation or reference) at ``budget``, evaluated; resumable in ``run_dir``.

    ``buffers``: ``{"dual_track": ..., "naive": ...}`` as the method needs. Preset defaults fill
    the distillation and evaluation settings.
    """
    from mdw_kit.distill.methods import run_method as _run
    p = _preset(preset)
    e = p.get("eval", {})
    ecfg = eval_config if eval_config is not None and not isinstance(eval_config, Mapping) else \
        {**e.get("config", {}), **dict(eval_config or {})}
    return _run(name, data, budget, buffers, distill=_distill_overrides(distill_config, p), eval_cfg=ecfg,
                seeds=tuple(seeds if seeds is not None else e.get("seeds", (0, 1, 2))), run_dir=run_dir,
                model_cfg=data.model_config, p_clean=p_clean)


def export(dset: Any, folder: str | Path, data: Any, *, hf: bool = False) -> Path:
    """Write a distilled set for people: PNGs + ``index.html`` with the nearest real captions
    (``hf=True``: a Hugging Face ``save_to_disk`` dataset instead). Returns the folder."""
    from mdw_kit.distill.export import export_hf_dataset, export_png
    fn = export_hf_dataset if hf else export_png
    fn(dset, folder, data.train_text, data.train.captions)
    return Path(folder)
