"""Baselines and ablations on ONE code path: every method is a :class:`MethodSpec` of switches.

Kinds:

- ``coreset``: pick ``M`` real pairs (:mod:`mdw_kit.distill.coresets`), train on them with
  identity targets.
- ``distill``: run :class:`~mdw_kit.distill.distiller.Distiller` with the spec's switches, train
  on the distilled set with its ``P~`` and ``eta``.
- ``reference``: train on all noisy training pairs (``full_noisy``) or only on the truly clean
  ones (``clean_oracle``; uses the injected-noise ground truth). Budget-free.

Switches of a ``distill`` spec (one each, so an ablation differs from MDW in exactly one):

- ``experts``: ``"dual_track"`` or ``"naive"``: which expert buffer is matched. The noise
  report of the same stage-1 run supplies the clean probabilities the initialisation uses.
- ``corr``: ``"identity"`` (plain InfoNCE targets), ``"lowrank"`` (LoRS) or ``"full"``.
- ``ceo_beta``: CEO strength (0 = plain trajectory matching).
- ``corr_prior_scale``: strength of the experts' prior of the starting ``P~`` (0 = none; see
  :class:`~mdw_kit.distill.distiller.DistillConfig`): :data:`MDW_PRIOR` for MDW and the ablations
  that keep a learnable ``P~``, 0 for LoRS (which starts as LoRS does). A strength, like
  ``ceo_beta``: any method with a learnable correspondence takes another one as an override.
- ``init``: ``"clean_kcenter"`` (k-center among predicted-clean pairs), ``"clean_balanced"``
  (k-means balanced), ``"clean_random"`` (uniform among predicted-clean pairs) or ``"random"``
  (uniform over all pairs, as MTT-VL and LoRS start).
- ``learn_lr``: learn the student rates ``eta`` (else they stay at their calibrated start).

Registry :data:`METHODS`: ``random``, ``herding``, ``kcenter``, ``clean_random`` (coresets);
``mtt_vl`` (identity targets, naive experts), ``lors`` (learnable low-rank ``P~``, naive experts);
``mdw`` (dual-track experts, learnable full ``P~`` started from the experts' prior, CEO, random
predicted-clean init) and its
ablations ``mdw_no_dual``, ``mdw_no_ceo``, ``mdw_no_corr``; the start variants ``mdw_kcenter_init``
and ``mdw_balanced_init``; references ``full_noisy``, ``clean_oracle``.

Example:
    >>> METHODS["lors"].corr, METHODS["lors"].experts
    ('lowrank', 'naive')
    >>> [k for k, v in METHODS["mdw"].switches().items() if v != METHODS["mdw_no_ceo"].switches()[k]]
    ['ceo_beta']
"""
from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mdw_kit.distill.coresets import CleanRandomCoreset, make_coreset, pair_features
from mdw_kit.distill.distiller import DistillConfig, Distiller
from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled
from mdw_kit.runs import ArtifactError, RunDir

KINDS = ("coreset", "distill", "reference")
EXPERTS = ("dual_track", "naive")
_INIT_SELECTION = {"clean_kcenter": "kcenter", "clean_balanced": "balanced", "clean_random": "random",
                   "random": "random"}  # MethodSpec.init -> DistillConfig.init (the stage-2 selection)
INITS = tuple(_INIT_SELECTION)
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class MethodSpec:
    """One method as data: its kind and the switches of the shared code path.

    Example:
        >>> MethodSpec("x", "distill", corr="lowrank").distill_config(50).corr
        'lowrank'
    """

    name: str
    kind: str
    description: str = ""
    coreset: str | None = None
    reference: str | None = None
    experts: str = "dual_track"
    corr: str = "full"
    ceo_beta: float = 0.5
    corr_prior_scale: float = 0.0
    init: str = "clean_random"
    learn_lr: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.experts not in EXPERTS or self.init not in INITS:
            raise ValueError(f"method {self.name!r}: experts must be one of {EXPERTS} and init one of {INITS}")
        if self.kind == "coreset" and self.coreset is None:
            raise ValueError(f"method {self.name!r}: a coreset method names its coreset")
        if self.kind == "reference" and self.reference not in ("full_noisy", "clean_oracle"):
            raise ValueError(f"method {self.name!r}: reference must be 'full_noisy' or 'clean_oracle'")

    def switches(self) -> dict[str, Any]:
        """The distillation switches (``experts, corr, ceo_beta, corr_prior_scale, init, learn_lr``)."""
        return {"experts": self.experts, "corr": self.corr, "ceo_beta": self.ceo_beta,
                "corr_prior_scale": self.corr_prior_scale, "init": self.init, "learn_lr": self.learn_lr}

    def result_fields(self) -> dict[str, Any]:
        """What decides this method's result: the kind, and the coreset, reference or switches.

        Two specs with equal ``result_fields`` give the same result (the name, the description and
        the distillation switches of a coreset or a reference do not matter).

        Example:
            >>> a = MethodSpec("a", "coreset", coreset="random")
            >>> b = MethodSpec("b", "coreset", "other words", coreset="random", init="random")
            >>> a.result_fields() == b.result_fields()
            True
        """
        if self.kind == "coreset":
            return {"kind": self.kind, "coreset": self.coreset}
        if self.kind == "reference":
            return {"kind": self.kind, "reference": self.reference}
        return {"kind": self.kind, **self.switches()}

    def distill_config(self, M: int, overrides: Mapping[str, Any] | None = None) -> DistillConfig:
        """The :class:`DistillConfig` of this method at budget ``M`` (``overrides`` for the rest).

        The switches win over ``overrides``: an override of ``corr`` or ``init`` is an error, so
        a method always is what its name says. ``ceo_beta`` is the one exception, as a strength
        rather than a switch: a method with CEO on takes another positive strength (a CEO
        strength sweep), while turning CEO off (0) or on (a method without it) is an error.

        Example:
            >>> get_method("mdw").distill_config(50, {"ceo_beta": 0.2}).ceo_beta
            0.2
        """
        overrides = dict(overrides or {})
        clash = sorted({"corr", "init", "num_pairs"} & set(overrides))
        if clash:
            raise ValueError(f"method {self.name!r}: {clash} are set by the method itself; "
                             "choose another method instead of overriding them")
        beta = overrides.pop("ceo_beta", self.ceo_beta)
        if self.ceo_beta == 0 and beta != 0:
            raise ValueError(f"method {self.name!r} runs without CEO; ceo_beta={beta} would turn it on "
                             "(choose a method with CEO, such as 'mdw')")
        if self.ceo_beta > 0 and not (isinstance(beta, (int, float)) and beta > 0):
            raise ValueError(f"method {self.name!r}: ceo_beta must be > 0 (its CEO strength), got {beta!r}; "
                             "CEO off is the method 'mdw_no_ceo'")
        prior = overrides.pop("corr_prior_scale", self.corr_prior_scale)
        if self.corr == "identity" and prior != 0:
            raise ValueError(f"method {self.name!r} trains on identity targets; corr_prior_scale={prior} needs a "
                             "learnable correspondence (such as 'mdw')")
        return DistillConfig(num_pairs=M, corr=self.corr, ceo_beta=float(beta), corr_prior_scale=float(prior),
                             init=_INIT_SELECTION[self.init], **overrides)


MDW_PRIOR = 1.0
"""MDW's ``corr_prior_scale``: its ``P~`` starts from the experts' correspondence. On openmoji (100
pairs, 50% noise, 3 distillation seeds; ``benchmarks/results/prior1_3seeds_noise50_M100.json``)
test R-sum 115.1 against 112.3 without (validation 110.6 against 107.8), and on ``shapes`` the
learned ``P~`` follows caption similarity (Spearman 0.62 against 0.25) and links scenes that
share an object (3.3x against 2.0x) (``mechanisms_prior.json``, ``docs/results.md``)."""


def _registry() -> dict[str, MethodSpec]:
    specs = [
        MethodSpec("random", "coreset", "uniform random real pairs", coreset="random"),
        MethodSpec("herding", "coreset", "herding in the frozen text-embedding space", coreset="herding"),
        MethodSpec("kcenter", "coreset", "k-center in the frozen text-embedding space", coreset="kcenter"),
        MethodSpec("clean_random", "coreset", "random among pairs the noise report calls clean",
                   coreset="clean_random"),
        MethodSpec("mtt_vl", "distill", "trajectory matching, identity targets, naive experts",
                   experts="naive", corr="identity", ceo_beta=0.0, init="random"),
        MethodSpec("lors", "distill", "learnable low-rank correspondence, naive experts",
                   experts="naive", corr="lowrank", ceo_beta=0.0, init="random"),
        MethodSpec("mdw", "distill", "dual-track experts, learnable correspondence started from the experts' "
                   "prior, CEO, clean init", corr_prior_scale=MDW_PRIOR),
        MethodSpec("mdw_no_dual", "distill", "MDW with naive experts", experts="naive", corr_prior_scale=MDW_PRIOR),
        MethodSpec("mdw_no_ceo", "distill", "MDW without CEO (beta = 0)", ceo_beta=0.0, corr_prior_scale=MDW_PRIOR),
        MethodSpec("mdw_no_corr", "distill", "MDW with identity targets", corr="identity"),
        MethodSpec("mdw_kcenter_init", "distill", "MDW started from k-center predicted-clean pairs "
                   "(spread out) instead of random ones", init="clean_kcenter", corr_prior_scale=MDW_PRIOR),
        MethodSpec("mdw_balanced_init", "distill", "MDW started from one random predicted-clean pair per "
                   "k-means cluster instead of random ones", init="clean_balanced", corr_prior_scale=MDW_PRIOR),
        MethodSpec("full_noisy", "reference", "all noisy training pairs", reference="full_noisy"),
        MethodSpec("clean_oracle", "reference", "only the truly clean training pairs (ground truth)",
                   reference="clean_oracle"),
    ]
    return {s.name: s for s in specs}


METHODS: dict[str, MethodSpec] = _registry()


RENAMED = {"mdw_clean_random_init": "mdw"}  # old name -> its name now (MDW's default start became random)


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``.

    Example:
        >>> get_method("mdw_no_corr").corr
        'identity'
    """
    if name in RENAMED:
        raise ValueError(f"method {name!r} is now called {RENAMED[name]!r}")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {list(METHODS)}")
    return METHODS[name]


class FixedRateDistiller(Distiller):
    """A :class:`Distiller` whose student rates stay at their (calibrated) start: ``learn_lr=False``.

    Same arguments as :class:`Distiller`; ``log_lr`` gets no gradient and no optimiser.
    """

    def _make_optimisers(self) -> None:
        self.syn.log_lr.requires_grad_(False)
        super()._make_optimisers()
        self.opts.pop("lr", None)


# ------------------------------------------------------------------ helpers
def train_pairs(data: Any, pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs (one per training pair) and text embeddings of a :class:`~mdw_kit.data.bundle.DataBundle`.

    The inputs are the cached backbone features where the bundle carries them
    (:func:`mdw_kit.features.with_features`), else uint8 pixels; ``pixels=True`` always gives pixels.

    Example:
        >>> from mdw_kit.data.bundle import prepare_data
        >>> images, text = train_pairs(prepare_data("shapes", source_options={"num_images": 20}, encoder="hash"))
        >>> images.dtype, len(images) == len(text)
        (torch.uint8, True)
    """
    return (data.train.images[data.train.pair_image] if pixels else data.train.pair_inputs()), data.train_text


def default_model_config(data: Any, buffers: Mapping[str, Any] | None = None) -> Any:
    """The buffers' model configuration, else ConvNet-3 on the data's image size and text dim.

    Example:
        >>> from mdw_kit.data.bundle import prepare_data
        >>> data = prepare_data("shapes", source_options={"num_images": 20}, encoder="hash")
        >>> default_model_config(data).tower, default_model_config(data).text_dim == data.text_dim
        ('convnet3', True)
    """
    from mdw_kit.models import ModelConfig
    for buf in (buffers or {}).values():
        mc = getattr(buf, "index", {}).get("model_config") if buf is not None else None
        if mc:
            return ModelConfig.from_dict(mc)
    return ModelConfig(tower="convnet3", text_dim=data.text_dim, image_size=data.image_size)


def _buffer(buffers: Mapping[str, Any] | None, kind: str, method: str) -> Any:
    buf = (buffers or {}).get(kind)
    if buf is None:
        raise ValueError(f"method {method!r} needs the {kind!r} expert buffer; pass buffers={{'{kind}': ...}} "
                         "(mdw_kit.experts.buffer.build_buffer / load_buffer)")
    return buf


def _clean_share(data: Any, idx: torch.Tensor) -> float | None:
    """Share of the chosen training pairs that truly kept their caption (where noise is known)."""
    if not data.train.noise_known:
        return None
    return float(data.train.clean[torch.as_tensor(idx, dtype=torch.long)].float().mean())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss``).

    Example:
        >>> peak_rss_mib() > 0
        True
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage1_p_clean(buf: Any, fallback: torch.Tensor | None) -> torch.Tensor | None:
    """The buffer's own consensus clean probability (its stage-1 noise report), else ``fallback``."""
    try:
        return buf.consensus_p_clean
    except (AttributeError, ArtifactError):
        return fallback


def plain_step_time(dist: Distiller, syn: Any, repeats: int = 3) -> float:
    """Median seconds of the ``syn_steps`` plain SGD steps one iteration of ``dist`` unrolls (same model, set)."""
    from mdw_kit.distill.matching import time_plain_steps
    start = dist.buffer.trajectory(0)[0].to(syn.images.device)
    g = torch.Generator().manual_seed(0)
    runs = sorted(time_plain_steps(dist.model, syn, start, dist.cfg.syn_steps, dist.cfg.batch_syn, generator=g)
                  for _ in range(repeats))
    return runs[len(runs) // 2]


# ------------------------------------------------------------------ the three kinds
def _run_coreset(spec: MethodSpec, data: Any, M: int, ctx: dict[str, Any]) -> dict[str, Any]:
    images, text = train_pairs(data)
    t0 = time.perf_counter()
    if spec.coreset == "clean_random":
        p = ctx["p_clean"]
        if p is None:
            p = _stage1_p_clean(_buffer(ctx["buffers"], "dual_track", spec.name), None)
        selector = CleanRandomCoreset(p)
    else:
        selector = make_coreset(spec.coreset)
    idx = selector.select(pair_features(text), M, seed=ctx["selection_seed"])
    selection = {"indices": idx.tolist(), "time_s": time.perf_counter() - t0,
                 "true_clean_share": _clean_share(data, idx)}
    ev = evaluate_distilled((images[idx], text[idx]), ctx["model_cfg"], data.val_split(), data.test_split(),
                            ctx["seeds"], cfg=ctx["eval_cfg"])
    return {"selection": selection, "eval": ev}


def _run_reference(spec: MethodSpec, data: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    images, text = train_pairs(data)
    if spec.reference == "clean_oracle":
        if not data.train.noise_known:
            raise ValueError("clean_oracle needs the ground truth of injected noise (inject_noise); "
                             "this training split has none")
        keep = torch.nonzero(data.train.clean).flatten()
    else:
        keep = torch.arange(len(text))
    cfg = replace(ctx["eval_cfg"], epochs=ctx["eval_cfg"].full_epochs, eval_every=1)
    ev = evaluate_distilled((images[keep], text[keep]), ctx["model_cfg"], data.val_split(), data.test_split(),
                            ctx["seeds"], cfg=cfg)
    return {"selection": {"num_pairs": int(len(keep)), "true_clean_share": _clean_share(data, keep)}, "eval": ev}


def _make_distiller(spec: MethodSpec, data: Any, dcfg: DistillConfig, buf: Any, model_cfg: Any,
                    p_clean: torch.Tensor | None, run_dir: str | Path | None, callback: Any = None) -> Distiller:
    images, text = train_pairs(data, pixels=True)
    p_init = _stage1_p_clean(buf, p_clean) if spec.init.startswith("clean_") else torch.ones(len(text))
    cls = Distiller if spec.learn_lr else FixedRateDistiller
    return cls(dcfg, buf, model_cfg, images, text, p_clean=p_init,
               run_dir=None if run_dir is None else RunDir(run_dir), callback=callback,
               val=data.val_split() if dcfg.select_every else None)


def distiller_for(name: str, data: Any, M: int, buffer: Any, overrides: Mapping[str, Any] | None = None,
                  run_dir: str | Path | None = None, p_clean: torch.Tensor | None = None,
                  callback: Any = None) -> Distiller:
    """The :class:`Distiller` of distillation method ``name`` at budget ``M`` on ``buffer`` (not run yet).

    ``buffer`` is the expert buffer the method's ``experts`` switch asks for; ``data`` a
    :class:`~mdw_kit.data.bundle.DataBundle` whose ``model_config`` (else the buffer's) is the model.
    """
    spec = get_method(name)
    if spec.kind != "distill":
        raise ValueError(f"method {name!r} is a {spec.kind}, not a distillation; use run_method for it")
    mc = getattr(data, "model_config", None) or default_model_config(data, {"x": buffer})
    return _make_distiller(spec, data, spec.distill_config(M, overrides), buffer, mc, p_clean, run_dir, callback)


def _run_distill(spec: MethodSpec, data: Any, dcfg: DistillConfig, ctx: dict[str, Any]) -> dict[str, Any]:
    buf = _buffer(ctx["buffers"], spec.experts, spec.name)
    run_dir = ctx["run_dir"]
    dist = _make_distiller(spec, data, dcfg, buf, ctx["model_cfg"], ctx["p_clean"],
                           None if run_dir is None else Path(run_dir) / "distill")
    t0 = time.perf_counter()
    syn = dist.run()
    wall = time.perf_counter() - t0
    times = sorted(h["time"] for h in dist.history if h.get("time") is not None)
    it_time = times[len(times) // 2] if times else None
    plain = plain_step_time(dist, syn)
    info = {"time_s": wall, "iterations": dist.iteration, "recoveries": dist.recoveries,
            "time_per_iteration_s": it_time, "plain_steps_s": plain,
            "iteration_over_plain": it_time / plain if it_time and plain else None,
            "summary": dist.summary(), "config": dcfg.to_dict(),
            "init_true_clean_share": _clean_share(data, syn.init_indices)}
    ev = evaluate_distilled(syn, ctx["model_cfg"], data.val_split(), data.test_split(), ctx["seeds"],
                            cfg=ctx["eval_cfg"])
    return {"distill": info, "eval": ev, "distilled_set": syn}


# ------------------------------------------------------------------ entry point
def run_method(name: str, data: Any, M: int | None, buffers: Mapping[str, Any] | None = None,
               distill: Mapping[str, Any] | None = None, eval_cfg: EvalConfig | Mapping[str, Any] | None = None,
               seeds: Sequence[int] = (0, 1, 2), run_dir: str | Path | None = None, model_cfg: Any = None,
               p_clean: torch.Tensor | None = None, selection_seed: int = 0) -> dict[str, Any]:
    """Run one method at budget ``M`` and evaluate it; resumable through ``run_dir``.

    Args:
        name: a key of :data:`METHODS`.
        data: a :class:`~mdw_kit.data.bundle.DataBundle` (noisy train split, clean val / test, embeddings).
        M: budget in pairs (ignored by the references).
        buffers: ``{"dual_track": buffer, "naive": buffer}``; a method needs the one its ``experts``
            switch names (``clean_random`` reads the dual-track noise report when ``p_clean`` is None).
        distill: :class:`DistillConfig` overrides (iterations, syn_steps, ...), not the switches.
        eval_cfg: :class:`~mdw_kit.evaluation.protocol.EvalConfig` (or its dict).
        seeds: evaluation seeds.
        run_dir: folder for the distillation checkpoints / artifact and ``result.json``; a finished
            result with the same settings there is returned as it is (``"cached": True``).
        model_cfg: the model (default: the buffers' model configuration, else ConvNet-3).
        p_clean: per-pair clean probability of the noise report (default: the buffers' own).
        selection_seed: seed of the coreset selection.

    Returns:
        ``{"method", "kind", "budget", "spec", "key", "mean", "sd", "val_mean", "per_seed", "eval",
        "selection" | "distill", "time_s", "peak_rss_mib", "torch_threads", "cached"}``
        (``torch_threads``: CPU threads of this process; a result repeats bit for bit at one count,
        while another count sums in another order, which hundreds of distillation iterations
        amplify into a difference like another seed's); the distilled set itself is
        saved under ``run_dir/distill/artifacts/distilled`` (and returned as ``"distilled_set"``
        when just computed).

    Example:
        >>> from mdw_kit.data.bundle import prepare_data
        >>> data = prepare_data("shapes", noise=0.5, source_options={"num_images": 40}, encoder="hash")
        >>> r = run_method("random", data, 10, eval_cfg={"epochs": 2, "full_epochs": 1}, seeds=(0,))
        >>> r["budget"], 0 <= r["mean"]["R-sum"] <= 600
        (10, True)
    """
    spec = get_method(name)
    ecfg = EvalConfig.from_dict(dict(eval_cfg)) if isinstance(eval_cfg, Mapping) else (eval_cfg or EvalConfig())
    model_cfg = model_cfg if model_cfg is not None else default_model_config(data, buffers)
    budget = None if spec.kind == "reference" else int(M)
    dcfg = spec.distill_config(budget, distill) if spec.kind == "distill" else None
    key = _key({"spec": asdict(spec), "budget": budget, "seeds": [int(s) for s in seeds],
                "distill": result_relevant(dcfg), "eval": _eval_relevant(ecfg),
                "data": data.fingerprint(), "selection_seed": selection_seed,
                "model": model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg})
    cached = _cached(run_dir, key)
    if cached is not None:
        return cached
    ctx = {"buffers": buffers, "model_cfg": model_cfg, "eval_cfg": ecfg, "seeds": tuple(seeds),
           "p_clean": p_clean, "selection_seed": selection_seed, "run_dir": run_dir}
    t0 = time.perf_counter()
    if spec.kind == "coreset":
        out = _run_coreset(spec, data, budget, ctx)
    elif spec.kind == "reference":
        out = _run_reference(spec, data, ctx)
    else:
        out = _run_distill(spec, data, dcfg, ctx)
    ev = out.pop("eval")
    syn = out.pop("distilled_set", None)
    result = {"method": name, "kind": spec.kind, "budget": budget, "spec": asdict(spec), "key": key,
              "mean": ev.pop("mean"), "sd": ev.pop("sd"), "val_mean": ev.pop("val_mean"),
              "per_seed": ev.pop("per_seed"), "eval": ev, **out, "time_s": time.perf_counter() - t0,
              "peak_rss_mib": peak_rss_mib(), "torch_threads": torch.get_num_threads(), "cached": False}
    if run_dir is not None:
        RunDir(run_dir).write_json(RESULT_FILE, result)
    if syn is not None:
        result["distilled_set"] = syn
    return result


def _eval_relevant(ecfg: EvalConfig) -> dict[str, Any]:
    """The evaluation settings that change a result (not the device)."""
    d = ecfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k != "device"}
    return d


def result_relevant(dcfg: DistillConfig | None) -> dict[str, Any] | None:
    """The distillation settings that change the result (not device, progress, checkpoint interval)."""
    if dcfg is None:
        return None
    from mdw_kit.distill.checkpoint import RESUMABLE_CHANGES
    d = {k: v for k, v in dcfg.to_dict().items() if k not in RESUMABLE_CHANGES or k == "iterations"}
    if not dcfg.select_every:  # selection off: its settings change nothing (and old keys stay valid)
        for k in ("select_every", "select_epochs", "select_seeds", "select_start_pairs"):
            d.pop(k)
    return d


def _cached(run_dir: str | Path | None, key: str) -> dict[str, Any] | None:
    """A finished result in ``run_dir`` with the same settings; a different one is an error."""
    if run_dir is None or not (Path(run_dir) / RESULT_FILE).exists():
        return None
    from mdw_kit.runs import read_json
    old = read_json(Path(run_dir) / RESULT_FILE)
    if old.get("key") != key:
        raise ArtifactError(f"{Path(run_dir) / RESULT_FILE} holds a result of other settings (method "
                            f"{old.get('method')!r}, budget {old.get('budget')}); use another run folder")
    return dict(old, cached=True)


__all__ = ["MethodSpec", "METHODS", "get_method", "run_method", "distiller_for", "FixedRateDistiller", "train_pairs",
           "default_model_config", "peak_rss_mib", "plain_step_time", "result_relevant"]
