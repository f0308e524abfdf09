"""MismatchReport: the training pairs most likely mismatched, ranked, with a better caption for each.

A paged table over :func:`mdw_kit.experts.mismatch.mismatch_table`: the pair's image, the
caption it carries, the best-matching other caption of the training set and the noise score.
Filter by a word in either caption, by the flag (``p_clean < threshold``) and, where the noise
was injected, by the truth; export the filtered rows as CSV. Its static fallback is the current
page as an HTML table (images embedded), so an exported notebook shows the table itself.

Example:
    >>> import pandas as pd, torch
    >>> t = pd.DataFrame({"rank": [1, 2, 3], "pair": [2, 0, 1], "noise_score": [0.9, 0.5, 0.1],
    ...                   "p_clean": [0.1, 0.4, 0.9], "is_noisy": [True, True, False],
    ...                   "caption": ["a dog", "a cat", "a car"], "best_other_caption": ["a car", "a dog", "a cat"]})
    >>> w = MismatchReport(t, images=torch.zeros(3, 3, 8, 8), page_size=2)
    >>> w.flag_filter.value = "flagged noisy"
    >>> w.matches["pair"].tolist(), w.page_label.value
    ([2, 0], 'page 1 / 1 (2 of 3 pairs)')
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mdw_kit.experts.mismatch import mismatch_table, write_mismatch_report
from mdw_kit.viz import plot_pairs
from widgets._static import StaticFigureMixin, png_bytes, widget_bundle

FLAG_CHOICES = ("all", "flagged noisy", "kept")
TRUTH_CHOICES = ("all", "truly mismatched", "truly clean")


def filter_rows(table: pd.DataFrame, text: str = "", flag: str = "all", truth: str = "all") -> pd.DataFrame:
    """Rows whose given or suggested caption contains ``text`` (case-insensitive), with the flag
    and ground-truth filters applied; the order (most suspect first) is kept.

    Example:
        >>> t = pd.DataFrame({"caption": ["Red star", "blue dot"], "is_noisy": [True, False]})
        >>> filter_rows(t, "red").index.tolist(), filter_rows(t, flag="kept").index.tolist()
        ([0], [1])
    """
    keep = np.ones(len(table), dtype=bool)
    if text:
        cols = [c for c in ("caption", "best_other_caption") if c in table]
        hit = np.zeros(len(table), dtype=bool)
        for c in cols:
            hit |= table[c].astype(str).str.contains(text, case=False, regex=False).to_numpy()
        keep &= hit
    if flag != "all":
        keep &= table["is_noisy"].to_numpy(bool) == (flag == FLAG_CHOICES[1])
    if truth != "all":
        if "true_clean" not in table:
            raise ValueError("filter_rows: the truth filter needs a 'true_clean' column (injected noise)")
        keep &= table["true_clean"].to_numpy(bool) == (truth == TRUTH_CHOICES[2])
    return table[keep]


class MismatchReport(StaticFigureMixin, W.VBox):
    """Ranked pairs with the caption they carry and a better-matching one; filter, page, export CSV.

    Args:
        table: a :func:`~mdw_kit.experts.mismatch.mismatch_table` (``rank, pair, noise_score, p_clean,
            is_noisy, caption`` and optionally ``best_other_caption``, ``best_similarity``, ``true_clean``).
        images: ``[N, 3, H, W]`` the image of every pair, indexed by the table's ``pair``; optional.
        page_size: rows per page.
        csv_dir: where the export button writes ``mismatch_report.csv`` (default: the working folder).
    """

    def __init__(self, table: pd.DataFrame, images: Any = None, page_size: int = 10, csv_dir: str | Path = "."):
        super().__init__()
        missing = [c for c in ("pair", "noise_score", "is_noisy") if c not in table]
        if missing:
            raise ValueError(f"MismatchReport: table lacks column(s) {missing}; pass mismatch_table(...)")
        self.table, self.images = table.reset_index(drop=True), images
        self.page_size, self.page, self.csv_dir = int(page_size), 0, Path(csv_dir)
        self.search = W.Text(placeholder="word in a caption", description="search", continuous_update=False)
        self.flag_filter = W.Dropdown(options=FLAG_CHOICES, value="all", description="flag")
        self.truth_filter = W.Dropdown(options=TRUTH_CHOICES, value="all", description="truth")
        filters = [self.search, self.flag_filter] + ([self.truth_filter] if "true_clean" in table else [])
        for w in filters:
            w.observe(lambda _: self.go_to(0), names="value")
        self.prev_btn, self.next_btn = W.Button(description="previous"), W.Button(description="next")
        self.export_btn = W.Button(description="export CSV", icon="download")
        self.prev_btn.on_click(lambda _: self.go_to(self.page - 1))
        self.next_btn.on_click(lambda _: self.go_to(self.page + 1))
        self.export_btn.on_click(lambda _: self.export())
        self.page_label, self.export_label, self.rows_html = W.Label(), W.HTML(), W.HTML()
        self.children = [W.HBox(filters), W.HBox([self.prev_btn, self.page_label, self.next_btn,
                                                  self.export_btn, self.export_label]), self.rows_html]
        self.add_class("mdw-mismatch-report")
        self.refresh()

    @classmethod
    def from_report(cls, report: Any, images: Any = None, image_emb: Any = None, text_emb: Any = None,
                    **kw: Any) -> "MismatchReport":
        """From a ``NoiseReport`` (and optionally the embeddings that pick the best other caption)."""
        return cls(mismatch_table(report, image_emb, text_emb), images=images, **kw)

    # ------------------------------------------------------------ state
    @property
    def matches(self) -> pd.DataFrame:
        """The rows passing the filters, most suspect first."""
        truth = self.truth_filter.value if "true_clean" in self.table else "all"
        return filter_rows(self.table, self.search.value.strip(), self.flag_filter.value, truth)

    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self.matches) // self.page_size))

    def page_rows(self) -> pd.DataFrame:
        """The rows on the current page."""
        return self.matches.iloc[self.page * self.page_size:(self.page + 1) * self.page_size]

    def go_to(self, page: int) -> None:
        """Show page ``page`` (clamped)."""
        self.page = int(np.clip(page, 0, self.n_pages - 1))
        self.refresh()

    def export(self, path: str | Path | None = None) -> Path:
        """Write the filtered rows as CSV (what the button does); returns the path."""
        out = write_mismatch_report(self.matches, self.csv_dir) if path is None else Path(path)
        if path is not None:
            self.matches.round(4).to_csv(out, index=False)
        self.export_label.value = f"wrote <code>{html.escape(str(out))}</code> ({len(self.matches)} rows)"
        return out

    # ------------------------------------------------------------ drawing
    def _img_tag(self, pair: int) -> str:
        if self.images is None:
            return ""
        b64 = base64.b64encode(png_bytes(self.images[int(pair)], min_side=64)).decode()
        return f"<img src='data:image/png;base64,{b64}' width='64' height='64'/>"

    def page_html(self) -> str:
        """The current page as an HTML table (images embedded)."""
        rows = self.page_rows()
        if not len(rows):
            return "<p class='mdw-empty'><i>no pairs match the filters</i></p>"
        better = "best_other_caption" in rows
        head = ["rank", "image", "given caption"] + (["best-matching other caption"] if better else []) + \
            ["noise score", "p(clean)"] + (["truth"] if "true_clean" in rows else [])
        body = []
        for _, r in rows.iterrows():
            cells = [str(r["rank"]) if "rank" in r else "", self._img_tag(r["pair"]),
                     html.escape(str(r.get("caption", "")))]
            if better:
                cells.append(html.escape(str(r["best_other_caption"])) +
                             (f" <small>({r['best_similarity']:.2f} vs {r['given_similarity']:.2f})</small>"
                              if "best_similarity" in r else ""))
            cells += [f"{r['noise_score']:.3f}", f"{r['p_clean']:.2f}" if "p_clean" in r else ""]
            if "true_clean" in rows:
                cells.append("clean" if r["true_clean"] else "<b style='color:#c00'>mismatched</b>")
            flag = " style='background:#fff1f0'" if r["is_noisy"] else ""
            body.append(f"<tr{flag}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return ("<table class='mdw-mismatch-table' style='border-collapse:collapse;font-size:12px'><tr>"
                + "".join(f"<th style='text-align:left;padding:2px 6px'>{h}</th>" for h in head) + "</tr>"
                + "".join(body) + "</table>")

    def refresh(self) -> None:
        """Redraw the page and its label."""
        self.page = int(np.clip(self.page, 0, self.n_pages - 1))
        self.rows_html.value = self.page_html()
        self.page_label.value = f"page {self.page + 1} / {self.n_pages} ({len(self.matches)} of {len(self.table)} pairs)"
        self.prev_btn.disabled = self.page == 0
        self.next_btn.disabled = self.page >= self.n_pages - 1

    def _bundle(self, static: bool, fig: Figure | None = None) -> dict[str, Any]:
        """The live widget with the current page as an HTML table for frontends without widgets."""
        bundle = widget_bundle(self, None)
        if static:
            bundle["text/html"] = f"<p>{html.escape(self.page_label.value)}</p>" + self.page_html()
        return bundle

    def static_figure(self) -> Figure:
        """The current page's pairs as a matplotlib grid (given caption, red frame where flagged)."""
        rows = self.page_rows()
        if self.images is None or not len(rows):
            fig = Figure(figsize=(4, 1))
            fig.text(0.5, 0.5, "no images" if self.images is None else "no pairs match the filters", ha="center")
            return fig
        return plot_pairs([self.images[int(p)] for p in rows["pair"]], rows.get("caption", [""] * len(rows)).tolist(),
                          titles=[f"#{r} score {s:.2f}" for r, s in zip(rows["rank"], rows["noise_score"])],
                          flags=rows["is_noisy"].tolist(), ncols=5)
