"""PairGallery: a paged grid of image-caption pairs, filtered by split, injected noise and clean probability.

Example:
    >>> import numpy as np, torch
    >>> g = PairGallery(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["a", "b", "c", "d"],
    ...                 split=["train", "train", "val", "test"], page_size=2)
    >>> g.split_filter.value = "train"
    >>> g.matches.tolist()
    [0, 1]
"""
from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from mdw_kit.viz import plot_pairs
from widgets._static import StaticFigureMixin, heavy, image_widget, png_bytes

def _vector(x: Any, n: int, name: str, dtype: Any) -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=dtype).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"PairGallery: '{name}' has {len(arr)} rows but there are {n} captions")
    return arr


class PairGallery(StaticFigureMixin, W.VBox):
    """A paged grid of pairs with filters.

    Args:
        images: ``[I, 3, H, W]`` pixels (uint8 or float in ``[0, 1]``).
        captions: ``P`` captions; pair ``p`` shows ``images[pair_image[p]]``.
        pair_image: ``[P]`` image row of each pair (default ``arange(P)``).
        split: ``[P]`` split names, or None (no split filter).
        injected_noise: ``[P]`` True where noise gave the pair a wrong caption, or None.
        p_clean: ``[P]`` predicted clean probability (NaN where unscored), or None.
        page_size, ncols: grid shape.
        noise_label: what a flagged pair is called (the filter choice and the red tag), e.g.
            ``"started mismatched"`` for synthetic pairs whose starting pair carried a wrong caption.

    A filter whose data is missing (no split, no noise flag, no scores) is not shown.

    State: :attr:`matches` (pairs passing the filters), :attr:`page`, :meth:`page_pairs`.
    """

    def __init__(self, images: torch.Tensor, captions: Sequence[str], pair_image: Any = None,
                 split: Any = None, injected_noise: Any = None, p_clean: Any = None,
                 page_size: int = 12, ncols: int = 4, title: str = "pairs", noise_label: str = "injected noise"):
        super().__init__()
        n = len(captions)
        self.images, self.captions, self.title = images, list(captions), title
        self.pair_image = _vector(np.arange(n) if pair_image is None else pair_image, n, "pair_image", np.int64)
        self.split = _vector(split, n, "split", object)
        self.noisy = _vector(injected_noise, n, "injected_noise", bool)
        self.p_clean = _vector(p_clean, n, "p_clean", np.float64)
        self.page_size, self.ncols, self.page = int(page_size), int(ncols), 0
        self.noise_label = noise_label
        self.restrict: np.ndarray | None = None
        self._restrict_label = ""
        self._build_controls()
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat({self.ncols}, 1fr)",
                                              grid_gap="6px"))
        pager = W.HBox([self.prev_btn, self.page_label, self.next_btn, self.clear_btn])
        self.children = ([W.HBox(self._filters)] if self._filters else []) + [pager, self.grid]
        self.add_class("mdw-pair-gallery")
        self.refresh()

    @classmethod
    def from_dataset(cls, ds: Any, report: Any = None, **kw: Any) -> "PairGallery":
        """A gallery of a :class:`~mdw_kit.data.base.PairDataset`; ``report`` (a NoiseReport or an
        array) gives clean probabilities for all pairs or for the training pairs in order."""
        p = None
        if report is not None:
            scores = np.asarray(getattr(report, "p_clean", report), dtype=np.float64).reshape(-1)
            train = np.flatnonzero(ds.pair_split == "train")
            if len(scores) == len(ds):
                p = scores
            elif len(scores) == len(train):
                p = np.full(len(ds), np.nan)
                p[train] = scores
            else:
                raise ValueError(f"report has {len(scores)} scores; the dataset has {len(ds)} pairs "
                                 f"({len(train)} training)")
        noisy = (~ds.clean).numpy() if ds.noise_known else None
        return cls(ds.images, ds.captions, ds.pair_image, ds.pair_split, noisy, p, **kw)

    # ------------------------------------------------------------ controls
    def _build_controls(self) -> None:
        splits = ["all"] + ([] if self.split is None else sorted(set(self.split.tolist())))
        self.split_filter = W.Dropdown(options=splits, value="all", description="split",
                                       layout=W.Layout(width="180px"))
        self.noise_filter = W.Dropdown(options=("all", self.noise_label, "clean"), value="all",
                                       description="pairs", layout=W.Layout(width="260px"))
        self.p_range = heavy(W.FloatRangeSlider, value=(0.0, 1.0), min=0.0, max=1.0, step=0.01,
                             description="p(clean)", readout_format=".2f")
        present = (self.split is not None, self.noisy is not None, self.p_clean is not None)
        self._filters = [w for w, ok in zip((self.split_filter, self.noise_filter, self.p_range), present) if ok]
        for w in self._filters:
            w.observe(self._on_filter, names="value")
        self.prev_btn = W.Button(description="previous", icon="arrow-left", layout=W.Layout(width="110px"))
        self.next_btn = W.Button(description="next", icon="arrow-right", layout=W.Layout(width="110px"))
        self.clear_btn = W.Button(description="show all", layout=W.Layout(width="110px", display="none"))
        self.page_label = W.Label()
        self.page_label.add_class("mdw-page-label")
        self.prev_btn.on_click(lambda _: self.go_to(self.page - 1))
        self.next_btn.on_click(lambda _: self.go_to(self.page + 1))
        self.clear_btn.on_click(lambda _: self.show_pairs(None))

    def _on_filter(self, _change: dict) -> None:
        self.page = 0
        self.refresh()

    # ------------------------------------------------------------ state
    @property
    def matches(self) -> np.ndarray:
        """Indices of the pairs that pass every filter (and the explicit selection, if any)."""
        keep = np.ones(len(self.captions), dtype=bool)
        if self.split is not None and self.split_filter.value != "all":
            keep &= self.split == self.split_filter.value
        if self.noisy is not None and self.noise_filter.value != "all":
            keep &= self.noisy if self.noise_filter.value == self.noise_label else ~self.noisy
        if self.p_clean is not None and tuple(self.p_range.value) != (0.0, 1.0):
            lo, hi = self.p_range.value
            with np.errstate(invalid="ignore"):
                keep &= (self.p_clean >= lo) & (self.p_clean <= hi)
        idx = np.flatnonzero(keep)
        return idx if self.restrict is None else idx[np.isin(idx, self.restrict)]

    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self.matches) // self.page_size))

    def page_pairs(self) -> np.ndarray:
        """Pair indices shown on the current page."""
        return self.matches[self.page * self.page_size:(self.page + 1) * self.page_size]

    def go_to(self, page: int) -> None:
        """Show page ``page`` (clamped to the valid range)."""
        self.page = int(np.clip(page, 0, self.n_pages - 1))
        self.refresh()

    def show_pairs(self, pairs: Sequence[int] | None, label: str = "") -> None:
        """Restrict the gallery to ``pairs`` (None shows every pair again)."""
        self.restrict = None if pairs is None else np.asarray(pairs, dtype=np.int64)
        self.clear_btn.layout.display = None if pairs is not None else "none"
        self._restrict_label = label
        self.page = 0
        self.refresh()

    # ------------------------------------------------------------ drawing
    def _cell(self, p: int) -> W.Widget:
        img = image_widget(104)
        img.value = png_bytes(self.images[self.pair_image[p]])
        bits = [f"<b>#{p}</b>"]
        if self.split is not None:
            bits.append(str(self.split[p]))
        if self.p_clean is not None and np.isfinite(self.p_clean[p]):
            bits.append(f"p={self.p_clean[p]:.2f}")
        noisy = self.noisy is not None and bool(self.noisy[p])
        if noisy:
            bits.append(f"<span style='color:#c00'>{html.escape(self.noise_label)}</span>")
        text = W.HTML(f"<div style='font-size:11px;line-height:1.2'>{' '.join(bits)}<br>"
                      f"{html.escape(self.captions[p])}</div>", layout=W.Layout(width="150px"))
        border = "3px solid #d33" if noisy else "1px solid #ccc"
        box = W.VBox([img, text], layout=W.Layout(border=border, padding="3px"))
        box.add_class("mdw-gallery-cell")
        return box

    def refresh(self) -> None:
        """Redraw the current page and the page label."""
        self.page = int(np.clip(self.page, 0, self.n_pages - 1))
        shown = self.page_pairs()
        self.grid.children = [self._cell(int(p)) for p in shown]
        extra = f" [{self._restrict_label or 'selection'}]" if self.restrict is not None else ""
        self.page_label.value = f"page {self.page + 1} / {self.n_pages} ({len(self.matches)} pairs{extra})"
        self.prev_btn.disabled = self.page == 0
        self.next_btn.disabled = self.page >= self.n_pages - 1

    def static_figure(self) -> Figure:
        """The current page as a matplotlib grid (red frames on flagged pairs)."""
        shown = self.page_pairs()
        if len(shown) == 0:
            fig = Figure(figsize=(4, 1))
            fig.text(0.5, 0.5, "no pairs match the filters", ha="center")
            return fig
        titles = [f"#{p}" + ("" if self.p_clean is None or not np.isfinite(self.p_clean[p])
                             else f" p={self.p_clean[p]:.2f}") for p in shown]
        flags = None if self.noisy is None else [bool(self.noisy[p]) for p in shown]
        titles = [t + (f" ({self.noise_label})" if flags is not None and f else "") for t, f in
                  zip(titles, flags or [False] * len(titles))]
        return plot_pairs([self.images[self.pair_image[p]] for p in shown],
                          [self.captions[p] for p in shown], titles=titles, ncols=self.ncols, flags=flags)
