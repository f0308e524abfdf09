"""AblationPanel: pick a method, its ablation switches, a budget and a noise rate; run it in the kernel.

Each run is a small configuration run by ``run_fn`` (by default a
:class:`MethodRunner` over :func:`mdw_kit.stages.run_method`); its result
joins a table and a bar plot, so switching one part of MDW off at a time shows
what that part contributes.

Example:
    >>> def fake(method, budget, noise_rate, **switches):
    ...     return {"R-sum": budget / 10 + (5 if switches.get("ceo") else 0)}
    >>> p = AblationPanel(fake, methods=["mdw", "random"], switches=("ceo",), budgets=(10, 20))
    >>> p.budget.value = 20
    >>> p.run()["R-sum"]
    7.0
    >>> len(p.results)
    1
"""
from __future__ import annotations

import html
import inspect
import time
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W
import pandas as pd
from matplotlib.figure import Figure

from widgets._static import PlotPane, StaticFigureMixin, heavy

DEFAULT_SWITCHES = ("dual_track", "learnable_corr", "ceo")
SWITCH_HELP = {"dual_track": "dual-track experts", "learnable_corr": "learnable correspondence P~",
               "ceo": "CEO region emphasis"}
# Turning one switch off turns method ``m`` into the registered ablation ``m_<suffix>``.
SWITCH_SUFFIX = {"dual_track": "no_dual", "learnable_corr": "no_corr", "ceo": "no_ceo"}


def resolve_method(method: str, switches: Mapping[str, bool], registry: Mapping[str, Any]) -> str:
    """The registered method a choice of switches means: all on is ``method`` itself, one off is its
    ablation ``method_no_<part>``; a combination nobody registered is an error naming the choices.

    Example:
        >>> resolve_method("mdw", {"ceo": False, "dual_track": True}, {"mdw": 1, "mdw_no_ceo": 1})
        'mdw_no_ceo'
    """
    off = [s for s, on in switches.items() if not on]
    if not off:
        return method
    name = f"{method}_{'_'.join(SWITCH_SUFFIX.get(s, 'no_' + s) for s in off)}"
    if name not in registry:
        have = sorted(m for m in registry if m.startswith(method + "_"))
        raise ValueError(f"no registered method turns off {off} of {method!r}; the ablations of "
                         f"{method!r} are {have or 'none'} (turn one switch off at a time)")
    return name


def switchable_methods(registry: Mapping[str, Any]) -> set[str]:
    """Methods with at least one registered one-switch ablation.

    Example:
        >>> sorted(switchable_methods({"mdw": 1, "mdw_no_ceo": 1, "random": 1}))
        ['mdw']
    """
    suffixes = set(SWITCH_SUFFIX.values())
    return {m for m in registry if any(f"{m}_{s}" in registry for s in suffixes)}


class MethodRunner:
    """Runs registered methods (:func:`mdw_kit.stages.run_method`) for the panel.

    Keeps one data bundle and the expert buffers it needs per noise rate, so a second run at the
    same rate reuses them. Sizes come from the arguments: keep them small, runs happen in the kernel.

    Args:
        source, source_options, encoder: the data (:func:`mdw_kit.stages.prepare_data`, with the
            backbone's features cached where the model has a frozen backbone).
        dual_track: :class:`~mdw_kit.experts.dual_track.DualTrackConfig` of the expert runs
            (``naive=True`` is set for the naive buffer).
        num_runs: expert runs per buffer.
        distill, eval_cfg, seeds: forwarded to ``run_method``.
        workdir: where buffers are written (default: a new temporary folder).
        model_cfg: the model: a ``ModelConfig``, its dict or a tower name (default: the preset's,
            EfficientNet-Lite0 frozen, at the data's image size and text dim).
        preset: the preset whose model section fills what ``model_cfg`` does not give.
    """

    def __init__(self, source: str = "shapes", source_options: Mapping[str, Any] | None = None,
                 encoder: str = "minilm", dual_track: Any = None, num_runs: int = 1,
                 distill: Mapping[str, Any] | None = None, eval_cfg: Mapping[str, Any] | None = None,
                 seeds: Sequence[int] = (0,), workdir: str | None = None, model_cfg: Any = None,
                 preset: str = "default"):
        import tempfile
        from mdw_kit.distill.methods import METHODS
        from mdw_kit.experts.dual_track import DualTrackConfig
        self.source, self.source_options, self.encoder = source, dict(source_options or {}), encoder
        self.dual_track = dual_track or DualTrackConfig(epochs=4, warmup_epochs=1, progress=False)
        self.num_runs, self.distill, self.eval_cfg = int(num_runs), dict(distill or {}), dict(eval_cfg or {})
        self.seeds, self.model_cfg, self.registry, self.preset = tuple(seeds), model_cfg, METHODS, preset
        self.workdir = workdir or tempfile.mkdtemp(prefix="mdw-ablation-")
        self._data: dict[float, Any] = {}
        self._buffers: dict[tuple[float, str], Any] = {}

    def methods(self) -> list[str]:
        """Registered methods, without the one-switch ablations (the switches select those)."""
        ablations = {f"{m}_{s}" for m in switchable_methods(self.registry) for s in SWITCH_SUFFIX.values()}
        return [m for m in self.registry if m not in ablations]

    def data(self, noise_rate: float) -> Any:
        """The data bundle at ``noise_rate`` (built once)."""
        key = round(float(noise_rate), 4)
        if key not in self._data:
            from mdw_kit.stages import prepare_data
            self._data[key] = prepare_data(self.source, key, options=self.source_options, encoder=self.encoder,
                                           model=self.model_cfg, preset=self.preset)
        return self._data[key]

    def buffer(self, noise_rate: float, kind: str) -> Any:
        """The ``"dual_track"`` or ``"naive"`` expert buffer at ``noise_rate`` (trained once)."""
        key = (round(float(noise_rate), 4), kind)
        if key not in self._buffers:
            from pathlib import Path

            from mdw_kit.stages import build_buffer
            self._buffers[key] = build_buffer(self.data(noise_rate), Path(self.workdir) / f"buffer-{key[0]}-{kind}",
                                              self.dual_track, runs=self.num_runs, naive=kind == "naive",
                                              preset=self.preset, progress=False)
        return self._buffers[key]

    def _needed(self, name: str) -> list[str]:
        spec = self.registry[name]
        if spec.kind == "distill":
            return [spec.experts]
        return ["dual_track"] if spec.coreset == "clean_random" else []

    def __call__(self, method: str, budget: int, noise_rate: float, callback: Callable | None = None,
                 **switches: bool) -> dict[str, Any]:
        """Run ``method`` (with ``switches`` off turned into its ablation) and return flat metrics."""
        from mdw_kit.stages import run_method
        name = resolve_method(method, switches, self.registry) if method in switchable_methods(self.registry) \
            else method
        if callback is not None:
            callback("data and experts", None)
        buffers = {k: self.buffer(noise_rate, k) for k in self._needed(name)}
        if callback is not None:
            callback(f"running {name}", None)
        data = self.data(noise_rate)
        r = run_method(name, data, budget, buffers, distill_config=self.distill, eval_config=self.eval_cfg,
                       seeds=self.seeds, preset=self.preset)
        out = {"run": name, "description": self.describe(name),
               **{k: r["mean"][k] for k in ("R-sum", "TR@1", "IR@1") if k in r["mean"]}}
        if len(self.seeds) > 1:
            out["R-sum sd"] = r["sd"].get("R-sum")
        return out

    def describe(self, name: str) -> str:
        """The registry's one-line description of a method (empty when it has none)."""
        spec = self.registry.get(name)
        return getattr(spec, "description", "") or ""


def result_row(cfg: Mapping[str, Any], metrics: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One table row: ``method`` is the method that ran (an ablation's own name, from the result's
    ``run``), then the settings, the scalar metrics and the wall time in ``seconds``.

    Example:
        >>> result_row({"method": "mdw", "budget": 10, "ceo": False}, {"run": "mdw_no_ceo", "R-sum": 5.0,
        ...            "time_s": 3.0, "detail": {}}, 4.04)
        {'method': 'mdw_no_ceo', 'budget': 10, 'ceo': False, 'R-sum': 5.0, 'seconds': 4.0}
    """
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list)) and k not in ("run", "time_s")}
    return {**cfg, "method": metrics.get("run", cfg.get("method")), **scalars, "seconds": round(float(seconds), 1)}


def _default_runner() -> tuple[Callable[..., Mapping[str, Any]], Sequence[str]]:
    runner = MethodRunner()
    return runner, runner.methods()


class AblationPanel(StaticFigureMixin, W.VBox):
    """Run small ablation configurations and collect their results.

    Args:
        run_fn: ``run_fn(method=, budget=, noise_rate=, **switches[, callback=])`` returning a dict of
            metrics; it gets ``callback`` only if it accepts one (then progress is reported).
        methods: method names for the dropdown.
        switches: names of the on/off parts (checkboxes, all on at the start).
        budgets: choices for the number of synthetic pairs.
        noise_rates: ``(min, max, step)`` of the noise-rate slider.
        metric: the result column the plot shows.
    """

    def __init__(self, run_fn: Callable[..., Mapping[str, Any]] | None = None,
                 methods: Sequence[str] | None = None, switches: Sequence[str] = DEFAULT_SWITCHES,
                 budgets: Sequence[int] = (10, 20, 50, 100), noise_rates: tuple[float, float, float] = (0.0, 0.8, 0.1),
                 noise_rate: float = 0.4, metric: str = "R-sum", switchable: Sequence[str] | None = None):
        super().__init__()
        if run_fn is None:
            run_fn, default_methods = _default_runner()
            methods = methods or default_methods
        if methods is None:
            methods = run_fn.methods() if hasattr(run_fn, "methods") else None
        if not methods:
            raise ValueError("AblationPanel needs the method names (methods=[...])")
        if switchable is None and hasattr(run_fn, "registry"):
            switchable = sorted(switchable_methods(run_fn.registry))
        self.run_fn, self.metric = run_fn, metric
        self.switchable = None if switchable is None else set(switchable)
        self.method = W.Dropdown(options=list(methods), value=list(methods)[0], description="method")
        self.switches = {s: W.Checkbox(value=True, description=SWITCH_HELP.get(s, s), indent=False)
                         for s in switches}
        self.budget = W.Dropdown(options=list(budgets), value=list(budgets)[0], description="pairs")
        lo, hi, step = noise_rates
        self.noise = heavy(W.FloatSlider, value=float(noise_rate), min=lo, max=hi, step=step,
                           description="noise rate", readout_format=".2f")
        self.about = W.HTML(layout=W.Layout(margin="0 0 0 10px"))
        self.method.observe(lambda _: self._enable_switches(), names="value")
        self._enable_switches()
        self.button = W.Button(description="run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.run())
        self.status = W.HTML("<i>choose a configuration and press run</i>")
        self.out = W.Output()
        self.table = W.HTML()
        self.results = pd.DataFrame()
        self.pane = PlotPane(self._figure())
        self.children = [W.HBox([self.method, self.budget, self.noise]), self.about,
                         W.HBox(list(self.switches.values())),
                         W.HBox([self.button, self.status]), self.out, self.table, self.pane.widget]
        self.add_class("mdw-ablation-panel")

    def _enable_switches(self) -> None:
        """Show the switches only for methods that have them; describe the chosen method."""
        on = self.switchable is None or self.method.value in self.switchable
        for w in self.switches.values():
            w.disabled = not on
            w.layout.display = None if on else "none"
        describe = getattr(self.run_fn, "describe", None)
        text = describe(self.method.value) if callable(describe) else ""
        self.about.value = f"<i>{html.escape(text)}</i>" if text else ""

    def config(self) -> dict[str, Any]:
        """The configuration the controls describe (switches only where the method has them)."""
        cfg: dict[str, Any] = {"method": self.method.value, "budget": int(self.budget.value),
                               "noise_rate": float(self.noise.value)}
        if self.switchable is None or self.method.value in self.switchable:
            cfg.update({s: bool(w.value) for s, w in self.switches.items()})
        return cfg

    def _accepts_callback(self) -> bool:
        try:
            params = inspect.signature(self.run_fn).parameters
        except (TypeError, ValueError):
            return False
        return "callback" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def _progress(self, step: Any, stats: Any = None) -> None:
        self.status.value = f"running {self.method.value}: step {step}"

    def run(self) -> dict[str, Any]:
        """Run the configured method (what the button does); returns its result row."""
        cfg = self.config()
        self.button.disabled = True
        self.status.value = f"running {cfg['method']} ..."
        t0 = time.perf_counter()
        try:
            with self.out:
                kw = {"callback": self._progress} if self._accepts_callback() else {}
                metrics = dict(self.run_fn(**cfg, **kw))
        except Exception as e:
            self.status.value = f"<span style='color:#c00'>failed: {type(e).__name__}: {e}</span>"
            raise
        finally:
            self.button.disabled = False
        row = result_row(cfg, metrics, time.perf_counter() - t0)
        self.results = pd.concat([self.results, pd.DataFrame([row])], ignore_index=True)
        self.status.value = f"done in {row['seconds']} s: {self.metric} = {row.get(self.metric, 'n/a')}"
        self._update_views()
        return row

    def labels(self) -> list[str]:
        """One short label per result row: method, budget, noise and the switches that were off."""
        out = []
        for _, r in self.results.iterrows():
            off = [s for s in self.switches if s in r and not bool(r[s])]
            suffix = f" -{'-'.join(off)}" if off and "_no_" not in str(r["method"]) else ""
            out.append(f"{r['method']} M={r['budget']} r={r['noise_rate']:.1f}{suffix}")
        return out

    def _figure(self) -> Any:
        import plotly.graph_objects as go
        fig = go.Figure(go.Bar(x=[], y=[]))
        fig.update_layout(height=280, margin=dict(l=40, r=10, t=30, b=90), yaxis_title=self.metric,
                          title=dict(text=f"{self.metric} per run", font=dict(size=12)))
        return fig

    def _update_views(self) -> None:
        shown = self.results.drop(columns=[s for s in self.switches if s in self.results])
        self.table.value = shown.to_html(index=False, float_format=lambda v: f"{v:.1f}")
        ys = self.results[self.metric].tolist() if self.metric in self.results else [0] * len(self.results)
        with self.pane.batch():
            self.pane.fig.data[0].update(x=self.labels(), y=ys)
        self.pane.refresh()

    def static_figure(self) -> Figure:
        """The results so far as a matplotlib bar chart."""
        fig = Figure(figsize=(max(4.0, 1.2 * len(self.results) + 2), 3.2), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        if len(self.results) and self.metric in self.results:
            ax.bar(range(len(self.results)), self.results[self.metric].astype(float))
            ax.set_xticks(range(len(self.results)), self.labels(), rotation=30, ha="right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
        ax.set_ylabel(self.metric)
        return fig
