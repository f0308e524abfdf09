"""CorrespondenceHeatmap: the learned soft correspondence P~ between synthetic images and texts.

Rows are synthetic images, columns synthetic texts. Sort both by the order the
pairs were drawn in, by diagonal strength, or by a hierarchical clustering of the
rows; view what moved off the diagonal (the default: each row normalised as the loss
sees it, the diagonal blanked, on the off-diagonal entries' own colour scale), the
learned matrix, the initial one, or their difference. Beside it: the mean off-diagonal
share of a row (and at the start) and the strongest off-diagonal pairs with their
images and texts; clicking one of them, or a cell, shows the synthetic image, the
nearest real captions of the text and the value.

Example:
    >>> import torch
    >>> h = CorrespondenceHeatmap(torch.tensor([[0.9, 0.2], [0.1, 0.6]]), text_labels=["a cat", "a dog"])
    >>> h.order.value = "diagonal strength"
    >>> h.select_display(0, 1)
    (0, 1)
    >>> round(h.value, 2)
    0.2
"""
from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from mdw_kit.viz import plot_correspondence
from widgets._static import PlotPane, StaticFigureMixin, image_widget, png_bytes

ORDERS = ("init order", "diagonal strength", "clustered")
VIEWS = ("off-diagonal", "learned", "initial", "learned - initial")
TOP_PAIRS = 6
CLICK_GRID_MAX = 200  # up to this many pairs an invisible point per cell takes the clicks


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def matrix_order(matrix: np.ndarray, how: str) -> np.ndarray:
    """A permutation of the ``M`` pairs: ``"init order"`` (identity), ``"diagonal strength"``
    (strongest ``P_ii`` first) or ``"clustered"`` (leaves of an average-linkage clustering of the
    rows and columns, so pairs that share texts sit together).

    Example:
        >>> matrix_order(np.diag([0.2, 0.9, 0.5]), "diagonal strength").tolist()
        [1, 2, 0]
    """
    m = np.asarray(matrix, dtype=np.float64)
    if how == "init order":
        return np.arange(len(m))
    if how == "diagonal strength":
        return np.argsort(-np.diag(m), kind="stable")
    if how == "clustered":
        if len(m) < 3:
            return np.arange(len(m))
        from scipy.cluster.hierarchy import leaves_list, linkage
        feats = np.concatenate([m, m.T], axis=1)
        return np.asarray(leaves_list(linkage(feats, method="average", metric="euclidean")))
    raise ValueError(f"unknown order '{how}'; use one of {ORDERS}")


class CorrespondenceHeatmap(StaticFigureMixin, W.VBox):
    """Interactive view of a correspondence matrix.

    Args:
        matrix: learned ``[M, M]`` matrix (rows: synthetic images, columns: synthetic texts).
        images: optional ``[M, 3, H, W]`` synthetic images.
        text_labels: optional per-text strings (e.g. the nearest real captions), ``M`` of them.
        init_matrix: optional starting matrix, for the "initial" and difference views.
        init_images: optional ``[M, 3, H, W]`` real images the synthetic ones started from.
        hover: also select on hover (a click always selects).

    State: :attr:`selected` ``(image i, text j)`` in original indices, :attr:`value` ``P_ij``.
    """

    def __init__(self, matrix: Any, images: Any = None, text_labels: Sequence[str] | None = None,
                 init_matrix: Any = None, init_images: Any = None, hover: bool = False):
        super().__init__()
        self.matrix = _np(matrix).astype(np.float64)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"CorrespondenceHeatmap: matrix must be [M, M], got {self.matrix.shape}")
        M = len(self.matrix)
        self.init_matrix = None if init_matrix is None else _np(init_matrix).astype(np.float64)
        if self.init_matrix is not None and self.init_matrix.shape != self.matrix.shape:
            raise ValueError(f"init_matrix shape {self.init_matrix.shape} differs from {self.matrix.shape}")
        for name, v in (("images", images), ("text_labels", text_labels), ("init_images", init_images)):
            if v is not None and len(v) != M:
                raise ValueError(f"CorrespondenceHeatmap: '{name}' has {len(v)} rows, the matrix {M}")
        self.images, self.init_images = images, init_images
        self.text_labels = list(text_labels) if text_labels is not None else [f"text {j}" for j in range(M)]
        self.selected: tuple[int, int] | None = None
        self.value: float | None = None
        self._build_controls()
        self.pane = PlotPane(self._figure())
        self.pane.on_click(0, self._on_point)
        if len(self.matrix) <= CLICK_GRID_MAX:
            self.pane.on_click(2, self._on_point)
        if hover and self.pane.live:
            self.pane.fig.data[0].on_hover(self._on_point)
        self.children = [W.HBox([self.order, self.view]),
                         W.HBox([self.pane.widget, self.detail_box], layout=W.Layout(align_items="flex-start"))]
        self.add_class("mdw-correspondence-heatmap")

    @classmethod
    def from_distilled(cls, dset: Any, real_text_emb: torch.Tensor | None = None,
                       captions: Sequence[str] | None = None, k: int = 2, **kw: Any) -> "CorrespondenceHeatmap":
        """From a :class:`~mdw_kit.distill.synthetic.DistilledSet`; texts are decoded as their ``k``
        nearest real captions when ``real_text_emb`` and ``captions`` are given."""
        labels = None
        if real_text_emb is not None and captions is not None:
            near = dset.nearest_captions(real_text_emb, captions, k=k)
            labels = [" | ".join(f"{c} ({s:.2f})" for c, s in row) for row in near]
        init = kw.pop("init_matrix", None)
        if init is None:
            init = initial_matrix(dset)
        return cls(dset.corr.matrix().detach(), images=dset.images.detach(), text_labels=labels,
                   init_matrix=init, init_images=dset.init_images, **kw)

    # ------------------------------------------------------------ controls
    def _build_controls(self) -> None:
        has_init = self.init_matrix is not None
        self.order = W.Dropdown(options=ORDERS, value=ORDERS[0], description="sort")
        self.view = W.ToggleButtons(options=VIEWS if has_init else VIEWS[:2], value=VIEWS[0])
        self.order.observe(lambda _: self._redraw(), names="value")
        self.view.observe(lambda _: self._redraw(), names="value")
        self.img = image_widget(128)
        self.init_img = image_widget(128)
        self.detail = W.HTML("<i>click a cell</i>", layout=W.Layout(width="300px"))
        self.detail.add_class("mdw-heatmap-detail")
        pics = [W.VBox([W.HTML("synthetic image"), self.img])]
        if self.init_images is not None:
            pics.append(W.VBox([W.HTML("initial real image"), self.init_img]))
        self.detail_box = W.VBox([W.HBox(pics), self.detail, self._moved_panel()])

    def _moved_panel(self) -> W.VBox:
        """The off-diagonal share and one button per strongest off-diagonal pair (click: select it)."""
        from mdw_kit.distill.diagnostics import off_diagonal_share, top_off_diagonal
        P = torch.as_tensor(self.matrix)
        start = "" if self.init_matrix is None else \
            f" (start {100 * off_diagonal_share(torch.as_tensor(self.init_matrix)):.1f}%)"
        self.moved_summary = W.HTML(f"<b>mean off-diagonal share of a row: {100 * off_diagonal_share(P):.1f}%"
                                    f"</b>{start}<br>strongest off-diagonal pairs (share of the row):")
        self.moved_summary.add_class("mdw-heatmap-moved")
        self.top_pairs = top_off_diagonal(P, TOP_PAIRS)
        rows = []
        for i, j, v in self.top_pairs:
            b = W.Button(description=f"image {i} -> text {j}: {100 * v:.1f}%", layout=W.Layout(width="220px"),
                         tooltip=f"text {j}: {self.text_labels[j]}")
            b.on_click(lambda _b, i=i, j=j: self.select(i, j))
            label = W.HTML(f"<small>{html.escape(self.text_labels[j])}</small>", layout=W.Layout(width="260px"))
            thumb = image_widget(40)
            if self.images is not None:
                thumb.value = png_bytes(self.images[i], min_side=40)
            rows.append(W.HBox([thumb, b, label]))
        return W.VBox([self.moved_summary, *rows])

    @property
    def permutation(self) -> np.ndarray:
        """Original index of each displayed row/column."""
        return matrix_order(self.matrix, self.order.value)

    def shown_matrix(self) -> np.ndarray:
        """The matrix of the current view, in the original order."""
        if self.view.value == "off-diagonal":
            from mdw_kit.distill.diagnostics import off_diagonal_view
            return off_diagonal_view(torch.as_tensor(self.matrix)).double().numpy()
        if self.view.value == "initial":
            return self.init_matrix
        if self.view.value == "learned - initial":
            return self.matrix - self.init_matrix
        return self.matrix

    # ------------------------------------------------------------ figure
    def _figure(self) -> Any:
        import plotly.graph_objects as go
        perm, z = self.permutation, self.shown_matrix()
        diff = self.view.value == "learned - initial"
        lim = float(np.abs(z).max()) or 1.0
        heat = go.Heatmap(z=z[np.ix_(perm, perm)], customdata=np.stack(np.meshgrid(perm, perm), -1),
                          colorscale="RdBu_r" if diff else "Viridis", zmid=0 if diff else None,
                          zmin=-lim if diff else None, zmax=lim if diff else None,
                          hovertemplate="image %{customdata[1]} / text %{customdata[0]}: %{z:.3f}<extra></extra>")
        marker = go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,
                            marker=dict(symbol="square-open", size=12, color="red", line=dict(width=2)))
        side = min(520, 260 + 2 * len(perm))
        traces = [heat, marker]
        if len(perm) <= CLICK_GRID_MAX:
            # Plotly's heatmap click events carry no usable point index in the browser, so an invisible
            # scatter point per cell (square, the cell's size) takes the clicks (see ``_on_point``).
            n = len(perm)
            cols, rows = np.meshgrid(np.arange(n), np.arange(n))
            traces.append(go.Scatter(x=cols.ravel(), y=rows.ravel(), mode="markers", hoverinfo="skip",
                                     showlegend=False, name="cells",
                                     marker=dict(symbol="square", size=max(4, side // max(n, 1)),
                                                 color="rgba(0,0,0,0)", opacity=0.01)))
        fig = go.Figure(traces)
        fig.update_layout(width=side + 80, height=side, margin=dict(l=50, r=10, t=30, b=40),
                          title=dict(text=self.view.value, font=dict(size=12)))
        fig.update_xaxes(title_text="synthetic text (display order)")
        fig.update_yaxes(title_text="synthetic image", autorange="reversed")
        return fig

    def _redraw(self) -> None:
        new = self._figure()
        with self.pane.batch():
            self.pane.fig.data[0].update(new.data[0])
            self.pane.fig.layout.title = new.layout.title
        self._mark()
        self.pane.refresh()

    def _mark(self) -> None:
        if self.selected is None:
            return
        pos = {int(o): r for r, o in enumerate(self.permutation)}
        i, j = self.selected
        self.pane.fig.data[1].update(x=[pos[j]], y=[pos[i]])

    def _on_point(self, _trace: Any, points: Any, _state: Any) -> None:
        """A click on the heatmap or on the cell grid above it: select the cell at display ``(y, x)``."""
        if points.xs:
            self.select_display(int(round(float(points.ys[0]))), int(round(float(points.xs[0]))))

    # ------------------------------------------------------------ selection
    def select_display(self, row: int, col: int) -> tuple[int, int]:
        """Select the cell shown at display ``(row, col)`` (what a click does)."""
        perm = self.permutation
        return self.select(int(perm[row]), int(perm[col]))

    def select(self, i: int, j: int) -> tuple[int, int]:
        """Select synthetic image ``i`` and text ``j`` (original indices) and show their details."""
        M = len(self.matrix)
        if not (0 <= i < M and 0 <= j < M):
            raise IndexError(f"cell ({i}, {j}) outside the {M} x {M} matrix")
        self.selected, self.value = (i, j), float(self.matrix[i, j])
        if self.images is not None:
            self.img.value = png_bytes(self.images[i], min_side=128)
        if self.init_images is not None:
            self.init_img.value = png_bytes(self.init_images[i], min_side=128)
        init = "" if self.init_matrix is None else \
            f" (initial {self.init_matrix[i, j]:.3f}, change {self.value - self.init_matrix[i, j]:+.3f})"
        top = np.argsort(-self.matrix[i])[:3]
        self.detail.value = (
            f"<div><b class='mdw-cell-value'>P[{i}, {j}] = {self.value:.3f}</b>{init}<br>"
            f"<b>text {j}</b> reads as: {html.escape(self.text_labels[j])}<br>"
            f"<b>text {i}</b> (the image's own) reads as: {html.escape(self.text_labels[i])}<br>"
            f"top texts of image {i}: " + ", ".join(f"{int(t)} ({self.matrix[i, t]:.2f})" for t in top) + "</div>")
        self._mark()
        self.pane.refresh()
        return self.selected

    def static_figure(self) -> Figure:
        """The current view in the current order, as matplotlib: the off-diagonal view with the
        strongest off-diagonal pairs listed, or the learned / initial / difference panels."""
        if self.view.value != "off-diagonal":
            return plot_correspondence(self.matrix, self.init_matrix, order=self.permutation)
        perm = self.permutation
        fig = Figure(figsize=(9.0, 3.8), layout="constrained")
        ax = fig.add_subplot(1, 2, 1)
        im = ax.imshow(self.shown_matrix()[np.ix_(perm, perm)], cmap="viridis", interpolation="nearest")
        ax.set_title(self.moved_summary.value.split("<br>")[0].replace("<b>", "").replace("</b>", ""), fontsize=9)
        ax.set_xlabel("synthetic text")
        ax.set_ylabel("synthetic image")
        fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row")
        lines = [f"image {i} -> text {j}: {100 * v:.1f}%\n   {self.text_labels[j][:60]}" for i, j, v in self.top_pairs]
        txt = fig.add_subplot(1, 2, 2)
        txt.axis("off")
        txt.text(0, 1, "strongest off-diagonal pairs\n\n" + "\n".join(lines), va="top", fontsize=8, family="monospace")
        return fig


def initial_matrix(dset: Any) -> np.ndarray | None:
    """The starting correspondence of a distilled set: a fresh one of the same configuration."""
    try:
        return dset.corr.initial().matrix().detach().cpu().numpy()
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
