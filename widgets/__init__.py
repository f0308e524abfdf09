"""Interactive views of mdw-kit results (ipywidgets + plotly), built on the core library.

Every widget takes plain data (tensors, DataFrames, a ``DistilledSet``), so it
can be built and driven from plain Python (tests set its controls and read its
state); each also draws a static figure (``static_figure()``) that ``show()`` attaches to the
live widget's output as its fallback: a frontend that renders widgets shows the widget, an
exported page or a notebook viewer shows the picture.

- :class:`PairGallery`: image-caption pairs filtered by split, injected noise, clean probability.
- :class:`NoiseExplorer`: per-track histograms, mixture fits and a detection threshold.
- :class:`TrainingMonitor`: live curves fed by the core's callbacks.
- :class:`CorrespondenceHeatmap`: the learned correspondence matrix, sortable and clickable.
- :class:`RegionViewer`: CEO region maps over synthetic images across saved iterations.
- :class:`AblationPanel`: run small ablation configurations and collect their results.
- :class:`MismatchReport`: the pairs most likely mismatched, ranked, each with a better caption.

Example:
    >>> import torch
    >>> from widgets import CorrespondenceHeatmap
    >>> CorrespondenceHeatmap(torch.eye(3)).select(1, 1)
    (1, 1)
"""
from widgets.ablation import AblationPanel
from widgets.gallery import PairGallery
from widgets.heatmap import CorrespondenceHeatmap, matrix_order
from widgets.mismatch import MismatchReport
from widgets.monitor import TrainingMonitor
from widgets.noise_explorer import NoiseExplorer, threshold_metrics
from widgets.region_viewer import RegionViewer

__all__ = ["PairGallery", "NoiseExplorer", "TrainingMonitor", "CorrespondenceHeatmap", "RegionViewer",
           "AblationPanel", "MismatchReport", "matrix_order", "threshold_metrics"]
