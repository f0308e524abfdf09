"""The learnable correspondence P~: parametrisations, identity-dominant start, rank, non-negativity."""
from __future__ import annotations

import pytest
import torch

from mdw_kit.distill.correspondence import FORMS, Correspondence, make_correspondence
from mdw_kit.train import symmetric_info_nce


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


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_gradients_reach_every_parameter_at_the_initial_value(kind, form):
    c = make_correspondence(kind, 8, rank=2, form=form)
    logits = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    symmetric_info_nce(logits, targets=c.sub(torch.arange(8))).backward()
    for name, p in c.named_parameters():
        assert p.grad is not None and float(p.grad.abs().min() if name != "logits" else p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_exp_form_has_no_vanishing_slope_at_the_start(kind):
    """What the loss sees is a softmax of the logits: d log q_ij / d Z_ij = 1 - q_ij (close to 1 off
    the diagonal), where the sigmoid form's diagonal sits at slope sigmoid'(4) = 0.018."""
    c = make_correspondence(kind, 20, rank=3)
    z = c._logits().detach().requires_grad_(True)
    q = c._squash(z) / c._squash(z).sum(dim=1, keepdim=True)
    torch.log(q[2, 7]).backward()
    assert float(z.grad[2, 7]) == pytest.approx(1.0 - float(q[2, 7].detach()), rel=1e-5)
    assert float(z.grad[2, 7]) > 0.99
    s = make_correspondence(kind, 20, rank=3, form="sigmoid")
    zs = s._logits().detach().requires_grad_(True)
    torch.sigmoid(zs)[3, 3].backward()
    assert float(zs.grad[3, 3]) < 0.02


@pytest.mark.parametrize("M", [10, 100, 500])
@pytest.mark.parametrize("share", [0.02, 0.1])
def test_exp_form_starts_with_the_requested_off_diagonal_share(M, share):
    for kind in ("full", "lowrank"):
        c = make_correspondence(kind, M, rank=2, off_share=share)
        assert c.off_diagonal_share() == pytest.approx(share, abs=1e-3)
        assert torch.allclose(c.row_shares().sum(dim=1), torch.ones(M))


def test_lowrank_starts_near_zero_lowrank_part_and_respects_rank():
    c = make_correspondence("lowrank", 30, rank=3, alpha=2.0)
    assert 0 < float(c.lowrank_part().abs().max()) < 1e-3
    with torch.no_grad():
        c.right.normal_()
        c.left.normal_()
    assert int(torch.linalg.matrix_rank(c.lowrank_part())) == 3
    # off the diagonal, the matrix's logits are exactly the fixed offset plus the low-rank part
    off_diag = ~torch.eye(30, dtype=torch.bool)
    for form, inverse in (("exp", torch.log), ("sigmoid", torch.logit)):
        c.form = form
        logits = inverse(c.matrix().detach().double())
        assert torch.allclose(logits[off_diag] - c.off_logit, c.lowrank_part().detach().double()[off_diag],
                              atol=1e-4)


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
    with pytest.raises(ValueError, match="form"):
        make_correspondence("full", 4, form="softplus")
    with pytest.raises(ValueError, match="off_share"):
        make_correspondence("full", 4, off_share=1.0)


@pytest.mark.parametrize("form", FORMS)
def test_config_rebuilds_the_same_kind(form):
    c = make_correspondence("lowrank", 7, rank=2, alpha=3.0, form=form)
    cfg = c.config()
    assert cfg["form"] == form
    d = make_correspondence(cfg["kind"], cfg["size"], rank=cfg["rank"], alpha=cfg["alpha"],
                            off_logit=cfg["off_logit"], form=cfg["form"])
    d.load_state_dict(c.state_dict())
    assert torch.equal(c.matrix(), d.matrix())


# ------------------------------------------------------------------ prior
def test_similarity_prior_spreads_the_off_diagonal_share_by_score_and_keeps_it():
    from mdw_kit.distill.correspondence import similarity_prior
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 6, generator=g) * 3
    prior = similarity_prior(scores)
    assert torch.equal(prior.diagonal(), torch.zeros(6))
    assert torch.equal(similarity_prior(scores, 0.0), torch.zeros(6, 6))
    for kind in ("full", "lowrank"):
        c = make_correspondence(kind, 6, rank=2, off_share=0.2, prior=prior)
        assert c.off_diagonal_share() == pytest.approx(0.2, abs=1e-4)  # the share is the prior-free one
        Q = c.row_shares()
        for i in range(6):  # within a row, the off-diagonal order is the scores' order
            off = [j for j in range(6) if j != i]
            assert torch.argsort(Q[i, off]).tolist() == torch.argsort(scores[i, off]).tolist()


def test_a_prior_has_gradients_everywhere_survives_config_and_is_the_initial_state():
    from mdw_kit.distill.correspondence import correspondence_from_config, similarity_prior
    prior = similarity_prior(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))
    for kind in ("full", "lowrank"):
        c = make_correspondence(kind, 5, rank=2, prior=prior)
        assert [n for n, _ in c.named_buffers()] == ["prior"] and c.config()["prior"] is True
        start = c.matrix().detach().clone()
        c.matrix().log().sum().backward()
        assert all(p.grad is not None and bool((p.grad != 0).any()) for p in c.parameters())
        with torch.no_grad():
            for p in c.parameters():
                p.add_(0.3)
        assert torch.allclose(c.initial().matrix(), start)
        back = correspondence_from_config(c.config())
        back.load_state_dict(c.state_dict())
        assert torch.equal(back.matrix(), c.matrix())
    assert make_correspondence("full", 5).config()["prior"] is False


def test_prior_needs_a_learnable_exp_correspondence_of_its_size():
    prior = torch.zeros(4, 4)
    for kw in ({"kind": "identity"}, {"kind": "full", "form": "sigmoid"}):
        with pytest.raises(ValueError, match="prior needs"):
            Correspondence(size=4, prior=prior, **kw)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        Correspondence("full", 4, prior=torch.zeros(3, 3))
    from mdw_kit.distill.correspondence import similarity_prior
    with pytest.raises(ValueError, match="square"):
        similarity_prior(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="scale"):
        similarity_prior(torch.zeros(3, 3), -1.0)
