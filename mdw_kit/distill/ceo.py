"""Stage 4: correspondence-enhanced optimisation (CEO, "adaptive regions").

For synthetic image ``i``, :func:`region_maps` builds a Grad-CAM map of the
logit ``S_ij`` on a spatial feature map of the tower (the map stage, below)
for each ``j`` among the top-``k`` of row ``i`` of
``P~``; each map is upsampled to ``H x W``, scaled to a maximum of 1, and the
maps are mixed with weights ``P~_ij / sum_j P~_ij`` into one region map
``m_i`` (again scaled to a maximum of 1). A map with no positive evidence at all
(Grad-CAM's ReLU zeroes it) becomes uniform, so CEO leaves that image's
gradient as it is. Towers without a spatial map get
input-gradient saliency (``|dS_ij/dx|``, max over channels) instead.

Methods (``region_maps(method=...)``), one :class:`MapMethod` class each in the registry
:data:`MAP_METHODS` (:func:`register_map_method` adds one):

- ``"gradcam"``: Grad-CAM, ``relu(sum_c mean_hw(dS/dA_c) A_c)`` on the spatial map ``A``.
- ``"gradcam_mixed"``: Grad-CAM of the mixed score ``sum_j w_ij S_ij`` over the top-``k`` texts,
  one backward pass instead of ``k`` (the mix is taken before the ReLU and the scaling, so a text
  with a weak map weighs in by its gradient rather than by a map scaled to 1).
- ``"hirescam"``: ``relu(sum_c dS/dA_c * A_c)`` per position (faithful for flatten heads).
- ``"guided"``: the upsampled Grad-CAM map times the normalised input-gradient
  magnitude, as Guided Grad-CAM sharpens a coarse map to pixel resolution.
- ``"saliency"``: ``|dS_ij/dx|``, max over channels.
- ``"smoothgrad"``: saliency averaged over noisy copies of the image (noise sd 0.15).
- ``"occlusion"``: how much the mixed score ``sum_j w_ij S_ij`` drops when a square patch
  (side ``3/16`` of the image, stride ``1/16``) is replaced by the image's mean colour,
  averaged over the patches covering each pixel (forward passes only). It asks which
  *regions* the correspondence needs rather than which pixels it is sensitive to, so
  the high-frequency pixel changes distillation makes do not pull its peak away. It costs
  one forward pass of the images per patch position, 14 x 14 = 196 at any size (a few
  seconds for 40 images at 32 px on one CPU thread, against a fraction of a second for
  saliency).
- ``"auto"`` (default): Grad-CAM when the map stage (below) is at least ``7 x 7``,
  ``"saliency"`` below that; a warning says so when this sets aside a stage the caller chose, and
  when a feature-map method meets a tower without a spatial map.

Map stage (``region_maps(stage=...)``, :mod:`mdw_kit.distill.feature_maps`): the feature map the
Grad-CAM methods read: the tower's last spatial map, or an intermediate one with more cells.
``"auto"`` is the tower's default: EfficientNet-Lite0 reads its stride-2 stage (``32 x 32`` at
64 px; its last map is ``2 x 2`` there), the other towers their last map. On an intermediate
stage the score differentiated is ``log softmax_j S_ij`` over the texts rather than ``S_ij``, so
what every text shares (a plain background) cancels; on 100 ``shapes`` starting pairs in the
pretrained regime this raised the pointing game at the stride-8 stage from 0.35 to 0.51 (Grad-CAM)
and from 0.53 to 0.64 (HiResCAM). Measured figures per stage are in
:mod:`mdw_kit.distill.feature_maps`.

Measured on ConvNet-3 at 32 px (``4 x 4`` last map; the figures below are from that tower): on
40 synthetic ``shapes`` pairs (30% noise, SGD experts, the notebook-04 set-up) the share of map
peaks inside a box the top text names was 0.55 for saliency, 0.43 guided, 0.25 HiResCAM and 0.18
Grad-CAM, with chance 0.18 and a ceiling of 0.73 (the rest started from mismatched pairs, whose
text names none of the image's objects).

  On the images distillation produced, pixel-gradient maps lose their aim. In the
  notebook-04 set-up (40 pairs, 40 iterations, ``shapes`` with 600 images, one seed), maps
  computed after a saliency-driven run scored 0.35 for saliency, 0.45 for SmoothGrad and 0.85
  for occlusion on the final images (0.75 / 0.78 / 0.90 on the starting images; chance 0.24).
  When CEO itself runs on occlusion maps, 3 seeds (``benchmarks/bench_pointing_game.py``)
  give 0.81 on the starting images and 0.72 on the final ones, against 0.59 and 0.35 with
  saliency. ``"auto"`` still picks saliency for that tower, because the benchmark's MDW results
  were distilled with it; notebook 04 passes ``ceo_method="occlusion"``.

:func:`modulate_pixel_grad` turns the pixel gradient ``g`` into
``g * clip(1 + beta (m_i / mean(m_i) - 1), lo, hi)``, rescaled per image so the
mean absolute gradient (the mean pixel step of an SGD update) is unchanged:
discriminative regions move more, the rest less. ``beta = 0`` returns ``g``
untouched (plain trajectory matching).

Example:
    >>> import torch
    >>> g = torch.randn(2, 3, 8, 8)
    >>> maps = torch.rand(2, 8, 8)
    >>> g2 = modulate_pixel_grad(g, maps, beta=1.0)
    >>> torch.allclose(g2.abs().mean((1, 2, 3)), g.abs().mean((1, 2, 3)))
    True
    >>> modulate_pixel_grad(g, maps, beta=0.0) is g
    True
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.distill.feature_maps import MapStage, resolve_stage
from mdw_kit.models.retrieval import set_flat

DEFAULT_CLIP = (0.1, 5.0)
SMOOTHGRAD_SAMPLES = 8
SMOOTHGRAD_SIGMA = 0.15  # noise sd in [0, 1] pixel units
AUTO_MIN_MAP = 7  # "auto" uses Grad-CAM-based maps from this spatial-map side up, saliency below


def _model_with(model: nn.Module, flat: torch.Tensor | None) -> nn.Module:
    if flat is None:
        return model
    m = copy.deepcopy(model)
    set_flat(m, flat.to(next(m.parameters()).device))
    return m


def _image_scores(model: nn.Module, fmap: torch.Tensor, text_emb: torch.Tensor,
                  score: str = "logit") -> torch.Tensor:
    """Scores ``[b, M]`` of images given by their spatial maps against all (embedded) texts:
    the logits ``S_ij``, or with ``score="log_softmax"`` ``log softmax_j S_ij`` (evidence for text
    ``j`` over the other texts, so what all texts share, such as a plain background, cancels)."""
    img = F.normalize(model.image_proj(model.tower.head(fmap)), dim=-1)
    logits = img @ text_emb.T / model.temperature
    return F.log_softmax(logits, dim=1) if score == "log_softmax" else logits


def _normalise_max(x: torch.Tensor) -> torch.Tensor:
    """Scale each ``[H, W]`` map to a maximum of 1 (an all-zero map becomes all ones)."""
    mx = x.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(mx > 0, x / mx.clamp_min(1e-12), torch.ones_like(x))


def _smoothgrad_chunk(model: nn.Module, x: torch.Tensor, text_emb: torch.Tensor, top_i: torch.Tensor,
                      top_w: torch.Tensor, size: int, stage: MapStage) -> torch.Tensor:
    """SmoothGrad: ``|dS_ij/dx|`` (max over channels) averaged over noisy copies of the images.

    The noise is drawn from a generator seeded by the chunk's size, so the same images give the
    same maps.
    """
    gen = torch.Generator(device="cpu").manual_seed(x.shape[0])
    out = torch.zeros(x.shape[0], size, size, device=x.device)
    for _ in range(SMOOTHGRAD_SAMPLES):
        noise = torch.randn(x.shape, generator=gen).to(x) * SMOOTHGRAD_SIGMA
        out += _gradient_maps(model, x + noise, text_emb, top_i, top_w, size, "saliency", stage)
    return _normalise_max(out)


@torch.no_grad()
def _occlusion_chunk(model: nn.Module, x: torch.Tensor, text_emb: torch.Tensor, top_i: torch.Tensor,
                     top_w: torch.Tensor, size: int) -> torch.Tensor:
    """Occlusion sensitivity of the mixed top-k score (see the module docstring)."""
    x = x.detach()
    h, w = x.shape[-2:]
    patch, stride = max(2, round(size * 3 / 16)), max(1, round(size / 16))

    def mixed(imgs: torch.Tensor) -> torch.Tensor:
        scores = _image_scores(model, model.tower.spatial(model.tower.stem(imgs)), text_emb)
        return (scores.gather(1, top_i) * top_w).sum(dim=1)

    base = mixed(x)
    fill = x.mean(dim=(2, 3), keepdim=True)
    out = torch.zeros(x.shape[0], h, w, device=x.device)
    count = torch.zeros(h, w, device=x.device)
    ys = sorted(set(range(0, max(h - patch, 0) + 1, stride)) | {max(h - patch, 0)})
    xs = sorted(set(range(0, max(w - patch, 0) + 1, stride)) | {max(w - patch, 0)})
    for y in ys:
        for x0 in xs:
            occluded = x.clone()
            occluded[:, :, y:y + patch, x0:x0 + patch] = fill
            drop = (base - mixed(occluded)).clamp_min(0)
            out[:, y:y + patch, x0:x0 + patch] += drop.view(-1, 1, 1)
            count[y:y + patch, x0:x0 + patch] += 1
    out = out / count.clamp_min(1)
    if (h, w) != (size, size):
        out = F.interpolate(out[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return _normalise_max(out)


def _gradient_maps(model: nn.Module, x: torch.Tensor, text_emb: torch.Tensor, top_i: torch.Tensor,
                   top_w: torch.Tensor, size: int, method: str, stage: MapStage) -> torch.Tensor:
    """The gradient-based maps (saliency, Grad-CAM, HiResCAM, guided) of one chunk."""
    pixel_grad = method in ("saliency", "guided")
    x = x.detach().requires_grad_(pixel_grad)
    fmap = stage.pre(x)
    if not pixel_grad:
        fmap = fmap.detach().requires_grad_(True)
    score = "log_softmax" if stage.index is not None else "logit"
    scores = _image_scores(model, stage.post(fmap), text_emb, score)
    side = size
    out = torch.zeros(x.shape[0], side, side, device=x.device)
    for r in range(top_i.shape[1]):
        sel = scores.gather(1, top_i[:, r:r + 1]).sum()
        wrt = [x] if method == "saliency" else [fmap] + ([x] if method == "guided" else [])
        grads = torch.autograd.grad(sel, wrt, retain_graph=r + 1 < top_i.shape[1])
        if method == "saliency":
            cam = grads[0].abs().amax(dim=1)
        else:
            g = grads[0]
            weight = g if method == "hirescam" else g.mean(dim=(2, 3), keepdim=True)
            cam = _resize(F.relu((weight * fmap.detach()).sum(dim=1)), side)
            if method == "guided":
                cam = cam * _normalise_max(grads[1].abs().amax(dim=1))
        out += top_w[:, r].view(-1, 1, 1) * _normalise_max(cam)
    return _normalise_max(out)


class MapMethod:
    """One way to make region maps; subclasses implement the one verb :meth:`maps`.

    Attributes:
        name: the key of :data:`MAP_METHODS` (``DistillConfig.ceo_method``).
        reads_feature_map: whether it needs the tower's spatial map (else it works on pixels).
        native: whether its maps are made at the map stage's resolution (Grad-CAM, HiResCAM)
            rather than at the images'.
    """

    name = ""
    reads_feature_map = True
    native = False

    def maps(self, model: nn.Module, x: torch.Tensor, text_emb: torch.Tensor, top_i: torch.Tensor,
             top_w: torch.Tensor, side: int, stage: MapStage) -> torch.Tensor:
        """``[n, side, side]`` maps in ``[0, 1]`` of images ``x`` for their top texts ``top_i`` mixed by ``top_w``."""
        raise NotImplementedError


class GradCAM(MapMethod):
    """``relu(sum_c mean_hw(dS/dA_c) A_c)`` on the stage's map ``A``."""

    name, native = "gradcam", True

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        return _gradient_maps(model, x, text_emb, top_i, top_w, side, self.name, stage)


class GradCAMMixed(GradCAM):
    """Grad-CAM of the ``P~``-weighted sum of the top-``k`` scores: one backward pass per chunk."""

    name = "gradcam_mixed"

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        fmap = stage.pre(x.detach()).detach().requires_grad_(True)
        score = "log_softmax" if stage.index is not None else "logit"
        scores = _image_scores(model, stage.post(fmap), text_emb, score)
        (g,) = torch.autograd.grad((scores.gather(1, top_i) * top_w).sum(), [fmap])
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * fmap.detach()).sum(dim=1))
        return _normalise_max(_resize(cam, side))


class HiResCAM(GradCAM):
    """``relu(sum_c dS/dA_c * A_c)`` per position."""

    name = "hirescam"


class GuidedGradCAM(MapMethod):
    """The upsampled Grad-CAM map times the normalised input-gradient magnitude."""

    name = "guided"

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        return _gradient_maps(model, x, text_emb, top_i, top_w, side, self.name, stage)


class Saliency(MapMethod):
    """``|dS_ij/dx|``, max over channels."""

    name, reads_feature_map = "saliency", False

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        return _gradient_maps(model, x, text_emb, top_i, top_w, side, self.name, stage)


class SmoothGrad(MapMethod):
    """Saliency averaged over noisy copies of the images (seeded by the chunk's size: same images, same maps)."""

    name, reads_feature_map = "smoothgrad", False

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        return _smoothgrad_chunk(model, x, text_emb, top_i, top_w, side, stage)


class Occlusion(MapMethod):
    """How much the mixed top-k score drops when a patch is replaced by the image's mean colour."""

    name, reads_feature_map = "occlusion", False

    def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        return _occlusion_chunk(model, x, text_emb, top_i, top_w, side)


MAP_METHODS: dict[str, MapMethod] = {}


def register_map_method(method: MapMethod) -> MapMethod:
    """Add a :class:`MapMethod` instance to :data:`MAP_METHODS` under its ``name`` (usable as ``ceo_method``).

    Example:
        >>> class Flat(MapMethod):
        ...     name, reads_feature_map = "flat_demo", False
        ...     def maps(self, model, x, text_emb, top_i, top_w, side, stage):
        ...         return torch.ones(x.shape[0], side, side)
        >>> register_map_method(Flat()).name in MAP_METHODS
        True
        >>> del MAP_METHODS["flat_demo"]
    """
    if not method.name or method.name == "auto":
        raise ValueError(f"a map method needs a name other than 'auto', got {method.name!r}")
    MAP_METHODS[method.name] = method
    return method


for _m in (GuidedGradCAM(), GradCAM(), GradCAMMixed(), HiResCAM(), Saliency(), SmoothGrad(), Occlusion()):
    register_map_method(_m)
METHODS = ("auto", *MAP_METHODS)  # the shipped choices of ``region_maps(method=...)``


def _resize(maps: torch.Tensor, side: int) -> torch.Tensor:
    """``[n, h, w]`` maps to ``side x side``: bilinear up, area-average down, as they are at equal size."""
    if maps.shape[-1] == side and maps.shape[-2] == side:
        return maps
    if side > maps.shape[-1]:
        return F.interpolate(maps[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    return F.adaptive_avg_pool2d(maps[:, None], side)[:, 0]


def choose_method(method: str, stage_side: int, stage: str | int = "auto") -> str:
    """The map method ``region_maps`` uses; a warning names any explicit choice it overrides.

    ``"auto"``: ``"gradcam"`` on a stage of at least :data:`AUTO_MIN_MAP` cells a side, else
    ``"saliency"``. Feature-map methods on a tower (stage) without a spatial map fall back to
    ``"saliency"``.

    Example:
        >>> choose_method("auto", 8), choose_method("auto", 2), choose_method("occlusion", 2)
        ('gradcam', 'saliency', 'occlusion')
    """
    if method != "auto" and not MAP_METHODS[method].reads_feature_map:
        return method
    if method == "auto":
        chosen = "gradcam" if stage_side >= AUTO_MIN_MAP else "saliency"
        if chosen == "saliency" and stage != "auto":
            warnings.warn(f"region maps: map stage {stage!r} has {stage_side} x {stage_side} cells (< "
                          f"{AUTO_MIN_MAP}), so method 'auto' uses input-gradient saliency and ignores "
                          f"the stage", stacklevel=3)
        return chosen
    if stage_side == 0:
        warnings.warn(f"region maps: method {method!r} needs a spatial feature map and this tower's "
                      f"stage has none; using 'saliency'", stacklevel=3)
        return "saliency"
    return method


def region_maps(model: nn.Module, flat: torch.Tensor | None, images: torch.Tensor, text: torch.Tensor,
                P: torch.Tensor, k: int = 3, method: str = "auto", batch_size: int = 128,
                stage: str | int = "auto", native: bool = False) -> torch.Tensor:
    """Region maps ``[M, H, W]`` in ``[0, 1]`` of synthetic images (see the module docstring).

    Args:
        model: a ``RetrievalModel``; flat: its trainable parameters to use (``None``: as they are).
        images: ``[M, 3, H, W]`` pixels; text: ``[M, d]`` synthetic text embeddings.
        P: ``[M, M]`` soft correspondence; row ``i`` ranks the texts of image ``i``.
        k: how many top texts per image are mixed.
        method: ``"guided"``, ``"gradcam"``, ``"hirescam"``, ``"saliency"``, ``"smoothgrad"``,
            ``"occlusion"``, or ``"auto"`` (see :func:`choose_method`).
        stage: the feature map the Grad-CAM methods read (see
            :mod:`mdw_kit.distill.feature_maps`; ``"auto"``: the tower's default).
        native: return the maps at the stage's resolution ``[M, h, h]`` (Grad-CAM / HiResCAM as
            computed; the other methods area-averaged to it) instead of the images' ``H x W``.

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> m = build_model("convnet3", text_dim=16, image_size=32)
        >>> region_maps(m, None, torch.rand(4, 3, 32, 32), torch.randn(4, 16), torch.eye(4), k=2).shape
        torch.Size([4, 32, 32])
    """
    M, size = images.shape[0], images.shape[-1]
    if method != "auto" and method not in MAP_METHODS:
        raise ValueError(f"unknown region map method {method!r}; use one of {['auto', *MAP_METHODS]}")
    if P.shape != (M, M) or text.shape[0] != M:
        raise ValueError(f"need images [M,...], text [M, d] and P [M, M]; got M={M}, "
                         f"text {list(text.shape)}, P {list(P.shape)}")
    m = _model_with(model, flat)
    was_training = m.training
    m.eval()
    try:
        with torch.enable_grad():
            st = resolve_stage(m, size, stage)
            method = choose_method(method, st.side, stage)
            text_emb = m.encode_text(text.detach()).detach()
            top_v, top_i = P.detach().topk(min(k, M), dim=1)
            top_w = top_v / top_v.sum(dim=1, keepdim=True).clamp_min(1e-12)
            side = st.side if native and st.side > 0 else size
            maker = MAP_METHODS[method]
            cam_side = side if maker.native else size  # the others work at pixels
            chunks = [maker.maps(m, images[s:s + batch_size], text_emb, top_i[s:s + batch_size],
                                 top_w[s:s + batch_size], cam_side, st)
                      for s in range(0, M, batch_size)]
    finally:
        m.train(was_training)
    out = torch.cat(chunks).detach()
    return out if out.shape[-1] == side else _normalise_max(_resize(out, side))


def modulate_pixel_grad(grad: torch.Tensor, maps: torch.Tensor, beta: float,
                        clip: tuple[float, float] = DEFAULT_CLIP) -> torch.Tensor:
    """``grad * clip(1 + beta (m / mean(m) - 1))`` rescaled so each image's mean ``|grad|`` is unchanged.

    ``beta = 0`` returns ``grad`` itself. ``maps`` is ``[M, H, W]`` (non-negative).
    """
    if beta == 0:
        return grad
    if maps.shape != (grad.shape[0], *grad.shape[2:]):
        raise ValueError(f"maps must be [M, H, W] = {[grad.shape[0], *grad.shape[2:]]}, got {list(maps.shape)}")
    m = maps.to(grad)
    mean = m.mean(dim=(1, 2), keepdim=True)
    ratio = torch.where(mean > 0, m / mean.clamp_min(1e-12), torch.ones_like(m))
    w = (1.0 + beta * (ratio - 1.0)).clamp(clip[0], clip[1])
    out = grad * w[:, None]
    before, after = grad.abs().mean(dim=(1, 2, 3)), out.abs().mean(dim=(1, 2, 3))
    scale = torch.where(after > 0, before / after.clamp_min(1e-30), torch.ones_like(after))
    out = out * scale.view(-1, 1, 1, 1)
    return torch.where((after > 0).view(-1, 1, 1, 1), out, grad)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sd ``sigma`` pixels, replicate padding) of ``[N, C, H, W]`` tensors.

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1
        >>> y = gaussian_blur(x, 1.0)
        >>> round(float(y.sum()), 4), bool(y[0, 0, 4, 4] < 1)
        (1.0, True)
    """
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


