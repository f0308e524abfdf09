"""The retrieval model: an image tower and a text head over frozen text embeddings.

Logits ``S_ij = cos(f(x_i), h(t_j)) / tau``. The image tower is split into a
``frozen`` part (never trained, never unrolled by distillation) and a
``trainable`` part ending in a spatial feature map (the map Grad-CAM reads).
All trainable parameters (trainable tower part, image projection, text head)
are reachable as one flat vector, which is what expert trajectories store and
trajectory matching compares.

Example:
    >>> import torch
    >>> from mdw_kit.models import build_model
    >>> m = build_model("convnet3", text_dim=384, image_size=32)
    >>> m(torch.rand(4, 3, 32, 32), torch.randn(4, 384)).shape
    torch.Size([4, 4])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class StemFeatures(torch.Tensor):
    """Frozen-backbone features standing in for pixels: :meth:`ImageTower.stem` passes them through.

    Training, scoring and evaluation code indexes, moves and batches these like pixels; the
    model then skips its frozen part. Indexing, ``.to``, ``.float`` and friends keep the type;
    every other operation returns a plain tensor. Made by :mod:`mdw_kit.features` (cached).

    Example:
        >>> import torch
        >>> f = StemFeatures.wrap(torch.ones(4, 8, 2, 2))
        >>> type(f[:2].float()).__name__, type(f + 1).__name__
        ('StemFeatures', 'Tensor')
    """

    @staticmethod
    def wrap(t: torch.Tensor) -> "StemFeatures":
        """View a plain tensor of stem features as :class:`StemFeatures`."""
        return t.as_subclass(StemFeatures)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and getattr(func, "__name__", "") in _KEEP_TYPE:
            return out.as_subclass(cls)
        return out


_KEEP_TYPE = {"__getitem__", "to", "float", "cpu", "cuda", "contiguous", "clone", "detach", "pin_memory",
              "index_select", "narrow", "__get__"}


def is_stem_features(x: object) -> bool:
    """True for :class:`StemFeatures` (inputs the frozen part of a tower has already seen)."""
    return isinstance(x, StemFeatures)


class ImageTower(nn.Module):
    """Normalise pixels, run ``frozen`` then ``trainable``; expose the spatial map.

    Args:
        frozen: module applied first, without gradients to its weights (may be ``nn.Identity``).
        trainable: module whose output is a spatial map ``[B, C, h, w]``.
        out_channels: ``C``.
        pool: ``"flatten"`` (ConvNet style: ``C*h*w`` features) or ``"avg"`` (``C`` features).
        mean, std: per-channel pixel normalisation applied to inputs in ``[0, 1]``.
        map_size: ``h`` (= ``w``) of the spatial map at the tower's image size; needed for ``flatten``.
    """

    def __init__(self, frozen: nn.Module, trainable: nn.Module, out_channels: int, pool: str = "avg",
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), map_size: int | None = None,
                 name: str = "tower"):
        super().__init__()
        if pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be 'avg' or 'flatten', got {pool!r}")
        if pool == "flatten" and map_size is None:
            raise ValueError("pool='flatten' needs map_size")
        self.frozen, self.trainable, self.pool, self.name = frozen, trainable, pool, name
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = out_channels * (map_size * map_size if pool == "flatten" else 1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen features of pixels ``x`` in ``[0, 1]`` (gradients still flow to ``x``).

        :class:`StemFeatures` are returned as they are (as a plain tensor): they are this output.
        """
        if isinstance(x, StemFeatures):
            return x.as_subclass(torch.Tensor)
        if isinstance(self.frozen, nn.Identity):
            return (x - self.mean) / self.std
        self.frozen.eval()
        return self.frozen((x - self.mean) / self.std)

    @property
    def has_frozen_stem(self) -> bool:
        """True when a frozen (pretrained) part runs first: its features can be cached."""
        return not isinstance(self.frozen, nn.Identity)

    def spatial(self, feats: torch.Tensor) -> torch.Tensor:
        """Trainable part on frozen features: the spatial map ``[B, C, h, w]``."""
        return self.trainable(feats)

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pool the spatial map into a feature vector."""
        return fmap.flatten(1) if self.pool == "flatten" else fmap.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.spatial(self.stem(x)))


class RetrievalModel(nn.Module):
    """Image tower + projection, text head over frozen text embeddings, cosine logits / tau.

    Args:
        tower: the :class:`ImageTower`.
        text_dim: size of the frozen text embeddings.
        embed_dim: joint space size.
        temperature: tau of the logits.
        text_head: ``"linear"`` or ``"mlp"``.
    """

    def __init__(self, tower: ImageTower, text_dim: int, embed_dim: int = 256,
                 temperature: float = 0.07, text_head: str = "linear"):
        super().__init__()
        self.tower = tower
        self.image_proj = nn.Linear(tower.out_dim, embed_dim)
        if text_head == "linear":
            self.text_head = nn.Linear(text_dim, embed_dim)
        elif text_head == "mlp":
            self.text_head = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.GELU(),
                                           nn.Linear(embed_dim, embed_dim))
        else:
            raise ValueError(f"unknown text_head {text_head!r}; use 'linear' or 'mlp'")
        self.temperature = temperature
        self.text_dim, self.embed_dim = text_dim, embed_dim

    # Plain forward -----------------------------------------------------------
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.tower(x)), dim=-1)

    def encode_image_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Embed images from their frozen stem features (skips the frozen part)."""
        return F.normalize(self.image_proj(self.tower.head(self.tower.spatial(feats))), dim=-1)

    def encode_text(self, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(t), dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x) @ self.encode_text(t).T / self.temperature

    def logits_from_features(self, feats: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.encode_image_features(feats) @ self.encode_text(t).T / self.temperature


# ---------------------------------------------------------------- flat params
def trainable_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters, in a fixed order (the flat vector's layout)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Name -> shape of every trainable parameter (stored with trajectories, checked on load)."""
    params = dict(model.named_parameters())
    return {n: list(params[n].shape) for n in trainable_names(model)}


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters as one detached flat vector."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in trainable_names(model)])


def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector into the trainable parameters."""
    with torch.no_grad():
        for n, t in unflatten(model, flat).items():
            dict(model.named_parameters())[n].copy_(t)


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector into ``{name: tensor}`` views shaped like the trainable parameters."""
    params = dict(model.named_parameters())
    out, i = {}, 0
    names = trainable_names(model)
    total = sum(params[n].numel() for n in names)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} values; the model's trainable parameters "
                         f"need {total}")
    for n in names:
        k = params[n].numel()
        out[n] = flat[i:i + k].view_as(params[n])
        i += k
    return out


def functional_logits(model: RetrievalModel, flat: torch.Tensor, images_or_feats: torch.Tensor,
                      text: torch.Tensor, from_features: bool = False) -> torch.Tensor:
    """Logits of ``model`` with its trainable parameters replaced by ``flat`` (differentiable in both).

    With ``from_features=True`` the inputs are frozen stem features
    (:meth:`ImageTower.stem`), so the frozen backbone is not re-run.
    """
    params = unflatten(model, flat)
    fn = "logits_from_features" if from_features else "forward"
    return functional_call(model, params, (images_or_feats, text), strict=False) if fn == "forward" \
        else _call_method(model, params, fn, images_or_feats, text)


def _call_method(model: nn.Module, params: dict[str, torch.Tensor], method: str, *args):
    class _Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *a):
            return getattr(self.m, method)(*a)

    w = _Wrap(model)
    return functional_call(w, {f"m.{k}": v for k, v in params.items()}, args, strict=False)
