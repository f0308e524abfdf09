"""Execute the notebooks and publish them as HTML under docs/notebooks/ (figures, no widget state).

    python tools/render_notebooks.py                 # smoke run (timed), then full run -> HTML, each notebook
    python tools/render_notebooks.py --only 02 04    # some notebooks
    python tools/render_notebooks.py --no-smoke      # the full run only

Each notebook runs top to bottom in a fresh kernel (``nbclient``), first in smoke mode
(``MDW_SMOKE=1``, timed only) and then in full mode, whose executed copy becomes
``docs/notebooks/<name>.html``. The HTML keeps every figure but no widget state: a live widget's
output keeps its static fallback (the PNG or HTML table the widget attached), never the
widget view, so the page is small and shows the final state of each view. The first PNG of the
cell tagged ``readme-figure`` becomes ``docs/images/<notebook>.png`` (the README's picture).
``docs/notebooks/timings.json`` records each run's wall time and the kernel's CPU time (which a
loaded machine inflates less), the command, the thread count and the machine's load average.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"
IMAGES = ROOT / "docs" / "images"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
VISUAL = ("image/png", "text/html", "image/svg+xml", "text/markdown")
CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.45}
.jp-Cell{margin:0.6em 0}.jp-InputArea pre,div.highlight pre{background:#f6f8fa;padding:8px;overflow-x:auto;
font-size:12.5px;border-radius:4px}.jp-OutputArea pre{font-size:12px;white-space:pre-wrap;margin:0.3em 0}
img{max-width:100%}table{border-collapse:collapse;font-size:12.5px;margin:0.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px}th{background:#f2f2f2}.jp-InputPrompt,.jp-OutputPrompt{display:none}"""


def strip_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy without widget views or widget state: an output keeps its static fallback (its other
    visual MIME types); an output with nothing but a widget view and a text repr is dropped.

    Example:
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w")])
        >>> nb.cells[0].outputs = [nbformat.v4.new_output("display_data", {WIDGET_MIME: {}, "image/png": "AA==",
        ...                                                               "text/plain": "VBox()"})]
        >>> sorted(strip_widgets(nb).cells[0].outputs[0].data)
        ['image/png']
    """
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if not any(m in data for m in VISUAL):
                    continue
                data.pop("text/plain", None)
            kept.append(out)
        cell.outputs = kept
    return nb


def readme_figure(nb: nbformat.NotebookNode) -> bytes | None:
    """The first PNG output of the cell tagged ``readme-figure`` (None when there is none)."""
    for cell in nb.cells:
        if "readme-figure" in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                if "image/png" in out.get("data", {}):
                    return base64.b64decode(out["data"]["image/png"])
    return None


def kernel_cpu_seconds(nb: nbformat.NotebookNode) -> float | None:
    """The kernel's CPU seconds, as the notebook's last cell prints them (``..., N s of CPU``).

    Example:
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
        >>> nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="notebook ran in 9 s, 14 s of CPU (smoke)")]
        >>> kernel_cpu_seconds(nb)
        14.0
    """
    import re
    for cell in reversed(nb.cells):
        for out in cell.get("outputs", []):
            m = re.search(r"notebook ran in \d+ s, (\d+) s of CPU", out.get("text", ""))
            if m:
                return float(m.group(1))
    return None


def slowest_cells(nb: nbformat.NotebookNode, k: int = 3) -> list[list[Any]]:
    """``[[cell id, seconds], ...]`` of the ``k`` slowest cells, from nbclient's execution timestamps."""
    from datetime import datetime
    times = []
    for cell in nb.cells:
        ex = cell.get("metadata", {}).get("execution", {})
        a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if a and b:
            secs = (datetime.fromisoformat(b.replace("Z", "+00:00")) -
                    datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
            times.append([cell.get("id", "?"), round(secs, 1)])
    return sorted(times, key=lambda t: -t[1])[:k]


def execute(path: Path, smoke: bool, threads: int, timeout: int) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook top to bottom in a fresh kernel; returns the executed copy and its wall time."""
    from nbclient import NotebookClient
    env = {"MDW_SMOKE": "1" if smoke else "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        t0 = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def to_html(nb: nbformat.NotebookNode, title: str) -> str:
    """A small self-contained page: nbconvert's ``basic`` template plus a few lines of CSS."""
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>"
            f"</head><body>{body}</body></html>")


def render(name: str, smoke: bool, threads: int, timeout: int) -> dict[str, Any]:
    """Smoke run (timed), full run -> HTML + README picture; returns the timings."""
    path = NOTEBOOKS / name
    row: dict[str, Any] = {"notebook": name}
    if smoke:
        small, row["smoke_s"] = execute(path, True, threads, timeout)
        row["smoke_cpu_s"] = kernel_cpu_seconds(small)
        print(f"{name}: smoke {row['smoke_s']:.0f} s ({row['smoke_cpu_s']} s of kernel CPU)", flush=True)
    nb, row["full_s"] = execute(path, False, threads, timeout)
    row["full_cpu_s"] = kernel_cpu_seconds(nb)
    row["full_slowest_cells"] = slowest_cells(nb)
    print(f"{name}: full {row['full_s']:.0f} s ({row['full_cpu_s']} s of kernel CPU)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    page = OUT / (path.stem + ".html")
    page.write_text(to_html(strip_widgets(nb), path.stem), encoding="utf-8")
    row["html_kib"] = round(page.stat().st_size / 1024, 1)
    png = readme_figure(nb)
    if png is not None:
        IMAGES.mkdir(parents=True, exist_ok=True)
        (IMAGES / (path.stem + ".png")).write_bytes(png)
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="notebook number prefixes (e.g. 02 04)")
    ap.add_argument("--no-smoke", action="store_true", help="skip the timed smoke run")
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of each kernel")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = ap.parse_args(argv)
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    if args.only:
        names = [n for n in names if any(n.startswith(k) for k in args.only)]
        if not names:
            ap.error(f"--only {args.only}: no notebook starts with these")
    command = "python tools/render_notebooks.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for n in names:   # the record is updated after each notebook, so a stopped run keeps what it measured
        row = dict(render(n, not args.no_smoke, args.threads, args.timeout), command=command.strip(),
                   threads=args.threads, load_average_at_end=[round(x, 2) for x in os.getloadavg()])
        record_timing(row)
        print(row)
    return 0


def record_timing(row: dict[str, Any], record: Path = OUT / "timings.json") -> None:
    """Merge one notebook's row into ``timings.json`` (rows of other notebooks are kept)."""
    doc = json.loads(record.read_text()) if record.exists() else {}
    old = [{"command": doc.get("command"), **r} for r in doc.get("notebooks", [])]
    merged = {r["notebook"]: r for r in old} | {row["notebook"]: row}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({
        "about": "wall and kernel CPU seconds of each notebook, smoke and full mode, one command per row",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "notebooks": [merged[k] for k in sorted(merged)]}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
