"""The correspondence figures: mismatched starting rows against clean ones."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mdw_kit.distill import diagnostics as diag
from mdw_kit.distill.correspondence import make_correspondence
from mdw_kit.distill.synthetic import DistilledSet


def test_mismatched_rows_that_moved_more_are_told_apart():
    # rows 1 and 3 keep a third of their mass on their own text, rows 0 and 2 nearly all of it
    P = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.4, 0.2, 0.4, 0.0],
                      [0.0, 0.0, 0.8, 0.2], [0.1, 0.1, 0.2, 0.2]])
    out = diag.mismatched_start_rows(P, [False, True, False, True])
    assert out["off_share_clean"] == pytest.approx((0.1 + 0.2) / 2)
    assert out["off_share_mismatched"] == pytest.approx((0.8 + 1 - 0.2 / 0.6) / 2)
    assert out["ratio"] == pytest.approx(out["off_share_mismatched"] / out["off_share_clean"])
    assert out["auroc"] == 1.0
    # the same matrix with the flags swapped: the share now says the opposite
    assert diag.mismatched_start_rows(P, [True, False, True, False])["auroc"] == 0.0


def test_mismatched_rows_with_one_group_empty_and_bad_lengths():
    P = torch.eye(3)
    out = diag.mismatched_start_rows(P, [False, False, False])
    assert out["off_share_clean"] == 0.0
    assert math.isnan(out["off_share_mismatched"]) and math.isnan(out["auroc"])
    with pytest.raises(ValueError, match="2 flags for a 3 x 3"):
        diag.mismatched_start_rows(P, [True, False])


def _set(M: int, init: torch.Tensor | None) -> DistilledSet:
    torch.manual_seed(0)
    corr = make_correspondence("full", M)
    with torch.no_grad():
        for p in corr.parameters():
            p.add_(torch.randn_like(p))
    return DistilledSet(torch.rand(M, 3, 8, 8), torch.randn(M, 6), corr, init_indices=init)


def test_mechanism_figures_report_mismatched_starts_where_the_truth_is_known():
    syn = _set(4, torch.tensor([5, 0, 2, 7]))
    clean = torch.ones(8, dtype=torch.bool)
    clean[[0, 7]] = False                         # synthetic pairs 1 and 3 started mismatched
    text = torch.randn(8, 6)
    figs = diag.mechanism_figures(syn, SimpleNamespace(noise_known=True, clean=clean), text)
    expect = diag.mismatched_start_rows(syn.corr.matrix(), [False, True, False, True])
    assert figs["mismatched_start"] == pytest.approx(expect)
    # unknown truth, or a set that did not start from real pairs: no such figure
    assert "mismatched_start" not in diag.mechanism_figures(syn, SimpleNamespace(noise_known=False, clean=clean), text)
    assert "mismatched_start" not in diag.mechanism_figures(_set(4, None), SimpleNamespace(noise_known=True, clean=clean),
                                                            text)


def test_mechanism_figures_score_the_starting_correspondence_too():
    from mdw_kit.distill.correspondence import similarity_prior
    text = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    init = torch.tensor([5, 0, 2, 7, 1, 3])
    caption_cos = torch.nn.functional.normalize(text[init], dim=-1)
    # a prior that follows the starting captions' similarity: the start already correlates with it
    prior = similarity_prior(caption_cos @ caption_cos.T, 5.0)
    syn = DistilledSet(torch.rand(6, 3, 8, 8), text[init].clone(), make_correspondence("full", 6, prior=prior),
                       init_indices=init)
    figs = diag.mechanism_figures(syn, SimpleNamespace(noise_known=False), text)
    assert figs["caption_spearman_start"] > 0.7  # (below 1: each row is normalised on its own)
    assert figs["caption_spearman"] == pytest.approx(figs["caption_spearman_start"])  # nothing learned yet
    plain = diag.mechanism_figures(_set(6, init), SimpleNamespace(noise_known=False), text)
    assert math.isnan(plain["caption_spearman_start"]) or abs(plain["caption_spearman_start"]) < 0.3  # all ties
