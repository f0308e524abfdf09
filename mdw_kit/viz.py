"""Static matplotlib helpers: region overlays, pair grids, noise histograms, correspondence maps.

Visual helpers live apart from the algorithms (as captum keeps
``visualize_image_attr`` apart from its attribution methods). Every plotting
function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``,
so nothing here touches global state or imports a Jupyter package; the widget
layer displays these figures as the static fallback of each widget. The pointing game of region
maps is :mod:`mdw_kit.evaluation.pointing`.

Example:
    >>> import torch
    >>> img = torch.rand(3, 16, 16)
    >>> heat = torch.zeros(4, 4); heat[1, 2] = 1.0
    >>> overlay_region(img, heat, alpha=0.5).shape
    (16, 16, 3)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps

from mdw_kit.evaluation.pointing import resize_map  # noqa: F401  (a map at an image's size)
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ArrayLike = torch.Tensor | np.ndarray


# ---------------------------------------------------------------- conversions
def to_hwc(image: ArrayLike) -> np.ndarray:
    """An image as float ``[H, W, 3]`` in ``[0, 1]``.

    Accepts ``[3, H, W]`` or ``[H, W, 3]``, uint8 (0..255) or float (0..1, clipped).

    Example:
        >>> to_hwc(torch.zeros(3, 4, 5, dtype=torch.uint8)).shape
        (4, 5, 3)
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image: expected 3 dimensions ([3,H,W] or [H,W,3]), got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] != 3:
        raise ValueError(f"image: expected 3 colour channels, got shape {arr.shape}")
    arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    return np.clip(arr, 0.0, 1.0)


def overlay_region(image: ArrayLike, region: ArrayLike, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a region map (any resolution) over an image: ``(1 - a*m) * image + a*m * colour(m)``.

    The map is resized to the image, scaled to ``[0, 1]`` and coloured with
    ``cmap``; each pixel's blend weight is ``alpha`` times its map value, so
    unemphasised regions keep their own colours. ``alpha=0`` returns the image.

    Example:
        >>> out = overlay_region(torch.ones(3, 8, 8), torch.rand(2, 2), alpha=0.0)
        >>> float(out.min())
        1.0
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    img = to_hwc(image)
    m = resize_map(region, img.shape[:2])
    colour = colormaps[cmap](m)[..., :3]
    w = alpha * m[..., None]
    return (1.0 - w) * img + w * colour


# ---------------------------------------------------------------- figures
def plot_pairs(images: ArrayLike | Sequence[ArrayLike], captions: Sequence[str],
               titles: Sequence[str] | None = None, ncols: int = 4,
               flags: Sequence[bool] | None = None, wrap: int = 28) -> Figure:
    """A grid of image-caption pairs; ``flags`` (True = suspect) draws a red frame.

    Example:
        >>> fig = plot_pairs(torch.rand(2, 3, 8, 8), ["a red circle", "a blue square"])
        >>> len(fig.axes)
        2
    """
    n = len(captions)
    if len(images) != n:
        raise ValueError(f"plot_pairs: {len(images)} images but {n} captions")
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(2.4 * ncols, 2.9 * nrows), layout="constrained")
    for k in range(n):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(to_hwc(images[k]), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        text = _wrap(captions[k], wrap)
        if titles is not None:
            text = f"{titles[k]}\n{text}"
        ax.set_title(text, fontsize=8)
        if flags is not None and flags[k]:
            for side in ax.spines.values():
                side.set_edgecolor("red"), side.set_linewidth(3)
    return fig


def _wrap(text: str, width: int) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines[:3]) + ("..." if len(lines) > 3 else "")


def gaussian_mixture_density(x: np.ndarray, weight: Sequence[float], mean: Sequence[float],
                             var: Sequence[float]) -> np.ndarray:
    """``[len(x), K]`` weighted component densities of a 1-D Gaussian mixture.

    Example:
        >>> gaussian_mixture_density(np.array([0.0]), [1.0], [0.0], [1.0]).round(4).tolist()
        [[0.3989]]
    """
    x = np.asarray(x, dtype=np.float64)[:, None]
    w, mu, v = (np.asarray(a, dtype=np.float64)[None] for a in (weight, mean, var))
    return w * np.exp(-0.5 * (x - mu) ** 2 / v) / np.sqrt(2 * np.pi * v)


def plot_noise_histograms(values: Mapping[str, ArrayLike], true_clean: ArrayLike | None = None,
                          mixtures: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                          bins: int | Sequence[float] = 30, xlabel: str = "per-pair loss", threshold: float | None = None) -> Figure:
    """One histogram per track (e.g. ``{"A": loss_a, "B": loss_b}``), split by ground truth when known.

    ``mixtures[track]`` with keys ``weight``, ``mean``, ``var`` draws the fitted
    mixture (two components: the clean one first, as :mod:`mdw_kit.experts.gmm` orders them) (its densities scaled to the histogram counts) on the
    same axis as the values. ``threshold`` draws a vertical line.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> v = {"A": rng.normal(size=50), "B": rng.normal(size=50)}
        >>> fig = plot_noise_histograms(v, mixtures={"A": {"weight": [1], "mean": [0], "var": [1]}})
        >>> len(fig.axes)
        2
    """
    tracks = list(values)
    fig = Figure(figsize=(4.2 * len(tracks), 3.2), layout="constrained")
    clean = None if true_clean is None else _as_np(true_clean).astype(bool)
    for k, name in enumerate(tracks):
        ax = fig.add_subplot(1, len(tracks), k + 1)
        v = _as_np(values[name]).astype(np.float64)
        edges = np.histogram_bin_edges(v, bins=bins)
        if clean is None:
            ax.hist(v, bins=edges, color="tab:gray", alpha=0.8, label="all pairs")
        else:
            ax.hist([v[clean], v[~clean]], bins=edges, stacked=True, color=["tab:green", "tab:red"],
                    alpha=0.8, label=["clean (truth)", "noisy (truth)"])
        if mixtures and name in mixtures:
            _draw_mixture(ax, mixtures[name], edges, len(v))
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(f"track {name}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    return fig


def _draw_mixture(ax, mix: Mapping[str, Sequence[float]], edges: np.ndarray, n: int) -> None:
    xs = np.linspace(edges[0], edges[-1], 200)
    dens = gaussian_mixture_density(xs, mix["weight"], mix["mean"], mix["var"]) * n * (edges[1] - edges[0])
    names = ("clean component", "noisy component") if dens.shape[1] == 2 else \
        tuple(f"component {c}" for c in range(dens.shape[1]))
    ax.plot(xs, dens.sum(1), color="0.35", linewidth=1, label="mixture")
    for c, colour in zip(range(dens.shape[1]), ("tab:blue", "tab:orange", "tab:purple", "tab:brown")):
        ax.plot(xs, dens[:, c], linewidth=2, linestyle="--", color=colour, label=names[c])


def plot_correspondence(matrix: ArrayLike, init: ArrayLike | None = None,
                        order: Sequence[int] | None = None, cmap: str = "viridis") -> Figure:
    """The learned correspondence matrix (rows: synthetic images, columns: texts), beside the start
    matrix and their difference when ``init`` is given; ``order`` permutes rows and columns alike.

    Example:
        >>> fig = plot_correspondence(torch.eye(4), init=torch.eye(4) * 0.9, order=[3, 2, 1, 0])
        >>> len(fig.axes) >= 3
        True
    """
    p = _as_np(matrix).astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"correspondence matrix: expected [M, M], got shape {p.shape}")
    idx = np.arange(p.shape[0]) if order is None else np.asarray(order)
    panels = [("learned", p)]
    if init is not None:
        p0 = _as_np(init).astype(np.float64)
        if p0.shape != p.shape:
            raise ValueError(f"init matrix shape {p0.shape} differs from learned {p.shape}")
        panels += [("initial", p0), ("learned - initial", p - p0)]
    fig = Figure(figsize=(4.0 * len(panels), 3.6), layout="constrained")
    for k, (title, m) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        cols = idx if m.shape[0] == m.shape[1] else np.arange(m.shape[1])
        sub = m[np.ix_(idx, cols)]
        diff = title.startswith("learned -")
        lim = float(np.abs(sub).max()) or 1.0
        im = ax.imshow(sub, cmap="RdBu_r" if diff else cmap, vmin=-lim if diff else None,
                       vmax=lim if diff else None, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("synthetic text")
        ax.set_ylabel("synthetic image")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_region(image: ArrayLike, region: ArrayLike, init_image: ArrayLike | None = None,
                alpha: float = 0.5, title: str = "", boxes: Sequence[Mapping[str, Any]] | None = None) -> Figure:
    """A synthetic image with its region map overlaid, beside its initial real image when given.

    Example:
        >>> fig = plot_region(torch.rand(3, 8, 8), torch.rand(4, 4), init_image=torch.rand(3, 8, 8))
        >>> len(fig.axes)
        2
    """
    panels = ([("initial real image", to_hwc(init_image))] if init_image is not None else [])
    panels.append((title or "synthetic + region map", overlay_region(image, region, alpha)))
    fig = Figure(figsize=(2.8 * len(panels), 3.0), layout="constrained")
    for k, (name, arr) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(arr, interpolation="nearest")
        for b in boxes or []:
            x0, y0, x1, y1 = b["box"]
            ax.add_patch(_rect(x0, y0, x1, y1))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    return fig


def plot_region_history(init_image: ArrayLike | None, images: Sequence[ArrayLike], maps: Sequence[ArrayLike],
                        iterations: Sequence[int], alpha: float = 0.5, title: str = "",
                        boxes: Sequence[Mapping[str, Any]] | None = None) -> Figure:
    """One synthetic pair across saved iterations: its initial real image (with ``boxes``), then
    the image of each iteration with that iteration's region map overlaid.

    Example:
        >>> fig = plot_region_history(torch.rand(3, 8, 8), [torch.rand(3, 8, 8)] * 2, [torch.rand(4, 4)] * 2, [0, 10])
        >>> len(fig.axes)  # three panels and the map's colour bar
        4
    """
    if not (len(images) == len(maps) == len(iterations)):
        raise ValueError(f"plot_region_history: {len(images)} images, {len(maps)} maps, "
                         f"{len(iterations)} iterations; they must agree")
    panels = [("initial real image", to_hwc(init_image), boxes)] if init_image is not None else []
    panels += [(f"iteration {it}", overlay_region(img, m, alpha), None)
               for img, m, it in zip(images, maps, iterations)]
    fig = Figure(figsize=(2.2 * len(panels) + 0.6, 2.6), layout="constrained")
    axes = []
    for k, (name, arr, objs) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(arr, interpolation="nearest")
        for b in objs or []:
            ax.add_patch(_rect(*b["box"]))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9)
        axes.append(ax)
    _map_colorbar(fig, axes)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _map_colorbar(fig: Figure, axes: list, cmap: str = "jet") -> None:
    """A colour bar of the overlay's map scale (0: low relevance, 1: the map's peak)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[cmap]), ax=axes, shrink=0.8, pad=0.01)
    bar.set_label("region map (normalised)", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _rect(x0: float, y0: float, x1: float, y1: float):
    from matplotlib.patches import Rectangle
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="0.55", linewidth=1.0, linestyle="--")


def plot_curves(history: Mapping[str, Any], title: str = "", xlabel: str = "") -> Figure:
    """Training curves, one small axis per panel.

    ``history[panel]`` is either ``[(step, value), ...]`` or ``{curve: [(step, value), ...]}``
    (several curves on one axis, with a legend).

    Example:
        >>> len(plot_curves({"loss": {"A": [(0, 1.0), (1, 0.5)], "B": [(0, 1.1)]}, "auroc": [(0, 0.6)]}).axes)
        2
    """
    names = [n for n in history if len(history[n])] or ["(no data yet)"]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows), layout="constrained")
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        curves = history.get(name, [])
        curves = curves if isinstance(curves, Mapping) else {name: curves}
        for label, pts in curves.items():
            if len(pts):
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=label)
        if len(curves) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _as_np(x: ArrayLike | Sequence[float]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


