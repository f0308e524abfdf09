"""TrainingMonitor: live curves fed by the core's callbacks.

Pass :attr:`TrainingMonitor.callback` wherever the core takes a callback. It
accepts the shapes the core uses:

- ``callback(track, epoch, model, stats)``: one track's epoch in dual-track training;
- ``callback(epoch, info)``: the end of a dual-track epoch (detection metrics per track);
- ``callback(iteration, stats)``: a distillation iteration (matching loss, learned rates, eval R-sum).

Nested dicts are flattened: ``{"A": {"auroc": 0.9}}`` becomes the curve ``A`` on
the panel ``auroc``. The last key names the panel, the keys before it the curve,
so track A and track B share one panel. A name ``panel_curve`` whose prefix is
a panel in ``joins`` joins it (``eta_image`` and ``eta_text`` share the panel ``eta``). Only the
curves of the chosen panels are drawn, named by their curve (``A``, ``consensus``, ``image``) with
one colour per name across panels; everything else is kept in :attr:`series`. Outside a
notebook the monitor prints one line per call instead of drawing.

Example:
    >>> m = TrainingMonitor(panels=("loss", "auroc"), verbose=False)
    >>> m.callback("A", 1, None, {"epoch": 1, "loss": 2.0})
    >>> m.callback(1, {"detection": {"A": {"auroc": 0.8}, "B": {"auroc": 0.7}}})
    >>> sorted(m.series)
    ['A/loss', 'detection/A/auroc', 'detection/B/auroc']
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Sequence

import ipywidgets as W
import pandas as pd
from matplotlib.figure import Figure

from mdw_kit.viz import plot_curves
from widgets._static import PlotPane, StaticFigureMixin, in_notebook

DUAL_TRACK_PANELS = ("loss", "auroc", "R-sum")
DISTILL_PANELS = ("loss", "eta", "R-sum")
JOINS = ("loss", "eta")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
SKIP_KEYS = ("epoch", "iteration", "step", "time", "seconds")


def flatten_scalars(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite scalar leaves of nested ``stats`` as ``{"a/b/c": value}``; tensors of one element count.

    Example:
        >>> flatten_scalars({"epoch": 3, "A": {"loss": 1.5, "p": [0.1, 0.2]}, "lr": {"image": 0.01}})
        {'A/loss': 1.5, 'lr/image': 0.01}
    """
    out: dict[str, float] = {}
    for key, v in stats.items():
        name = f"{prefix}{key}"
        if isinstance(v, Mapping):
            out.update(flatten_scalars(v, name + "/"))
            continue
        if str(key) in SKIP_KEYS or isinstance(v, bool):
            continue
        if hasattr(v, "numel") and v.numel() == 1:
            v = float(v)
        if isinstance(v, numbers.Real) and math.isfinite(float(v)):
            out[name] = float(v)
    return out


def split_name(name: str) -> tuple[str, str]:
    """``(panel, curve)`` of a flattened name: the last part is the panel, the rest the curve.

    Example:
        >>> split_name("detection/A/auroc"), split_name("val/R-sum"), split_name("loss")
        (('auroc', 'A'), ('R-sum', 'val'), ('loss', 'loss'))
    """
    parts = name.split("/")
    core = [p for p in parts if p not in ("detection", "val", "stats")]
    parts = core if len(core) > 1 or len(parts) == 1 else parts
    if len(parts) == 1:
        return parts[0], parts[0]
    return parts[-1], "/".join(parts[:-1])


def step_ticks(steps: Sequence[float]) -> dict[str, Any]:
    """Plotly x-axis settings for integer steps: a tick per step up to 12 steps, whole numbers after.

    Example:
        >>> step_ticks([1, 2, 3])
        {'tickformat': 'd', 'dtick': 1, 'tick0': 0}
        >>> step_ticks(range(100))
        {'tickformat': 'd', 'dtick': None, 'tick0': 0}
    """
    steps = list(steps)
    span = (max(steps) - min(steps)) if steps else 0
    return {"tickformat": "d", "dtick": 1 if span <= 12 else None, "tick0": 0}


class TrainingMonitor(StaticFigureMixin, W.VBox):
    """Live training curves, one panel per metric.

    Args:
        panels: metric names to draw (e.g. :data:`DUAL_TRACK_PANELS`); None draws every metric
            seen in the first call. Everything is recorded in :attr:`series` either way.
        title: a heading.
        verbose: print one line per call when not drawing (default: when not in a notebook).
        step_name: what a step is (``"epoch"``, ``"iteration"``), for the axes.
        evaluate: optional ``evaluate() -> {name: value}`` run every ``evaluate_every`` steps (and
            logged at that step), e.g. a quick validation R-sum of the current distilled set.
        joins: panels that ``panel_curve`` names join (``loss_image`` is the curve ``image`` of ``loss``).
    """

    def __init__(self, panels: Sequence[str] | None = DUAL_TRACK_PANELS, title: str = "training",
                 verbose: bool | None = None, step_name: str = "step",
                 evaluate: Callable[[], Mapping[str, float]] | None = None, evaluate_every: int = 0,
                 joins: Sequence[str] = JOINS):
        super().__init__()
        self.joins = tuple(joins)
        self.step_name = step_name
        self.evaluate, self.evaluate_every = evaluate, int(evaluate_every)
        self.panel_names: list[str] | None = None if panels is None else list(panels)
        self.title, self.verbose = title, (not in_notebook()) if verbose is None else verbose
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.rows: list[dict[str, Any]] = []
        self._traces: dict[str, int] = {}
        self._curve_colours: dict[str, str] = {}
        self.status = W.HTML(f"<b>{title}</b>: waiting for the first callback")
        self.pane: PlotPane | None = None
        self.children = [self.status]
        if self.panel_names:
            self._build_pane()
        self.add_class("mdw-training-monitor")

    @classmethod
    def for_dual_track(cls, **kw: Any) -> "TrainingMonitor":
        """Panels: per-track loss, per-track AUROC of the noise detection, validation R-sum."""
        return cls(panels=DUAL_TRACK_PANELS, title="dual-track training", step_name="epoch", **kw)

    @classmethod
    def for_distillation(cls, rsum: bool | None = None, **kw: Any) -> "TrainingMonitor":
        """Panels: matching loss (total and per tower group), learned student rates and, where there
        is one (``evaluate`` given, or ``rsum=True`` for a distiller that scores on validation), the
        evaluation R-sum.

        Example:
            >>> TrainingMonitor.for_distillation(verbose=False).panel_names
            ['loss', 'eta']
        """
        rsum = kw.get("evaluate") is not None if rsum is None else rsum
        panels = DISTILL_PANELS if rsum else tuple(p for p in DISTILL_PANELS if p != "R-sum")
        return cls(panels=panels, title="distillation", step_name="iteration", **kw)

    # ------------------------------------------------------------ callbacks
    def callback(self, *args: Any, **kwargs: Any) -> None:
        """Accepts ``(track, epoch, model, stats)``, ``(step, stats)`` or ``(stats,)``."""
        if args and isinstance(args[0], str):
            track, step = args[0], args[1]
            stats = args[3] if len(args) > 3 else kwargs.get("stats", {})
            values = flatten_scalars(stats, prefix=f"{track}/")
        elif args and isinstance(args[0], Mapping):
            stats = args[0]
            step = stats.get("iteration", stats.get("epoch", len(self.rows)))
            values = flatten_scalars(stats)
        else:
            step = args[0] if args else kwargs.get("iteration", kwargs.get("epoch", len(self.rows)))
            stats = args[1] if len(args) > 1 else kwargs.get("stats", kwargs.get("info", {}))
            values = flatten_scalars(stats)
        if self.evaluate is not None and self.evaluate_every > 0 and float(step) % self.evaluate_every == 0:
            values.update(flatten_scalars(self.evaluate()))
        self.log(float(step), values)

    __call__ = callback

    def log(self, step: float, values: Mapping[str, float]) -> None:
        """Record ``values`` at ``step`` and redraw."""
        for name, v in values.items():
            self.series.setdefault(name, []).append((step, float(v)))
        self.rows.append(dict(step=step, **values))
        if self.panel_names is None and values:
            self.panel_names = sorted({split_name(n)[0] for n in values})
            self._build_pane()
        self._draw(values)
        shown = self.status_text(values)
        self.status.value = f"<b>{self.title}</b> {self.step_name} {step:g}: {shown}"
        if self.verbose:
            print(f"[{self.title}] {self.step_name} {step:g}: {shown}", flush=True)

    # ------------------------------------------------------------ drawing
    def _build_pane(self) -> None:
        from plotly.subplots import make_subplots
        names = self.panel_names or []
        fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names)
        fig.update_layout(height=270, margin=dict(l=40, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.3))
        fig.update_xaxes(title_text=self.step_name)
        self.pane = PlotPane(fig)
        self.children = [self.status, self.pane.widget]

    def locate(self, name: str) -> tuple[str, str]:
        """``(panel, curve)`` of a series; ``panel_curve`` joins a chosen ``panel`` in :attr:`joins`.

        Example:
            >>> m = TrainingMonitor.for_distillation(verbose=False)
            >>> m.locate("loss"), m.locate("loss_image"), m.locate("val/R-sum")
            (('loss', 'total'), ('loss', 'image'), ('R-sum', 'val'))
        """
        panel, curve = split_name(name)
        head, _, tail = panel.partition("_")
        if self.panel_names and panel not in self.panel_names and tail and head in self.panel_names \
                and head in self.joins:
            return head, tail if curve == panel else f"{curve}/{tail}"
        return panel, "total" if curve == panel and panel in self.joins else curve

    def drawn(self, name: str) -> bool:
        """True when the series ``name`` belongs to a chosen panel (it is drawn)."""
        return bool(self.panel_names) and self.locate(name)[0] in self.panel_names

    def status_text(self, values: Mapping[str, float]) -> str:
        """The drawn values of one call, short: ``A loss 1.2, consensus auroc 0.81``.

        Example:
            >>> m = TrainingMonitor.for_dual_track(verbose=False)
            >>> m.status_text({"detection/A/auroc": 0.8, "gmm/A/separation": 2.0})
            'A auroc 0.8'
        """
        shown = [(self.locate(n), v) for n, v in values.items() if self.drawn(n)] if self.panel_names \
            else [(split_name(n), v) for n, v in values.items()]
        return ", ".join(f"{p} {v:.4g}" if c in (p, "total") else f"{c} {p} {v:.4g}" for (p, c), v in shown[:8])

    def _colour(self, curve: str) -> str:
        return self._curve_colours.setdefault(curve, COLOURS[len(self._curve_colours) % len(COLOURS)])

    def _draw(self, values: Mapping[str, float]) -> None:
        if self.pane is None or not self.panel_names:
            return
        with self.pane.batch():
            for name in values:
                panel, curve = self.locate(name)
                if panel not in self.panel_names:
                    continue
                xs, ys = zip(*self.series[name])
                if name not in self._traces:
                    col = self.panel_names.index(panel) + 1
                    first = curve not in {self.pane.fig.data[k].name for k in self._traces.values()}
                    self.pane.fig.add_scatter(x=list(xs), y=list(ys), mode="lines+markers", name=curve,
                                              legendgroup=curve, showlegend=first,
                                              line=dict(color=self._colour(curve)), row=1, col=col)
                    self._traces[name] = len(self.pane.fig.data) - 1
                else:
                    self.pane.fig.data[self._traces[name]].update(x=list(xs), y=list(ys))
            self.pane.fig.update_xaxes(**step_ticks([x for v in self.series.values() for x, _ in v]))
        self.pane.refresh()

    def plotted(self) -> list[str]:
        """Names of the series drawn so far."""
        return sorted(self._traces)

    def history(self) -> pd.DataFrame:
        """Every recorded value, one row per callback."""
        return pd.DataFrame(self.rows)

    def static_figure(self, names: Iterable[str] | None = None) -> Figure:
        """The curves as matplotlib, one axis per panel (all series when no panels were chosen)."""
        if names is None:
            names = self.plotted() or [n for n in sorted(self.series) if not self.panel_names or self.drawn(n)]
        by_panel: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for n in names:
            panel, curve = self.locate(n)
            by_panel.setdefault(panel, {})[curve] = self.series[n]
        if self.panel_names:
            by_panel = {p: by_panel[p] for p in self.panel_names if p in by_panel} | by_panel
        return plot_curves(by_panel, title=self.title, xlabel=self.step_name)
