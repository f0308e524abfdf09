"""Stage 1: noise-robust experts. Dual-track collaborative learning, GMM noise scoring,
the noise report and the expert trajectory buffer.

Example:
    >>> from mdw_kit.experts import fit_clean_probability
    >>> p, info = fit_clean_probability([0.1, 0.2, 0.15, 3.0, 3.2, 2.9])
    >>> [round(float(v)) for v in p]
    [1, 1, 1, 0, 0, 0]
"""
from mdw_kit.experts.buffer import ExpertBuffer, build_buffer, load_buffer, run_buffer
from mdw_kit.experts.dual_track import (DualTrackConfig, DualTrackResult, global_pair_losses, run_noise_report,
                                        summarize_detection, train_dual_track)
from mdw_kit.experts.gmm import fit_clean_probability
from mdw_kit.experts.report import NoiseReport, auroc, detection_metrics, report_from_scores

__all__ = ["fit_clean_probability", "DualTrackConfig", "DualTrackResult", "train_dual_track",
           "summarize_detection", "global_pair_losses", "run_noise_report", "NoiseReport", "report_from_scores",
           "auroc", "detection_metrics", "ExpertBuffer", "build_buffer", "load_buffer", "run_buffer"]
