"""mdw-kit: distil noisy image-text datasets into small clean synthetic ones (MDW).

The front door: ``import mdw_kit as mk`` gives the stage API and its types.

Example:
    >>> import mdw_kit as mk
    >>> sorted(mk.list_presets())[:2]
    ['default', 'scratch']
    >>> mk.DistillConfig().num_pairs > 0
    True
"""
__version__ = "0.1.0"

from mdw_kit.distill.distiller import DistillConfig
from mdw_kit.distill.evaluate import EvalConfig
from mdw_kit.distill.methods import METHODS, get_method
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.experts.buffer import ExpertBuffer, load_buffer
from mdw_kit.experts.dual_track import DualTrackConfig
from mdw_kit.experts.report import NoiseReport
from mdw_kit.features import FeatureCache
from mdw_kit.models import ModelConfig
from mdw_kit.pipeline import DataBundle
from mdw_kit.presets import list_presets, load_preset
from mdw_kit.stages import (build_buffer, distill, dual_track_config, evaluate, export, model_config,
                            noise_report, prepare_data, run_method)
from mdw_kit.train import TrainConfig

__all__ = ["prepare_data", "noise_report", "build_buffer", "distill", "evaluate", "run_method", "export",
           "model_config", "dual_track_config", "load_preset", "list_presets", "DataBundle", "NoiseReport",
           "ExpertBuffer", "load_buffer", "DistilledSet", "DistillConfig", "DualTrackConfig", "EvalConfig",
           "TrainConfig", "ModelConfig", "FeatureCache", "METHODS", "get_method"]
