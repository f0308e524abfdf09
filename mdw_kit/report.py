"""A self-contained HTML report: headings, text, tables and figures (PNG embedded as base64).

Example:
    >>> import tempfile, pathlib
    >>> r = HtmlReport("demo")
    >>> r.add_text("hello")
    >>> r.add_table([{"method": "mdw", "R-sum": 1.0}])
    >>> p = r.save(pathlib.Path(tempfile.mkdtemp()) / "report.html")
    >>> "<table" in p.read_text()
    True
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}img{max-width:100%}
.note{color:#555;font-size:0.92em}
"""


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"{v[0]:.{digits}f} &plusmn; {v[1]:.{digits}f}"
    return html.escape(str(v))


def _thumb(arr: Any, side: int = 48) -> str:
    """An ``<img>`` tag of an ``[H, W, 3]`` float image, nearest-neighbour scaled to ``side`` pixels."""
    import numpy as np
    from PIL import Image
    img = Image.fromarray((np.asarray(arr) * 255 + 0.5).astype("uint8")).resize((side, side), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="png")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" width="{side}"/>'


class HtmlReport:
    """Collects sections and writes one HTML file with everything embedded."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def add_heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def add_text(self, text: str, cls: str = "") -> None:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def add_table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                  digits: int = 1) -> None:
        if not rows:
            self.add_text("(no rows)", "note")
            return
        cols = list(columns or dict.fromkeys(k for r in rows for k in r))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''), digits)}</td>" for c in cols) + "</tr>"
                       for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def add_mismatch_table(self, table: Any, images: Any = None, top: int = 20) -> None:
        """The ``top`` rows of a ranked mismatch table (:func:`mdw_kit.experts.mismatch.mismatch_table`):
        image thumbnail, given caption, best-matching other caption, noise score."""
        from mdw_kit.viz import to_hwc
        rows = table.head(top)
        better = "best_other_caption" in rows
        head = ["rank", "image", "given caption"] + (["best-matching other caption"] if better else []) + \
            ["noise score", "p(clean)"] + (["truth"] if "true_clean" in rows else [])
        body = []
        for _, r in rows.iterrows():
            cells = [str(r["rank"]), _thumb(to_hwc(images[int(r["pair"])])) if images is not None else "",
                     html.escape(str(r.get("caption", "")))]
            cells += [html.escape(str(r["best_other_caption"]))] if better else []
            cells += [f"{r['noise_score']:.3f}", f"{r['p_clean']:.2f}"]
            cells += ["clean" if r["true_clean"] else "mismatched"] if "true_clean" in rows else []
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        self.parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body)
                          + "</table>")

    def add_figure(self, fig, caption: str = "", dpi: int = 90) -> None:
        """Embed a matplotlib figure (closed afterwards)."""
        import matplotlib.pyplot as plt
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.add_png(buf.getvalue(), caption)

    def add_png(self, png: bytes | str | Path, caption: str = "") -> None:
        data = Path(png).read_bytes() if isinstance(png, (str, Path)) else png
        b64 = base64.b64encode(data).decode()
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="data:image/png;base64,{b64}"/>{cap}</figure>')

    def render(self) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render())
        return path
