"""Presets: whole pipeline settings as data files (``mdw_kit/presets/<name>.json``).

A preset has the sections ``data`` (source, noise, options, encoder), ``model`` (tower and heads),
``experts`` (runs, dual-track settings), ``distill`` (method, budget, DistillConfig fields),
``eval`` (seeds, EvalConfig fields) and ``baselines``. :func:`load_preset` takes a name from
:func:`list_presets` or the path of a JSON file of the same shape; :func:`merge` lays overrides
over it section by section.

Example:
    >>> p = load_preset("default")
    >>> p["model"]["tower"], p["data"]["options"]["image_size"]
    ('efficientnet_lite0', 64)
    >>> merge(p, {"distill": {"budget": 200}})["distill"]["budget"], p["distill"]["budget"]
    (200, 100)
"""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS = ("description", "data", "model", "experts", "distill", "eval", "baselines")


def list_presets() -> list[str]:
    """Names of the shipped presets.

    Example:
        >>> "smoke" in list_presets()
        True
    """
    return sorted(p.stem for p in HERE.glob("*.json"))


def load_preset(name: str | Path = "default") -> dict[str, Any]:
    """A preset by name (see :func:`list_presets`) or from a JSON file; unknown sections are an error."""
    path = Path(name)
    if path.suffix != ".json":
        if str(name) not in list_presets():
            near = difflib.get_close_matches(str(name), list_presets(), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown preset {str(name)!r}{hint} (known: {list_presets()}, or a .json file)")
        path = HERE / f"{name}.json"
    try:
        preset = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"preset file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"preset file {path} is not valid JSON ({e})") from None
    extra = sorted(set(preset) - set(SECTIONS))
    if extra:
        raise ValueError(f"preset file {path}: unknown sections {extra}; known: {list(SECTIONS)}")
    return preset


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, recursively for nested dicts (a copy; neither is changed)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def model_section(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A preset's ``model`` section with ``over`` on top; a new tower drops the old tower's ``train_layers``
    and ``weights`` (a from-scratch ConvNet trains all of itself, a pretrained tower keeps its stem frozen).

    Example:
        >>> model_section({"tower": "efficientnet_lite0", "train_layers": "none"}, {"tower": "convnet3"})
        {'tower': 'convnet3'}
    """
    out = dict(base)
    if "tower" in over and over["tower"] != base.get("tower"):
        out = {k: v for k, v in out.items() if k not in ("train_layers", "weights")}
    return {**out, **over}


__all__ = ["load_preset", "list_presets", "merge", "model_section", "SECTIONS"]
