"""NoiseExplorer: per-track histograms of clean probability / per-pair loss, a threshold, detection figures.

Moving the threshold re-flags the pairs (``p_clean < threshold`` is "noisy") and
updates precision, recall, F1, the confusion matrix against the injected
ground truth, and the estimated next to the true noise rate. Clicking a bar
shows the pairs of that bin (of that ground-truth class) in a gallery.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"p_clean_A": [0.9, 0.2, 0.8, 0.4], "p_clean_B": [0.8, 0.1, 0.6, 0.7],
    ...                    "true_clean": [True, False, True, False]})
    >>> ex = NoiseExplorer(df)
    >>> ex.threshold.value = 0.5
    >>> ex.metrics["precision"], ex.metrics["recall"]
    (1.0, 0.5)
"""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mdw_kit.viz import gaussian_mixture_density, plot_noise_histograms
from widgets._static import PlotPane, StaticFigureMixin, heavy

PROB, LOSS = "clean probability", "per-pair loss (min-max normalised)"
TRACK_COLUMNS = {"A": "p_clean_A", "B": "p_clean_B", "consensus": "p_clean"}


def mixture_params(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"weight", "mean", "var"}`` of a 1-D mixture given either those keys or the
    ``weights`` / ``means`` / ``stds`` of :func:`mdw_kit.experts.gmm.fit_clean_probability`.

    Example:
        >>> mixture_params({"weights": [0.5, 0.5], "means": [0.1, 0.8], "stds": [0.1, 0.2]})["var"].round(2).tolist()
        [0.01, 0.04]
    """
    if "weight" in info:
        return {k: np.asarray(info[k], dtype=np.float64) for k in ("weight", "mean", "var")}
    return {"weight": np.asarray(info["weights"], dtype=np.float64),
            "mean": np.asarray(info["means"], dtype=np.float64),
            "var": np.asarray(info["stds"], dtype=np.float64) ** 2}


def confusion(flag_noisy: np.ndarray, true_clean: np.ndarray) -> dict[str, int]:
    """Counts of flagged/kept against truly noisy/clean pairs (positive class: noisy).

    Example:
        >>> confusion(np.array([True, False]), np.array([False, True]))
        {'tp': 1, 'fp': 0, 'fn': 0, 'tn': 1}
    """
    noisy = ~true_clean.astype(bool)
    return {"tp": int((flag_noisy & noisy).sum()), "fp": int((flag_noisy & ~noisy).sum()),
            "fn": int((~flag_noisy & noisy).sum()), "tn": int((~flag_noisy & ~noisy).sum())}


def threshold_metrics(p_clean: np.ndarray, true_clean: np.ndarray | None, threshold: float) -> dict[str, Any]:
    """Estimated noise rate at ``threshold`` and, with ground truth, precision / recall / F1 / confusion.

    Example:
        >>> m = threshold_metrics(np.array([0.9, 0.1, 0.3]), np.array([True, False, True]), 0.5)
        >>> m["estimated_noise_rate"], m["precision"], m["recall"], m["true_noise_rate"]
        (0.6667, 0.5, 1.0, 0.3333)
    """
    flag = p_clean < threshold
    out: dict[str, Any] = {"threshold": float(threshold), "flagged": int(flag.sum()),
                           "estimated_noise_rate": round(float(flag.mean()), 4) if len(flag) else 0.0,
                           "mean_noise_score": round(float((1 - p_clean).mean()), 4) if len(flag) else 0.0}
    if true_clean is not None:
        c = confusion(flag, true_clean)
        prec = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
        rec = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        out.update(c, precision=round(prec, 4), recall=round(rec, 4), f1=round(f1, 4),
                   true_noise_rate=round(float((~true_clean).mean()), 4))
    return out


class NoiseExplorer(StaticFigureMixin, W.VBox):
    """Histograms per track with a threshold slider and detection figures.

    Args:
        table: one row per training pair with ``p_clean_A``, ``p_clean_B`` (``p_clean`` defaults to
            their mean) and optionally ``true_clean`` (what ``NoiseReport.to_dataframe()`` gives).
        losses: optional ``{"A": [N], "B": [N]}`` per-pair losses (shown min-max normalised).
        mixtures: optional ``{"A": info, "B": info}`` fitted mixtures on the normalised losses.
        gallery: optional :class:`~widgets.gallery.PairGallery` whose pairs are the table rows.
        threshold: starting threshold; bins: histogram bins on ``[0, 1]``.
    """

    def __init__(self, table: pd.DataFrame, losses: Mapping[str, Any] | None = None,
                 mixtures: Mapping[str, Mapping[str, Any]] | None = None, gallery: Any = None,
                 threshold: float = 0.5, bins: int = 20):
        super().__init__()
        self.table = self._check_table(table)
        self.true_clean = self.table["true_clean"].to_numpy(bool) if "true_clean" in self.table else None
        self.losses = {k: self._normalise(v, k) for k, v in (losses or {}).items()}
        self.mixtures = {k: mixture_params(v) for k, v in (mixtures or {}).items()}
        self.gallery, self.bins = gallery, int(bins)
        self.edges = np.linspace(0.0, 1.0, self.bins + 1)
        self.selected_pairs: np.ndarray = np.zeros(0, dtype=np.int64)
        self.quantity = W.ToggleButtons(options=[PROB] + ([LOSS] if self.losses else []), value=PROB,
                                        description="show")
        self.threshold = heavy(W.FloatSlider, value=float(threshold), min=0.0, max=1.0, step=0.01,
                               description="threshold", readout_format=".2f")
        self.stats = W.HTML()
        self.selection_label = W.HTML("<i>click a bar to list its pairs</i>")
        self.out = W.Output()
        self.pane = PlotPane(self._figure())
        self.quantity.observe(lambda _: self._redraw(), names="value")
        self.threshold.observe(lambda _: self._update_threshold(), names="value")
        self.threshold_row = W.HBox([self.threshold])
        self.children = self._parts()
        self.add_class("mdw-noise-explorer")
        self._attach_clicks()
        self._update_threshold()

    @classmethod
    def from_report(cls, report: Any, dataset: Any = None, **kw: Any) -> "NoiseExplorer":
        """From a ``NoiseReport``; ``dataset`` (the training split it scored) adds a pair gallery."""
        gallery = None
        if dataset is not None:
            from widgets.gallery import PairGallery
            gallery = PairGallery.from_dataset(dataset, report, page_size=8)
        return cls(report.to_dataframe(), gallery=gallery, threshold=report.threshold, **kw)

    # ------------------------------------------------------------ inputs
    @staticmethod
    def _check_table(table: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("p_clean_A", "p_clean_B") if c not in table]
        if missing:
            raise ValueError(f"NoiseExplorer: table lacks column(s) {missing}; pass NoiseReport.to_dataframe()")
        table = table.reset_index(drop=True).copy()
        if "p_clean" not in table:
            table["p_clean"] = 0.5 * (table["p_clean_A"] + table["p_clean_B"])
        return table

    def _normalise(self, v: Any, track: str) -> np.ndarray:
        x = np.asarray(getattr(v, "numpy", lambda: v)(), dtype=np.float64).reshape(-1)
        if len(x) != len(self.table):
            raise ValueError(f"NoiseExplorer: losses['{track}'] has {len(x)} rows, the table {len(self.table)}")
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)

    # ------------------------------------------------------------ data
    def panels(self) -> list[str]:
        """The tracks shown for the current quantity."""
        return ["A", "B", "consensus"] if self.quantity.value == PROB else sorted(self.losses)

    def values(self, panel: str) -> np.ndarray:
        """The shown quantity of every pair in ``panel``."""
        if self.quantity.value == PROB:
            return self.table[TRACK_COLUMNS[panel]].to_numpy(np.float64)
        return self.losses[panel]

    def _bin_of(self, v: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, v, side="right") - 1, 0, self.bins - 1)

    def _groups(self) -> list[tuple[str, np.ndarray | None, str]]:
        if self.true_clean is None:
            return [("all pairs", None, "#888888")]
        return [("clean (truth)", self.true_clean, "#2ca02c"), ("noisy (truth)", ~self.true_clean, "#d62728")]

    # ------------------------------------------------------------ figure
    def _figure(self) -> Any:
        from plotly.subplots import make_subplots
        panels = self.panels()
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"track {p}" for p in panels])
        centers = 0.5 * (self.edges[1:] + self.edges[:-1])
        for c, panel in enumerate(panels, start=1):
            v = self.values(panel)
            for name, mask, colour in self._groups():
                counts = np.bincount(self._bin_of(v if mask is None else v[mask]), minlength=self.bins)
                fig.add_bar(x=centers, y=counts, name=name, marker_color=colour, showlegend=c == 1,
                            legendgroup=name, meta={"panel": panel, "group": name}, row=1, col=c)
            if self.quantity.value == LOSS and panel in self.mixtures:
                self._add_mixture(fig, panel, len(v), c)
            fig.update_xaxes(title_text=self.quantity.value if c == 1 else None, range=[0, 1], row=1, col=c)
        fig.update_layout(barmode="stack", bargap=0.05, height=300, margin=dict(l=40, r=10, t=40, b=40),
                          legend=dict(orientation="h", y=-0.25))
        return fig

    def _add_mixture(self, fig: Any, panel: str, n: int, col: int) -> None:
        xs = np.linspace(0, 1, 200)
        mix = self.mixtures[panel]
        dens = gaussian_mixture_density(xs, mix["weight"], mix["mean"], mix["var"]) * n / self.bins
        for k, name in enumerate(("clean component", "noisy component")[:dens.shape[1]]):
            fig.add_scatter(x=xs, y=dens[:, k], mode="lines", name=name, showlegend=col == 1,
                            line=dict(width=2, dash="dot"), meta={"panel": panel, "group": name}, row=1, col=col)

    def _parts(self) -> list[W.Widget]:
        parts = [W.HBox([self.quantity]), self.pane.widget, self.threshold_row, self.stats,
                 self.selection_label, self.out]
        return parts + ([self.gallery] if self.gallery is not None else [])

    def _redraw(self) -> None:
        """A new figure for the chosen quantity (a fresh pane: the panels and axes differ per view);
        the threshold row shows only on the clean-probability view, where the threshold is drawn."""
        self.pane = PlotPane(self._figure())
        self.threshold_row.layout.display = None if self.quantity.value == PROB else "none"
        self.children = self._parts()
        self._attach_clicks()
        self._update_threshold()

    def _attach_clicks(self) -> None:
        for k, tr in enumerate(self.pane.fig.data):
            if tr.type == "bar":
                self.pane.on_click(k, self._on_click)

    def _on_click(self, trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.select_bin(trace.meta["panel"], int(points.point_inds[0]), trace.meta["group"])

    # ------------------------------------------------------------ interactions
    def _update_threshold(self) -> None:
        t = float(self.threshold.value)
        self.metrics = threshold_metrics(self.table["p_clean"].to_numpy(np.float64), self.true_clean, t)
        shapes = []
        if self.quantity.value == PROB:
            shapes = [dict(type="line", x0=t, x1=t, y0=0, y1=1, xref=f"x{'' if c == 1 else c}",
                           yref=f"y{'' if c == 1 else c} domain", line=dict(color="black", dash="dash"))
                      for c in range(1, len(self.panels()) + 1)]
        with self.pane.batch():
            self.pane.fig.layout.shapes = shapes
        self.pane.refresh()
        self.stats.value = self._stats_html()

    def _stats_html(self) -> str:
        m = self.metrics
        rows = [f"flagged noisy (consensus p_clean &lt; {m['threshold']:.2f}): <b>{m['flagged']}</b> of "
                f"{len(self.table)}", f"estimated noise rate: <b>{m['estimated_noise_rate']:.3f}</b>"
                f" (mean 1 - p_clean: {m['mean_noise_score']:.3f})"]
        if "precision" in m:
            rows[1] += f" &nbsp; true noise rate: <b>{m['true_noise_rate']:.3f}</b>"
            rows.append(f"precision <b>{m['precision']:.3f}</b> &nbsp; recall <b>{m['recall']:.3f}</b> "
                        f"&nbsp; F1 <b>{m['f1']:.3f}</b>")
            rows.append("<table style='border-collapse:collapse'><tr><td></td><th>truly noisy</th>"
                        "<th>truly clean</th></tr>"
                        f"<tr><th>flagged</th><td class='mdw-tp'>{m['tp']}</td><td>{m['fp']}</td></tr>"
                        f"<tr><th>kept</th><td>{m['fn']}</td><td>{m['tn']}</td></tr></table>")
        return "<div class='mdw-noise-stats'>" + "<br>".join(rows) + "</div>"

    def select_bin(self, panel: str, bin_index: int, group: str | None = None) -> np.ndarray:
        """Select the pairs of one histogram bar (what a click does) and show them."""
        v = self.values(panel)
        keep = self._bin_of(v) == int(bin_index)
        for name, mask, _ in self._groups():
            if group == name and mask is not None:
                keep &= mask
        self.selected_pairs = np.flatnonzero(keep)
        lo, hi = self.edges[bin_index], self.edges[bin_index + 1]
        label = f"track {panel}, {self.quantity.value} in [{lo:.2f}, {hi:.2f})" + (f", {group}" if group else "")
        self.selection_label.value = f"<b>{len(self.selected_pairs)} pairs</b>: {html.escape(label)}"
        if self.gallery is not None:
            self.gallery.show_pairs(self.selected_pairs, label=label)
        else:
            self.out.clear_output()
            with self.out:
                from IPython.display import display
                display(self.table.iloc[self.selected_pairs].head(20))
        return self.selected_pairs

    def static_figure(self) -> Figure:
        """The histograms (with mixtures on the loss view) and the threshold, as matplotlib."""
        panels = self.panels()
        prob = self.quantity.value == PROB
        return plot_noise_histograms({p: self.values(p) for p in panels}, self.true_clean,
                                     None if prob else self.mixtures, bins=self.edges,
                                     xlabel=self.quantity.value,
                                     threshold=float(self.threshold.value) if prob else None)
