"""Models: image towers, the retrieval model, flat-parameter helpers and frozen text encoders.

Example:
    >>> import torch
    >>> from mdw_kit.models import build_model, get_flat
    >>> m = build_model("convnet3", text_dim=384, image_size=32)
    >>> get_flat(m).ndim
    1
"""
from mdw_kit.models.retrieval import (ImageTower, RetrievalModel, functional_logits, get_flat, param_shapes,
                                      set_flat, trainable_names, unflatten)
from mdw_kit.models.text import TextEncoder, build_text_encoder, embed_captions, list_text_encoders
from mdw_kit.models.towers import ModelConfig, autocast, build_model, build_tower, list_towers

__all__ = [
    "ImageTower", "RetrievalModel", "build_tower", "build_model", "ModelConfig", "list_towers",
    "build_text_encoder", "list_text_encoders", "embed_captions", "TextEncoder",
    "get_flat", "set_flat", "unflatten", "functional_logits", "param_shapes", "trainable_names", "autocast",
]
