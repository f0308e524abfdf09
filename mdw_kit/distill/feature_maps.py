"""Which feature map of an image tower the region maps read (the "map stage").

A tower (:class:`~mdw_kit.models.retrieval.ImageTower`) runs its ``frozen`` blocks, then its
``trainable`` ones, and ends in a spatial map. Grad-CAM needs a map with enough cells: at
64 px EfficientNet-Lite0's last map is ``2 x 2``, so :func:`resolve_stage` can split the tower
after an intermediate block instead. A stage is given as

- ``"last"``: the tower's last spatial map (:meth:`ImageTower.spatial` of the stem output);
- ``"stride<n>"`` (``"stride2"``, ``"stride8"``, ``"stride16"`` ...): the deepest block whose
  output side is at least ``image_size / n``, e.g. for EfficientNet-Lite0 at 64 px the
  stride-2 stage (16 channels, ``32 x 32``), stride-8 (40 channels, ``8 x 8``) or stride-16
  (112 channels, ``4 x 4``);
- an ``int``: the output of block ``i`` of :func:`tower_blocks` (frozen blocks first);
- ``"auto"``: the tower's default, :data:`DEFAULT_STAGES` (``"last"`` for towers not listed).

EfficientNet-Lite0's default is the stride-2 stage. Measured with the pointing game on 100
starting pairs of ``shapes`` (64 px, 50% noise, dual-track experts 10 epochs, the experts'
final heads, each image's own text, chance 0.29; Grad-CAM of the log-softmax score, see
:mod:`mdw_kit.distill.ceo`): stride 2 0.86, stride 4 0.56 (block 4; block 3 0.60), stride 8 0.51,
stride 16 0.18, the last ``2 x 2`` map 0.04; HiResCAM 0.70 / 0.65 / 0.64 / 0.31 / 0.04.
On the images distillation produces the maps lose much of their aim: after 100 iterations with CEO
on these maps (``benchmarks/results/mechanisms_plain.json``) the pointing game on the final images
is 0.52 (3 seeds, sd 0.03; chance 0.22, and only 0.76-0.82 of the images' top texts name one of
their objects), short of the 0.85 the issue asked for.

Example:
    >>> import torch
    >>> from mdw_kit.models import build_model
    >>> m = build_model("convnet3", text_dim=16, image_size=32)
    >>> st = resolve_stage(m, 32, "stride8")
    >>> st.pre(torch.rand(2, 3, 32, 32)).shape[-1], st.side
    (4, 4)
    >>> st.post(st.pre(torch.rand(2, 3, 32, 32))).shape
    torch.Size([2, 64, 4, 4])
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# Per-tower default stage of "auto" (towers not listed read their last spatial map).
DEFAULT_STAGES: dict[str, str | int] = {"efficientnet_lite0": "stride2"}
NAMED = ("auto", "last", "stride<n>")


@dataclass
class MapStage:
    """A tower split at a feature map ``A``: ``pre(pixels) -> A`` and ``post(A) -> spatial map``.

    Attributes:
        name: the stage as resolved (``"last"`` or ``"block <i>"``).
        index: block index of ``A`` (``None`` for ``"last"``).
        side: ``A``'s side in cells at the image size it was resolved for (0: not a spatial map).
    """

    name: str
    index: int | None
    side: int
    pre: Callable[[torch.Tensor], torch.Tensor]
    post: Callable[[torch.Tensor], torch.Tensor]


def _as_blocks(part: nn.Module) -> list[nn.Module] | None:
    if isinstance(part, nn.Identity):
        return []
    return list(part) if isinstance(part, nn.Sequential) else None


def tower_blocks(tower: nn.Module) -> tuple[list[nn.Module], int] | None:
    """``(blocks, n_frozen)``: the tower's frozen then trainable blocks (``None`` if not sequential).

    Example:
        >>> from mdw_kit.models import build_model
        >>> blocks, n_frozen = tower_blocks(build_model("convnet3", text_dim=8).tower)
        >>> len(blocks), n_frozen
        (12, 0)
    """
    frozen, trainable = _as_blocks(tower.frozen), _as_blocks(tower.trainable)
    if frozen is None or trainable is None:
        return None
    return frozen + trainable, len(frozen)


@torch.no_grad()
def block_sides(tower: nn.Module, image_size: int) -> list[int]:
    """Output side of every block of :func:`tower_blocks` for one image (0 where not ``[B, C, h, w]``)."""
    split = tower_blocks(tower)
    if split is None:
        return []
    x, sides = (torch.zeros(1, 3, image_size, image_size, device=tower.mean.device) - tower.mean) / tower.std, []
    was = tower.training
    tower.eval()
    try:
        for b in split[0]:
            x = b(x)
            sides.append(int(x.shape[-1]) if x.ndim == 4 else 0)
    finally:
        tower.train(was)
    return sides


def default_stage(tower: nn.Module) -> str | int:
    """The stage ``"auto"`` stands for on this tower (:data:`DEFAULT_STAGES`, else ``"last"``)."""
    return DEFAULT_STAGES.get(str(getattr(tower, "name", "")).split(":")[0], "last")


def _stage_index(name: str, tower: nn.Module, stage: str | int, image_size: int) -> int | None:
    if stage == "auto":
        stage = default_stage(tower)
    if stage == "last":
        return None
    sides = block_sides(tower, image_size)
    if not sides:
        raise ValueError(f"map stage {stage!r}: tower {name!r} is not a sequence of blocks; use 'last'")
    if isinstance(stage, int):
        if not 0 <= stage < len(sides) or sides[stage] == 0:
            raise ValueError(f"map stage {stage}: tower {name!r} has blocks 0..{len(sides) - 1} "
                             f"with spatial sides {sides}")
        return stage
    m = re.fullmatch(r"stride(\d+)", str(stage))
    if m is None or int(m[1]) < 1:
        raise ValueError(f"unknown map stage {stage!r}; use one of {NAMED} or a block index")
    need = image_size / int(m[1])
    ok = [i for i, s in enumerate(sides) if s >= need]
    if not ok:
        raise ValueError(f"map stage {stage!r}: no block of {name!r} keeps a side >= {need:g} (sides {sides})")
    return ok[-1]


def resolve_stage(model: nn.Module, image_size: int, stage: str | int = "auto") -> MapStage:
    """The :class:`MapStage` of ``model``'s tower for ``stage`` (see the module docstring).

    ``pre`` normalises the pixels itself; gradients flow from ``A`` back to the pixels.
    """
    tower = model.tower
    idx = _stage_index(getattr(tower, "name", "tower"), tower, stage, image_size)
    if idx is None:
        probe_side = _last_side(tower, image_size)
        return MapStage("last", None, probe_side, lambda x: tower.spatial(tower.stem(x)), lambda a: a)
    blocks, n_frozen = tower_blocks(tower)
    head, tail = nn.Sequential(*blocks[:idx + 1]), nn.Sequential(*blocks[idx + 1:])
    frozen = blocks[:n_frozen]

    def pre(x: torch.Tensor) -> torch.Tensor:
        for b in frozen:  # frozen blocks always run on their stored statistics, as ImageTower.stem
            b.eval()
        return head((x - tower.mean) / tower.std)

    def post(a: torch.Tensor) -> torch.Tensor:
        for b in frozen:
            b.eval()
        return tail(a)

    return MapStage(f"block {idx}", idx, block_sides(tower, image_size)[idx], pre, post)


@torch.no_grad()
def _last_side(tower: nn.Module, image_size: int) -> int:
    was = tower.training
    tower.eval()
    try:
        out = tower.spatial(tower.stem(torch.zeros(1, 3, image_size, image_size, device=tower.mean.device)))
    finally:
        tower.train(was)
    return int(out.shape[-1]) if out.ndim == 4 else 0
