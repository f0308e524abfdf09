"""Shared machinery of the widgets: PNG conversion, static-figure display, plotly panes.

Nothing here is specific to one widget. A :class:`PlotPane` holds a plotly
``FigureWidget`` where one can be built (plotly >= 6 needs ``anywidget``) and
falls back to a plain figure re-rendered into an ``Output`` otherwise, so the
widgets keep working, without click events, on a minimal install.
"""
from __future__ import annotations

import io
import os
from typing import Any, Callable

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure
from PIL import Image as PILImage

from mdw_kit.viz import to_hwc


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a ZMQ shell), False in plain Python or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def png_bytes(image: Any, scale: int | None = None, min_side: int = 96) -> bytes:
    """PNG bytes of an image (``[3,H,W]`` / ``[H,W,3]``, uint8 or float), upscaled by nearest
    neighbour to at least ``min_side`` pixels (or by ``scale``) so small images stay crisp.

    Example:
        >>> png_bytes(np.zeros((3, 8, 8), dtype=np.uint8))[:4]
        b'\\x89PNG'
    """
    arr = (to_hwc(image) * 255.0 + 0.5).astype(np.uint8)
    h, w = arr.shape[:2]
    k = scale or max(1, -(-min_side // max(h, w)))
    img = PILImage.fromarray(arr).resize((w * k, h * k), PILImage.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure.

    Example:
        >>> figure_png(Figure(figsize=(1, 1)))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show_static(fig: Figure, dpi: int = 90) -> Figure:
    """Display a static figure as a PNG output (kept in a saved notebook); a no-op outside IPython."""
    try:
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover
        return fig
    display(Image(data=figure_png(fig, dpi)))
    return fig


SMOKE_TEXT = ("<b>Smoke mode</b> (<code>MDW_SMOKE=1</code>): every size is shrunk so the notebook runs in "
              "seconds. The figures below show that the code runs, not what the method achieves; "
              "the full-mode run is in <code>docs/notebooks/</code>.")


def smoke_banner(smoke: bool) -> str:
    """Display a visible banner in smoke mode (a plain line in full mode); returns its text.

    Example:
        >>> smoke_banner(False)
        'full mode'
    """
    text = SMOKE_TEXT if smoke else "full mode"
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:  # pragma: no cover
        return text
    if get_ipython() is None:
        return text
    if smoke:
        display(HTML(f"<div class='mdw-smoke-banner' style='background:#fff3cd;border:1px solid #e0b000;"
                     f"padding:6px 10px;border-radius:4px'>{text}</div>"))
    else:
        print(text)
    return text


def image_widget(width: int = 112) -> W.Image:
    """An empty PNG image widget of a fixed display width."""
    return W.Image(format="png", layout=W.Layout(width=f"{width}px", height=f"{width}px"))


def heavy(cls: type, **kw: Any) -> W.Widget:
    """A control widget that reports only on release (``continuous_update=False``)."""
    return cls(continuous_update=False, **kw)


def static_enabled() -> bool:
    """Attach the static figure to each displayed widget (``MDW_STATIC_FIGURES=0`` turns it off)."""
    return os.environ.get("MDW_STATIC_FIGURES", "1") != "0"


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widget_bundle(widget: W.Widget, png: bytes | None) -> dict[str, Any]:
    """One display bundle: the live widget view plus, where given, its static PNG.

    A frontend that renders widgets shows the widget only (its MIME type ranks first); one that
    does not (an exported HTML page, a notebook viewer) shows the PNG, so each view appears once.

    Example:
        >>> sorted(widget_bundle(W.Button(), b"png"))
        ['application/vnd.jupyter.widget-view+json', 'image/png', 'text/plain']
    """
    import base64
    bundle = dict(widget._repr_mimebundle_())
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode()
    return bundle


class StaticFigureMixin:
    """``show()``: one output holding the live widget and, as its fallback, its static figure.

    :meth:`snapshot` refreshes that fallback in place (after a live run ends), so a saved or
    exported notebook keeps the final state without showing the view twice.
    """

    _display_handle: Any = None

    def static_figure(self) -> Figure:  # pragma: no cover - every widget overrides
        raise NotImplementedError

    def _bundle(self, static: bool, fig: Figure | None = None) -> dict[str, Any]:
        """The display bundle; ``fig`` is the static figure when already drawn."""
        if not static:
            return widget_bundle(self, None)
        return widget_bundle(self, figure_png(fig if fig is not None else self.static_figure()))

    def show(self, static: bool | None = None) -> "StaticFigureMixin":
        """Display the widget, its static figure attached as the fallback (unless ``static=False``
        or ``MDW_STATIC_FIGURES=0``)."""
        from IPython.display import display
        self._static = static_enabled() if static is None else bool(static)
        self._display_handle = display(self._bundle(self._static), raw=True, display_id=True)
        return self

    def snapshot(self) -> Figure:
        """Refresh the static fallback of the displayed widget with the current state (a new
        static output when the widget was not shown with :meth:`show`); returns the figure."""
        fig = self.static_figure()
        if self._display_handle is not None:
            self._display_handle.update(self._bundle(True, fig), raw=True)
            return fig
        return show_static(fig)


class PlotPane:
    """A plotly figure that is live (``FigureWidget``) where possible, re-rendered otherwise.

    Args:
        fig: a ``plotly.graph_objects.Figure`` to start from.

    Mutate :attr:`fig` (inside ``with pane.batch():``) and call :meth:`refresh`;
    :attr:`widget` is what goes into a layout.
    """

    def __init__(self, fig: Any):
        import plotly.graph_objects as go
        try:
            self.fig = go.FigureWidget(fig)
            self.live = True
            self.widget: W.Widget = self.fig
        except ImportError:  # plotly >= 6 without anywidget
            self.fig = go.Figure(fig)
            self.live = False
            self.widget = W.Output()
            self.refresh()

    def batch(self):
        """Context manager grouping updates into one message (a no-op without a live widget)."""
        import contextlib
        return self.fig.batch_update() if self.live else contextlib.nullcontext()

    def refresh(self) -> None:
        """Re-render a fallback figure after changes (live figures update themselves)."""
        if self.live or not in_notebook():
            return
        self.widget.clear_output(wait=True)
        with self.widget:
            from IPython.display import display
            display(self.fig)

    def on_click(self, trace_index: int, handler: Callable[[Any, Any, Any], None]) -> bool:
        """Attach ``handler(trace, points, state)`` to clicks on one trace; False when not live."""
        if not self.live:
            return False
        self.fig.data[trace_index].on_click(handler)
        return True
