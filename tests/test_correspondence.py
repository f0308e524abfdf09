"""The learnable correspondence P~: parametrisations, identity-dominant start, rank, non-negativity."""
from __future__ import annotations

import pytest
import torch

from mdw_kit.distill.correspondence import Correspondence, make_correspondence


def diag_share(P: torch.Tensor) -> torch.Tensor:
    """Share of each row's normalised mass on the diagonal (what the soft loss sees)."""
    return P.diagonal() / P.sum(dim=1)


def test_identity_is_fixed_and_exact():
    c = make_correspondence("identity", 5)
    assert list(c.parameters()) == []
    assert torch.equal(c.matrix(), torch.eye(5))
    assert torch.equal(c.sub(torch.tensor([3, 1])), torch.eye(2))


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_learnable_kinds_start_identity_dominant_and_stay_non_negative(kind):
    c = make_correspondence(kind, 60, rank=4)
    P = c.matrix().detach()
    assert P.shape == (60, 60)
    off = P[~torch.eye(60, dtype=torch.bool)]
    assert bool((P.diagonal() > 0.9).all()) and float(off.max()) < 0.01
    assert float(diag_share(c.sub(torch.arange(50)).detach()).min()) > 0.9  # a mini-batch of 50: diagonal dominates
    with torch.no_grad():
        for p in c.parameters():
            p.add_(torch.randn_like(p) * 20)  # any parameter values
    assert bool((c.matrix() >= 0).all()) and bool(torch.isfinite(c.matrix()).all())


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_gradients_reach_every_parameter(kind):
    c = make_correspondence(kind, 8, rank=2)
    with torch.no_grad():
        for p in c.parameters():
            p.add_(0.3 * torch.randn_like(p))  # lowrank: R starts at zero, so L's gradient would too
    (c.matrix() * torch.randn(8, 8)).sum().backward()
    for name, p in c.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_lowrank_starts_with_zero_lowrank_part_and_respects_rank():
    c = make_correspondence("lowrank", 30, rank=3, alpha=2.0)
    assert torch.count_nonzero(c.lowrank_part()) == 0
    with torch.no_grad():
        c.right.normal_()
        c.left.normal_()
    assert int(torch.linalg.matrix_rank(c.lowrank_part())) == 3
    # off the diagonal, the matrix's logits are exactly the fixed offset plus the low-rank part
    off_diag = ~torch.eye(30, dtype=torch.bool)
    logits = torch.logit(c.matrix().detach().double())
    assert torch.allclose(logits[off_diag] - c.off_logit, c.lowrank_part().detach().double()[off_diag], atol=1e-4)


@pytest.mark.parametrize("kind", ["identity", "full", "lowrank"])
def test_sub_equals_the_block_of_the_full_matrix(kind):
    c = make_correspondence(kind, 9, rank=2)
    with torch.no_grad():
        for p in c.parameters():
            p.add_(torch.randn_like(p))
    idx = torch.tensor([7, 2, 5, 0])
    assert torch.allclose(c.sub(idx), c.matrix()[idx][:, idx], atol=1e-6)


def test_topk_ranks_the_row():
    c = make_correspondence("full", 6)
    with torch.no_grad():
        c.logits[2, 4] = 10.0
    vals, cols = c.topk(2, 2)
    assert cols.tolist() == [4, 2] and bool(vals[0] >= vals[1])
    with pytest.raises(IndexError):
        c.topk(6, 1)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown correspondence kind"):
        Correspondence("diagonal", 4)
    with pytest.raises(ValueError, match="rank"):
        make_correspondence("lowrank", 4, rank=5)
    with pytest.raises(ValueError, match="lowrank"):
        make_correspondence("full", 4).lowrank_part()


def test_config_rebuilds_the_same_kind():
    c = make_correspondence("lowrank", 7, rank=2, alpha=3.0)
    cfg = c.config()
    d = make_correspondence(cfg["kind"], cfg["size"], rank=cfg["rank"], alpha=cfg["alpha"],
                            off_logit=cfg["off_logit"])
    d.load_state_dict(c.state_dict())
    assert torch.equal(c.matrix(), d.matrix())
