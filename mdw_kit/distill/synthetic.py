"""The distilled set D~ = (V~, T~, P~, eta) as one module, with safe save / load.

- ``images`` (V~): ``[M, 3, H, W]`` pixels, learnable, starting at real images in ``[0, 1]``.
- ``text`` (T~): ``[M, d]`` vectors in the frozen text encoder's embedding space.
- ``corr`` (P~): a :class:`~mdw_kit.distill.correspondence.Correspondence`.
- ``log_lr``: ``[2]`` log student learning rates, one per tower group
  (``"image"``: image tower + projection, ``"text"``: text head); ``eta = exp(log_lr)``
  is positive by construction.

Region maps (stage 4) live with the set: ``maps`` (latest ``[M, H, W]``) and
``map_history`` (``[(iteration, maps)]``), saved with the artifact.

An artifact is a folder holding ``distilled.json`` (config, meta, list of map
iterations) and ``distilled.safetensors`` (all tensors). No pickle.

Example:
    >>> import tempfile, torch
    >>> s = DistilledSet.from_pairs(torch.rand(10, 3, 8, 8), torch.randn(10, 16), [1, 4, 7], corr="lowrank", rank=2)
    >>> d = tempfile.mkdtemp(); _ = s.save(d)
    >>> DistilledSet.load(d).images.shape
    torch.Size([3, 3, 8, 8])
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.distill.correspondence import Correspondence, correspondence_from_config, make_correspondence
from mdw_kit.runs import ArtifactError, load_tensors, read_json, save_tensors, write_json
from mdw_kit.train import to_pixels

LR_GROUPS = ("image", "text")
FORMAT = "mdw-distilled-set"
VERSION = 1
TENSOR_FILE = "distilled.safetensors"
CONFIG_FILE = "distilled.json"


class DistilledSet(nn.Module):
    """Synthetic images, texts, correspondence and student learning rates.

    Args:
        images: ``[M, 3, H, W]`` float pixels in ``[0, 1]``.
        text: ``[M, d]`` text embeddings.
        corr: the correspondence (its size must be ``M``).
        lr_init: initial student learning rate, a float or one value per group in :data:`LR_GROUPS`.
        init_indices: indices of the real pairs the set started from (``-1`` when unknown).
        meta: free-form JSON-able description (source, budget, config).
    """

    def __init__(self, images: torch.Tensor, text: torch.Tensor, corr: Correspondence,
                 lr_init: float | Sequence[float] = 0.01, init_indices: torch.Tensor | None = None,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        M = images.shape[0]
        _check_shapes(images, text, corr)
        self.images = nn.Parameter(images.detach().float().clone())
        self.text = nn.Parameter(text.detach().float().clone())
        self.corr = corr
        lrs = [float(lr_init)] * len(LR_GROUPS) if isinstance(lr_init, (int, float)) else list(map(float, lr_init))
        if len(lrs) != len(LR_GROUPS) or min(lrs) <= 0 or not all(map(math.isfinite, lrs)):
            raise ValueError(f"lr_init must be positive and finite, one per group {LR_GROUPS}; got {lr_init}")
        self.log_lr = nn.Parameter(torch.tensor(lrs).log())
        idx = torch.full((M,), -1, dtype=torch.long) if init_indices is None else \
            torch.as_tensor(init_indices, dtype=torch.long).clone()
        self.register_buffer("init_indices", idx)
        self.register_buffer("init_images", images.detach().float().clone())
        self.meta: dict[str, Any] = dict(meta or {})
        self.maps: torch.Tensor | None = None
        self.map_history: list[tuple[int, torch.Tensor]] = []

    # ------------------------------------------------------------- building
    @classmethod
    def from_pairs(cls, images: torch.Tensor, text_emb: torch.Tensor, indices: Sequence[int] | torch.Tensor,
                   corr: str = "full", rank: int = 8, alpha: float = 1.0,
                   lr_init: float | Sequence[float] = 0.01, meta: dict | None = None,
                   corr_kw: dict[str, Any] | None = None) -> "DistilledSet":
        """Start from real pairs ``indices`` of ``images`` (uint8 or float in ``[0, 1]``) and ``text_emb``.

        ``corr_kw`` goes to :class:`~mdw_kit.distill.correspondence.Correspondence` (e.g. ``form``,
        ``off_share``).

        Example:
            >>> import torch
            >>> DistilledSet.from_pairs(torch.rand(5, 3, 4, 4), torch.randn(5, 8), [0, 2]).num_pairs
            2
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.ndim != 1 or len(idx) == 0:
            raise ValueError("indices must be a non-empty 1-D list of pair indices")
        if int(idx.min()) < 0 or int(idx.max()) >= len(images) or len(images) != len(text_emb):
            raise ValueError(f"indices must lie in [0, {len(images)}) and images ({len(images)}) / "
                             f"text_emb ({len(text_emb)}) must have one row per pair")
        imgs = to_pixels(images[idx])
        c = make_correspondence(corr, len(idx), rank=rank, alpha=alpha, **(corr_kw or {}))
        return cls(imgs, text_emb[idx].float(), c.to(imgs.device), lr_init=lr_init,
                   init_indices=idx, meta=meta)

    # ------------------------------------------------------------- accessors
    @property
    def num_pairs(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[1])

    def lr(self) -> torch.Tensor:
        """Student learning rates ``exp(log_lr)`` per group (differentiable)."""
        return self.log_lr.exp()

    def learning_rates(self) -> dict[str, float]:
        """``{"image": eta_img, "text": eta_txt}`` as floats."""
        return {g: float(v) for g, v in zip(LR_GROUPS, self.lr().detach())}

    def targets(self) -> torch.Tensor:
        """The soft target matrix ``P~`` ``[M, M]`` (detached): train on D~ with these."""
        return self.corr.matrix().detach().clone()

    def starting_pairs(self, real_images: torch.Tensor, real_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixels (float, ``[0, 1]``) and texts of the real pairs the set started from.

        Example:
            >>> import torch
            >>> x, t = torch.rand(5, 3, 4, 4), torch.randn(5, 8)
            >>> px, tx = DistilledSet.from_pairs(x, t, [1, 3]).starting_pairs(x, t)
            >>> bool(torch.equal(px, x[[1, 3]])), bool(torch.equal(tx, t[[1, 3]]))
            (True, True)
        """
        idx = self.init_indices.detach().cpu()
        return to_pixels(real_images[idx]), real_text[idx].float()

    def record_maps(self, iteration: int, maps: torch.Tensor) -> None:
        """Keep ``maps`` ``[M, H, W]`` as the latest region maps and append them to the history."""
        if maps.shape != (self.num_pairs, self.image_size, self.image_size):
            raise ValueError(f"maps must be [M, H, W] = {[self.num_pairs, self.image_size, self.image_size]}, "
                             f"got {list(maps.shape)}")
        self.maps = maps.detach().float().cpu()
        if self.map_history and self.map_history[-1][0] == int(iteration):
            self.map_history[-1] = (int(iteration), self.maps)
        else:
            self.map_history.append((int(iteration), self.maps))

    def nearest_captions(self, real_text_emb: torch.Tensor, captions: Sequence[str],
                         k: int = 1) -> list[list[tuple[str, float]]]:
        """Decode each synthetic text as its ``k`` nearest real captions (cosine) with the similarity.

        Example:
            >>> import torch
            >>> emb = torch.eye(3, 4)
            >>> s = DistilledSet.from_pairs(torch.rand(3, 3, 4, 4), emb, [2])
            >>> s.nearest_captions(emb, ["a", "b", "c"], k=1)[0][0][0]
            'c'
        """
        if len(real_text_emb) != len(captions):
            raise ValueError(f"real_text_emb has {len(real_text_emb)} rows but {len(captions)} captions given")
        with torch.no_grad():
            sim = F.normalize(self.text.detach().cpu(), dim=-1) @ F.normalize(real_text_emb.float().cpu(), dim=-1).T
            val, idx = sim.topk(min(k, len(captions)), dim=1)
        return [[(captions[int(j)], float(v)) for v, j in zip(vr, ir)] for vr, ir in zip(val, idx)]

    # ------------------------------------------------------------- save / load
    def config(self) -> dict[str, Any]:
        """JSON description of shapes, correspondence and meta (written as ``distilled.json``)."""
        return {"format": FORMAT, "version": VERSION, "num_pairs": self.num_pairs,
                "image_size": self.image_size, "text_dim": self.text_dim,
                "correspondence": self.corr.config(), "lr_groups": list(LR_GROUPS),
                "learning_rates": self.learning_rates(),
                "map_iterations": [it for it, _ in self.map_history], "meta": self.meta}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the set, by the names used in ``distilled.safetensors``."""
        out = {"images": self.images, "text": self.text, "log_lr": self.log_lr,
               "init_indices": self.init_indices, "init_images": self.init_images}
        out.update({f"corr.{k}": v for k, v in self.corr.state_dict().items()})
        if self.maps is not None:
            out["maps"] = self.maps
        out.update({f"map_history.{it}": m.half() for it, m in self.map_history})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def save(self, path: str | Path) -> Path:
        """Write the artifact folder ``path`` (``distilled.json`` + ``distilled.safetensors``)."""
        path = Path(path)
        save_tensors(path / TENSOR_FILE, self.tensors(), {"format": FORMAT, "version": VERSION})
        write_json(path / CONFIG_FILE, self.config())
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "DistilledSet":
        """Read an artifact folder written by :meth:`save`; any mismatch is an :class:`ArtifactError`."""
        path = Path(path)
        cfg = read_json(path / CONFIG_FILE)
        tensors, _ = load_tensors(path / TENSOR_FILE)
        return cls._from_saved(cfg, tensors, path).to(device)

    @classmethod
    def _from_saved(cls, cfg: dict, t: dict[str, torch.Tensor], path: Path) -> "DistilledSet":
        where = path / TENSOR_FILE
        if cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
            raise ArtifactError(f"{path / CONFIG_FILE}: not a {FORMAT} v{VERSION} config")
        M, H, d = cfg["num_pairs"], cfg["image_size"], cfg["text_dim"]
        expect = {"images": [M, 3, H, H], "text": [M, d], "log_lr": [len(LR_GROUPS)],
                  "init_indices": [M], "init_images": [M, 3, H, H]}
        for key, shape in expect.items():
            if key not in t:
                raise ArtifactError(f"{where}: missing tensor '{key}'")
            if list(t[key].shape) != shape:
                raise ArtifactError(f"{where}: tensor '{key}' has shape {list(t[key].shape)}, "
                                    f"the config says {shape}")
        cc = cfg["correspondence"]
        corr = correspondence_from_config(cc)
        _load_corr(corr, t, where)
        s = cls(t["images"], t["text"], corr, lr_init=t["log_lr"].exp().tolist(),
                init_indices=t["init_indices"], meta=cfg.get("meta"))
        with torch.no_grad():
            s.log_lr.copy_(t["log_lr"])
            s.init_images.copy_(t["init_images"])
        s._load_maps(cfg, t, where)
        return s

    def _load_maps(self, cfg: dict, t: dict[str, torch.Tensor], where: Path) -> None:
        shape = (self.num_pairs, self.image_size, self.image_size)
        for it in cfg.get("map_iterations", []):
            m = t.get(f"map_history.{it}")
            if m is None or tuple(m.shape) != shape:
                raise ArtifactError(f"{where}: region maps of iteration {it} missing or not shaped {list(shape)}")
            self.map_history.append((int(it), m.float()))
        if "maps" in t:
            if tuple(t["maps"].shape) != shape:
                raise ArtifactError(f"{where}: tensor 'maps' is not shaped {list(shape)}")
            self.maps = t["maps"].float()


def _load_corr(corr: Correspondence, t: dict[str, torch.Tensor], where: Path) -> None:
    want = corr.state_dict()
    got = {k[len("corr."):]: v for k, v in t.items() if k.startswith("corr.")}
    if set(got) != set(want):
        raise ArtifactError(f"{where}: correspondence tensors {sorted(got)} do not fit kind "
                            f"'{corr.kind}' (needs {sorted(want)})")
    for k, v in got.items():
        if v.shape != want[k].shape:
            raise ArtifactError(f"{where}: tensor 'corr.{k}' has shape {list(v.shape)}, "
                                f"expected {list(want[k].shape)}")
    corr.load_state_dict(got)


def _check_shapes(images: torch.Tensor, text: torch.Tensor, corr: Correspondence) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be [M, 3, H, H], got {list(images.shape)}")
    if text.ndim != 2 or text.shape[0] != images.shape[0]:
        raise ValueError(f"text must be [M, d] with M={images.shape[0]}, got {list(text.shape)}")
    if corr.size != images.shape[0]:
        raise ValueError(f"correspondence is {corr.size} x {corr.size} but there are {images.shape[0]} pairs")
