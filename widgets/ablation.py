"""AblationPanel: pick a method, its ablation switches, a budget and a noise rate; run it in the kernel.

Each run is a small configuration run by ``run_fn`` (by default
:func:`mdw_kit.distill.run_method`); its result joins a table and a bar plot,
so switching one part of MDW off at a time shows what that part contributes.

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


def _default_runner() -> tuple[Callable[..., Mapping[str, Any]], Sequence[str]]:
    try:
        from mdw_kit.distill import METHODS, run_method
    except ImportError as e:  # the registry lives in the core; say so instead of failing later
        raise ImportError("AblationPanel needs run_fn and methods, or mdw_kit.distill.METHODS / run_method") from e
    return run_method, list(METHODS)


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
                 noise_rate: float = 0.4, metric: str = "R-sum"):
        super().__init__()
        if run_fn is None or methods is None:
            default_fn, default_methods = _default_runner()
            run_fn, methods = run_fn or default_fn, methods or default_methods
        self.run_fn, self.metric = run_fn, metric
        self.method = W.Dropdown(options=list(methods), value=list(methods)[0], description="method")
        self.switches = {s: W.Checkbox(value=True, description=SWITCH_HELP.get(s, s), indent=False)
                         for s in switches}
        self.budget = W.Dropdown(options=list(budgets), value=list(budgets)[0], description="pairs")
        lo, hi, step = noise_rates
        self.noise = heavy(W.FloatSlider, value=float(noise_rate), min=lo, max=hi, step=step,
                           description="noise rate", readout_format=".2f")
        self.button = W.Button(description="run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.run())
        self.status = W.HTML("<i>choose a configuration and press run</i>")
        self.out = W.Output()
        self.table = W.HTML()
        self.results = pd.DataFrame()
        self.pane = PlotPane(self._figure())
        self.children = [W.HBox([self.method, self.budget, self.noise]), W.HBox(list(self.switches.values())),
                         W.HBox([self.button, self.status]), self.out, self.table, self.pane.widget]
        self.add_class("mdw-ablation-panel")

    def config(self) -> dict[str, Any]:
        """The configuration the controls describe."""
        cfg: dict[str, Any] = {"method": self.method.value, "budget": int(self.budget.value),
                               "noise_rate": float(self.noise.value)}
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
        row = {**cfg, **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))},
               "seconds": round(time.perf_counter() - t0, 1)}
        self.results = pd.concat([self.results, pd.DataFrame([row])], ignore_index=True)
        self.status.value = f"done in {row['seconds']} s: {self.metric} = {row.get(self.metric, 'n/a')}"
        self._update_views()
        return row

    def labels(self) -> list[str]:
        """One short label per result row: method, budget, noise and the switches that were off."""
        out = []
        for _, r in self.results.iterrows():
            off = [s for s in self.switches if s in r and not bool(r[s])]
            out.append(f"{r['method']} M={r['budget']} r={r['noise_rate']:.1f}" + (f" -{'-'.join(off)}" if off else ""))
        return out

    def _figure(self) -> Any:
        import plotly.graph_objects as go
        fig = go.Figure(go.Bar(x=[], y=[]))
        fig.update_layout(height=280, margin=dict(l=40, r=10, t=30, b=90), yaxis_title=self.metric,
                          title=dict(text=f"{self.metric} per run", font=dict(size=12)))
        return fig

    def _update_views(self) -> None:
        self.table.value = self.results.to_html(index=False, float_format=lambda v: f"{v:.2f}")
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
