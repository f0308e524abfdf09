"""Export a distilled set for people and for other tools.

- :func:`export_png`: one folder with every synthetic image as a PNG (upscaled with
  nearest-neighbour so the pixels stay visible), its region-map overlay (stage 4
  maps kept with the set), its nearest real captions, an ``index.json`` and an
  ``index.html`` grid to browse them.
- :func:`export_hf_dataset`: a Hugging Face ``datasets`` dataset (``save_to_disk``)
  with one row per synthetic pair: the image, its nearest real caption(s) and their
  cosine similarity, the text embedding, the correspondence row ``P~_i`` and the real
  pair the row started from. ``datasets.load_from_disk`` reads it back.

Synthetic texts are vectors in the frozen text encoder's space; they are decoded as
their nearest real captions (:meth:`~mdw_kit.distill.synthetic.DistilledSet.nearest_captions`).

Example:
    >>> import tempfile, torch
    >>> from mdw_kit.distill.synthetic import DistilledSet
    >>> emb = torch.randn(6, 8)
    >>> s = DistilledSet.from_pairs(torch.rand(6, 3, 8, 8), emb, [0, 3, 5])
    >>> out = tempfile.mkdtemp()
    >>> idx = export_png(s, out, emb, list("abcdef"), region_maps=False)
    >>> len(idx["pairs"]), idx["pairs"][1]["captions"][0]["text"]
    (3, 'd')
"""
from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from mdw_kit.runs import write_json

MIN_SIDE = 128


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """A ``[3, H, W]`` float image in ``[0, 1]`` (values outside are clipped) as an RGB PIL image.

    Example:
        >>> import torch
        >>> to_pil(torch.ones(3, 4, 4), scale=2).size
        (8, 8)
    """
    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    img = Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def _overlay(image: torch.Tensor, region: torch.Tensor, scale: int) -> Image.Image:
    from mdw_kit.viz import overlay_region
    img = overlay_region(image.detach().cpu(), region.detach().cpu().float(), alpha=0.5)
    return to_pil(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), scale)


def _maps(dset: Any, region_maps: bool | torch.Tensor) -> torch.Tensor | None:
    """The maps to draw: given ones, the set's latest ones, or None (with a warning when asked for)."""
    if region_maps is False or region_maps is None:
        return None
    maps = dset.maps if region_maps is True else torch.as_tensor(region_maps)
    if maps is None:
        warnings.warn("the distilled set holds no region maps (distil with save_maps_every > 0); "
                      "exporting without overlays", stacklevel=3)
        return None
    if maps.ndim != 3 or len(maps) != dset.num_pairs:
        raise ValueError(f"region maps must be [M={dset.num_pairs}, h, w], got {list(maps.shape)}")
    return maps


def _check_text(dset: Any, real_text: torch.Tensor, captions: Sequence[str]) -> None:
    if real_text.ndim != 2 or real_text.shape[1] != dset.text_dim:
        raise ValueError(f"real_text must be [N, {dset.text_dim}] caption embeddings (the synthetic texts' "
                         f"space), got {list(real_text.shape)}")
    if len(real_text) != len(captions):
        raise ValueError(f"real_text has {len(real_text)} rows but {len(captions)} captions were given")


def _rows(dset: Any, real_text: torch.Tensor, captions: Sequence[str], k: int, top: int) -> list[dict]:
    """Per synthetic pair: nearest captions, strongest correspondences, starting pair."""
    near = dset.nearest_captions(real_text, captions, k=k)
    P = dset.targets().cpu()
    vals, cols = P.topk(min(top, dset.num_pairs), dim=1)
    return [{"index": i, "init_index": int(dset.init_indices[i]),
             "captions": [{"text": t, "similarity": round(s, 4)} for t, s in near[i]],
             "correspondence_top": [{"text_index": int(j), "p": round(float(v), 4)}
                                    for v, j in zip(vals[i], cols[i])]} for i in range(dset.num_pairs)]


def export_png(dset: Any, out_dir: str | Path, real_text: torch.Tensor, captions: Sequence[str],
               region_maps: bool | torch.Tensor = True, k: int = 3, scale: int | None = None) -> dict[str, Any]:
    """Write PNGs, region overlays, nearest captions, ``index.json`` and ``index.html`` to ``out_dir``.

    Args:
        dset: a :class:`~mdw_kit.distill.synthetic.DistilledSet`.
        out_dir: folder (created).
        real_text: ``[N, d]`` embeddings of ``captions`` (the real captions to decode with).
        captions: the ``N`` real captions.
        region_maps: True = the set's latest maps (skipped with a warning when it has none),
            False = no overlays, or a ``[M, h, w]`` tensor of maps to draw.
        k: nearest captions per synthetic text.
        scale: integer upscaling (default: so the PNG side is at least 128 px).

    Returns the index (also written as ``index.json``); paths in it are relative to ``out_dir``.
    """
    real_text = torch.as_tensor(real_text).float()
    _check_text(dset, real_text, captions)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    scale = scale or max(1, -(-MIN_SIDE // dset.image_size))
    maps = _maps(dset, region_maps)
    if maps is not None:
        (out / "overlays").mkdir(exist_ok=True)
    rows = _rows(dset, real_text, captions, k, top=3)
    for i, row in enumerate(rows):
        row["image"] = f"images/{i:04d}.png"
        to_pil(dset.images[i], scale).save(out / row["image"])
        if maps is not None:
            row["overlay"] = f"overlays/{i:04d}.png"
            _overlay(dset.images[i], maps[i], scale).save(out / row["overlay"])
    index = {"num_pairs": dset.num_pairs, "image_size": dset.image_size, "scale": scale,
             "learning_rates": dset.learning_rates(), "correspondence": dset.corr.kind,
             "region_maps": maps is not None, "pairs": rows}
    write_json(out / "index.json", index)
    (out / "index.html").write_text(_html(index))
    return index


def _html(index: dict[str, Any]) -> str:
    cells = []
    for row in index["pairs"]:
        imgs = f'<img src="{row["image"]}" alt="synthetic image {row["index"]}">'
        if "overlay" in row:
            imgs += f'<img src="{row["overlay"]}" alt="region map {row["index"]}">'
        caps = "".join(f"<li>{html.escape(c['text'])} <small>({c['similarity']:.2f})</small></li>"
                       for c in row["captions"])
        cells.append(f'<figure><div>{imgs}</div><figcaption><b>#{row["index"]}</b><ol>{caps}</ol>'
                     f"</figcaption></figure>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Distilled set</title><style>"
            "body{font-family:sans-serif}main{display:flex;flex-wrap:wrap;gap:12px}"
            "figure{width:300px;margin:0}img{image-rendering:pixelated;margin-right:4px}"
            "</style></head><body>"
            f"<h1>Distilled set: {index['num_pairs']} pairs</h1>"
            f"<p>Learning rates {html.escape(json.dumps(index['learning_rates']))}; correspondence "
            f"{html.escape(index['correspondence'])}. Texts are shown as their nearest real captions "
            f"(cosine similarity).</p><main>{''.join(cells)}</main></body></html>\n")


def export_hf_dataset(dset: Any, out_dir: str | Path, real_text: torch.Tensor, captions: Sequence[str],
                      k: int = 3) -> Path:
    """Save the set as a Hugging Face dataset (``save_to_disk``); read it with ``datasets.load_from_disk``.

    Columns: ``image`` (PIL, the set's resolution), ``caption`` (nearest real caption),
    ``captions`` / ``similarities`` (the ``k`` nearest), ``text_embedding`` (``d`` floats),
    ``correspondence`` (row ``i`` of ``P~``, ``M`` floats), ``init_index`` (real pair it started from,
    -1 if unknown). The learned rates and shapes are in the dataset's description (JSON).

    Example:
        >>> import tempfile, torch, datasets
        >>> from mdw_kit.distill.synthetic import DistilledSet
        >>> emb = torch.randn(4, 8)
        >>> s = DistilledSet.from_pairs(torch.rand(4, 3, 8, 8), emb, [1, 2])
        >>> path = export_hf_dataset(s, tempfile.mkdtemp(), emb, list("abcd"))
        >>> list(datasets.load_from_disk(str(path))["caption"])
        ['b', 'c']
    """
    import datasets

    real_text = torch.as_tensor(real_text).float()
    _check_text(dset, real_text, captions)
    near = dset.nearest_captions(real_text, captions, k=k)
    P = dset.targets().cpu()
    features = datasets.Features({
        "image": datasets.Image(), "caption": datasets.Value("string"),
        "captions": datasets.Sequence(datasets.Value("string")),
        "similarities": datasets.Sequence(datasets.Value("float32")),
        "text_embedding": datasets.Sequence(datasets.Value("float32")),
        "correspondence": datasets.Sequence(datasets.Value("float32")),
        "init_index": datasets.Value("int64")})
    data = {"image": [to_pil(x) for x in dset.images], "caption": [n[0][0] for n in near],
            "captions": [[t for t, _ in n] for n in near], "similarities": [[s for _, s in n] for n in near],
            "text_embedding": dset.text.detach().cpu().float().tolist(), "correspondence": P.tolist(),
            "init_index": dset.init_indices.tolist()}
    info = datasets.DatasetInfo(description=json.dumps(
        {"format": "mdw-distilled-set", "num_pairs": dset.num_pairs, "image_size": dset.image_size,
         "learning_rates": dset.learning_rates(), "correspondence": dset.corr.kind}), features=features)
    ds = datasets.Dataset.from_dict(data, info=info)
    out = Path(out_dir)
    ds.save_to_disk(str(out))
    return out


__all__ = ["export_png", "export_hf_dataset", "to_pil"]
