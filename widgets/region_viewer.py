"""RegionViewer: a synthetic image with its CEO region map overlaid, beside its initial real image.

Correspondence-enhanced optimisation (CEO) scales each pixel's update by a
region map: where the image matters for the texts it corresponds to, pixels move
more. The viewer steps through the maps saved during distillation.

Example:
    >>> import torch
    >>> maps = [(0, torch.rand(2, 8, 8)), (50, torch.rand(2, 8, 8))]
    >>> v = RegionViewer(torch.rand(2, 3, 8, 8), maps, init_images=torch.rand(2, 3, 8, 8))
    >>> v.iteration.value = 0
    >>> v.shown_iteration
    0
"""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from mdw_kit.evaluation.pointing import map_peak
from mdw_kit.viz import overlay_region, plot_region_history, to_hwc
from widgets._static import StaticFigureMixin, heavy, image_widget, png_bytes


def _draw_boxes(arr: np.ndarray, objects: Sequence[Mapping[str, Any]], colour=(0.55, 0.55, 0.55)) -> np.ndarray:
    """Outline the boxes ``[x0, y0, x1, y1]`` (ends exclusive) on an ``[H, W, 3]`` float image."""
    out = arr.copy()
    h, w = out.shape[:2]
    for obj in objects:
        x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w) - 1, min(y1, h) - 1
        if x1 < x0 or y1 < y0:
            continue
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = colour
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = colour
    return out


class RegionViewer(StaticFigureMixin, W.VBox):
    """Region maps over synthetic images, with sliders for the pair, the saved iteration and the opacity.

    Args:
        images: final synthetic images ``[M, 3, H, W]``, or ``{iteration: [M, 3, H, W]}`` when the
            images of each saved iteration are kept. With final images only, iteration 0 shows the
            initial images (where the synthetic ones start) and later iterations show the final
            image under that iteration's map (the caption says so).
        map_history: ``[(iteration, maps [M, h, w]), ...]`` (``DistilledSet.map_history``).
        init_images: optional ``[M, 3, H, W]`` real images the synthetic ones started from.
        labels: optional per-pair text (e.g. the nearest real caption of its top text).
        boxes: optional per-pair object boxes of the initial image, outlined on it.
        alpha: starting opacity of the map.
    """

    def __init__(self, images: Any, map_history: Sequence[tuple[int, Any]], init_images: Any = None,
                 labels: Sequence[str] | None = None, boxes: Sequence[Sequence[Mapping[str, Any]]] | None = None,
                 alpha: float = 0.5):
        super().__init__()
        if not map_history:
            raise ValueError("RegionViewer: no region maps were saved (run distillation with CEO on)")
        self.history = [(int(it), m) for it, m in map_history]
        self.images, self.init_images, self.labels, self.boxes = images, init_images, labels, boxes
        M = int(self.history[0][1].shape[0])
        for name, v in (("init_images", init_images), ("labels", labels), ("boxes", boxes)):
            if v is not None and len(v) != M:
                raise ValueError(f"RegionViewer: '{name}' has {len(v)} rows but the maps cover {M} pairs")
        iters = [it for it, _ in self.history]
        self.pair = heavy(W.IntSlider, value=0, min=0, max=M - 1, description="pair")
        self.iteration = heavy(W.SelectionSlider, options=iters, value=iters[-1], description="iteration")
        self.opacity = heavy(W.FloatSlider, value=float(alpha), min=0.0, max=1.0, step=0.05,
                             description="opacity")
        self.iteration.add_class("mdw-region-iteration")
        for w in (self.pair, self.iteration, self.opacity):
            w.observe(lambda _: self.refresh(), names="value")
        self.init_img, self.overlay_img = image_widget(192), image_widget(192)
        self.caption = W.HTML(layout=W.Layout(width="420px"))
        self.caption.add_class("mdw-region-caption")
        left = [W.VBox([W.HTML("initial real image"), self.init_img])] if init_images is not None else []
        self.children = [W.HBox([self.pair, self.iteration, self.opacity]),
                         W.HBox(left + [W.VBox([W.HTML("synthetic image + region map"), self.overlay_img])]),
                         self.caption]
        self.add_class("mdw-region-viewer")
        self.refresh()

    @classmethod
    def from_distilled(cls, dset: Any, labels: Sequence[str] | None = None,
                       boxes: Sequence[Sequence[Mapping[str, Any]]] | None = None, **kw: Any) -> "RegionViewer":
        """From a :class:`~mdw_kit.distill.synthetic.DistilledSet` with saved region maps."""
        return cls(dset.images.detach(), dset.map_history, init_images=dset.init_images,
                   labels=labels, boxes=boxes, **kw)

    # ------------------------------------------------------------ state
    @property
    def shown_iteration(self) -> int:
        return int(self.iteration.value)

    def current_map(self) -> Any:
        """The map of the shown pair at the shown iteration."""
        return dict(self.history)[self.shown_iteration][self.pair.value]

    def image_at(self, iteration: int, pair: int) -> tuple[Any, str]:
        """The synthetic image of ``pair`` at ``iteration`` (as far as it was saved) and a note."""
        if isinstance(self.images, Mapping) and iteration in self.images:
            return self.images[iteration][pair], ""
        if iteration == 0 and self.init_images is not None:
            return self.init_images[pair], ""
        return self.images[pair], " (final image; map of this iteration)"

    def current_image(self) -> Any:
        return self.image_at(self.shown_iteration, self.pair.value)[0]

    def refresh(self) -> None:
        """Redraw both images and the caption for the current slider values."""
        i, region = self.pair.value, self.current_map()
        img, note = self.image_at(self.shown_iteration, i)
        self.overlay_img.value = png_bytes(overlay_region(img, region, float(self.opacity.value)), min_side=192)
        if self.init_images is not None:
            init = to_hwc(self.init_images[i])
            if self.boxes is not None:
                init = _draw_boxes(init, self.boxes[i])
            self.init_img.value = png_bytes(init, min_side=192)
        x, y = map_peak(region, to_hwc(img).shape[:2])
        text = "" if self.labels is None else f"<br>top text reads as: {html.escape(self.labels[i])}"
        self.caption.value = (f"<span class='mdw-region-state'>pair {i}, iteration {self.shown_iteration}</span>"
                              f"{note}, map peak at (x={x}, y={y}){text}")

    def static_figure(self) -> Figure:
        """The shown pair across (up to six) saved iterations, as matplotlib."""
        i = self.pair.value
        picks = self.history if len(self.history) <= 6 else \
            [self.history[k] for k in np.linspace(0, len(self.history) - 1, 6).round().astype(int)]
        imgs = [self.image_at(it, i)[0] for it, _ in picks]
        return plot_region_history(None if self.init_images is None else self.init_images[i], imgs,
                                   [m[i] for _, m in picks], [it for it, _ in picks],
                                   alpha=float(self.opacity.value),
                                   title=f"pair {i}" + ("" if self.labels is None else f": {self.labels[i]}"),
                                   boxes=None if self.boxes is None else self.boxes[i])
