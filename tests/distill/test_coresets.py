"""Coreset selectors: one verb, valid indices, determinism, clean-only picks, fallbacks."""
from __future__ import annotations

import pytest
import torch

from mdw_kit.data.base import DataError
from mdw_kit.distill.coresets import (CORESETS, CleanRandomCoreset, HerdingCoreset, KCenterCoreset,
                                      RandomCoreset, make_coreset, pair_features)


@pytest.fixture
def feats() -> torch.Tensor:
    return torch.randn(200, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(CORESETS))
def test_every_coreset_returns_distinct_valid_indices(name, feats):
    kwargs = {"p_clean": torch.rand(200, generator=torch.Generator().manual_seed(1))} \
        if name == "clean_random" else {}
    idx = make_coreset(name, **kwargs).select(feats, 30, seed=3)
    assert idx.dtype == torch.long and idx.shape == (30,)
    assert len(set(idx.tolist())) == 30
    assert int(idx.min()) >= 0 and int(idx.max()) < 200


@pytest.mark.parametrize("cls", [HerdingCoreset, KCenterCoreset])
def test_herding_kcenter_are_deterministic_and_differ_from_random(cls, feats):
    a, b = cls().select(feats, 25, seed=0), cls().select(feats, 25, seed=7)
    assert torch.equal(a, b)
    assert set(a.tolist()) != set(RandomCoreset().select(feats, 25, seed=0).tolist())


def test_random_depends_on_seed(feats):
    r = RandomCoreset()
    assert torch.equal(r.select(feats, 10, 1), r.select(feats, 10, 1))
    assert not torch.equal(r.select(feats, 10, 1), r.select(feats, 10, 2))


def test_kcenter_covers_every_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(5) * 20
    pts = (centres.repeat_interleave(30, 0) + torch.randn(150, 5, generator=g) * 0.1)
    idx = KCenterCoreset().select(pts, 5)
    assert sorted((idx // 30).tolist()) == [0, 1, 2, 3, 4]


def test_herding_matches_the_mean_better_than_random(feats):
    mu = feats.mean(0)
    herd = (feats[HerdingCoreset().select(feats, 20)].mean(0) - mu).norm()
    rand = torch.stack([(feats[RandomCoreset().select(feats, 20, s)].mean(0) - mu).norm()
                        for s in range(10)])
    assert herd < rand.min()


def test_clean_random_picks_only_predicted_clean(feats):
    p = torch.zeros(200)
    p[::3] = 0.9  # 67 predicted clean
    idx = CleanRandomCoreset(p).select(feats, 40, seed=0)
    assert bool((p[idx] >= 0.5).all())
    assert not torch.equal(idx, CleanRandomCoreset(p).select(feats, 40, seed=1))


def test_clean_random_tops_up_with_most_probably_clean():
    p = torch.tensor([0.9, 0.1, 0.45, 0.3, 0.8, 0.05])
    idx = CleanRandomCoreset().select(torch.zeros(6, 2), 4, p_clean=p)
    assert sorted(idx.tolist()) == [0, 2, 3, 4]


def test_clean_random_errors_are_clear():
    with pytest.raises(ValueError, match="p_clean"):
        CleanRandomCoreset().select(torch.zeros(5, 2), 2)
    with pytest.raises(DataError, match="p_clean has 3"):
        CleanRandomCoreset(torch.ones(3)).select(torch.zeros(5, 2), 2)


def test_budget_and_shape_errors(feats):
    with pytest.raises(DataError, match="exceeds"):
        RandomCoreset().select(feats, 201)
    with pytest.raises(ValueError, match="positive"):
        KCenterCoreset().select(feats, 0)
    with pytest.raises(DataError, match=r"\[N, D\]"):
        HerdingCoreset().select(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="unknown coreset"):
        make_coreset("nope")


def test_pair_features_joins_normalised_halves():
    f = pair_features(torch.randn(4, 3) * 100, torch.randn(4, 2))
    assert f.shape == (4, 5)
    assert torch.allclose(f.norm(dim=1), torch.ones(4), atol=1e-5)
    with pytest.raises(DataError, match="one row per pair"):
        pair_features(torch.randn(4, 3), torch.randn(3, 2))
