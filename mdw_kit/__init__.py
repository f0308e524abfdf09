"""mdw-kit: distil noisy image-text datasets into small clean synthetic ones (MDW).

The front door: ``import mdw_kit as mk`` gives the stage API (:mod:`mdw_kit.stages`) and its types:
``mk.prepare_data``, ``mk.noise_report``, ``mk.build_buffer``, ``mk.distill``, ``mk.evaluate``,
``mk.run_method``, ``mk.export``. ``mk.distill`` and ``mk.evaluate`` are also the names of the
subpackage :mod:`mdw_kit.distill` and the module :mod:`mdw_kit.evaluation.metrics`: calling them runs the
stage (:func:`mdw_kit.stages.distill`, :func:`mdw_kit.stages.evaluate`), and their contents stay
importable as before (``from mdw_kit.distill import DistilledSet``).

Example:
    >>> import mdw_kit as mk
    >>> sorted(mk.list_presets())[:2]
    ['default', 'scratch']
    >>> callable(mk.distill), mk.distill.DistilledSet.__name__
    (True, 'DistilledSet')
"""
__version__ = "0.1.0"

import sys as _sys
import types as _types

from mdw_kit import distill as _distill_pkg
from mdw_kit import stages
from mdw_kit.distill.distiller import DistillConfig
from mdw_kit.evaluation.protocol import EvalConfig
from mdw_kit.distill.methods import METHODS, get_method
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.experts.buffer import ExpertBuffer, load_buffer
from mdw_kit.experts.dual_track import DualTrackConfig
from mdw_kit.experts.report import NoiseReport
from mdw_kit.features import FeatureCache
from mdw_kit.models import ModelConfig
from mdw_kit.data.bundle import DataBundle
from mdw_kit.presets import list_presets, load_preset
from mdw_kit.stages import (build_buffer, distiller, dual_track_config, export, model_config, noise_report,
                            prepare_data, run_method)
from mdw_kit.train import TrainConfig


class _StageModule(_types.ModuleType):
    """A module that is also its stage's function: calling it runs ``__stage__``."""

    def __call__(self, *args, **kwargs):
        return self.__stage__(*args, **kwargs)


_distill_pkg.__class__ = _StageModule
_distill_pkg.__stage__ = stages.distill
distill = _sys.modules["mdw_kit.distill"]
evaluate = stages.evaluate

__all__ = ["prepare_data", "noise_report", "build_buffer", "distiller", "distill", "evaluate", "run_method", "export",
           "model_config", "dual_track_config", "load_preset", "list_presets", "DataBundle", "NoiseReport",
           "ExpertBuffer", "load_buffer", "DistilledSet", "DistillConfig", "DualTrackConfig", "EvalConfig",
           "TrainConfig", "ModelConfig", "FeatureCache", "METHODS", "get_method", "stages"]
