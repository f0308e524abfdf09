"""Stage 3: trajectory matching; the two gradient modes, exactness, memory, helpers."""
from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.distill import matching
from mdw_kit.distill.matching import (calibrate_lr, match_loss, param_distance_loss, sample_batches,
                                      student_loss, time_plain_steps, tower_groups)
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
from mdw_kit.train import symmetric_info_nce


def tiny_model(seed: int = 0, dtype=torch.float32) -> RetrievalModel:
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.AvgPool2d(2))
    tower = ImageTower(nn.Identity(), body, 6, pool="flatten", map_size=4)
    return RetrievalModel(tower, text_dim=12, embed_dim=10).to(dtype)


def tiny_set(corr: str = "full", M: int = 12, dtype=torch.float32, seed: int = 0) -> DistilledSet:
    g = torch.Generator().manual_seed(seed)
    syn = DistilledSet.from_pairs(torch.rand(M, 3, 8, 8, generator=g), torch.randn(M, 12, generator=g),
                                  range(M), corr=corr, rank=3, lr_init=(0.05, 0.08))
    for p in syn.corr.parameters():  # move P~ away from its start so every gradient path is exercised
        with torch.no_grad():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return syn.to(dtype)


def expert_pair(model: nn.Module, scale: float = 0.05, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    start = get_flat(model)
    return start, start + scale * torch.randn(start.shape, generator=g, dtype=start.dtype)


def grads_of(model, syn, start, target, mode, batches, N=4, B=6):
    syn.zero_grad(set_to_none=True)
    out = match_loss(model, syn, start, target, N, B, mode=mode, batches=batches)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in syn.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("corr", ["full", "lowrank", "identity"])
def test_unroll_and_constant_memory_give_the_same_gradients(corr):
    model, syn = tiny_model(), tiny_set(corr)
    start, target = expert_pair(model)
    batches = sample_batches(syn.num_pairs, 4, 6, torch.Generator().manual_seed(3))
    out_u, gu = grads_of(model, syn, start, target, "unroll", batches)
    out_c, gc = grads_of(model, syn, start, target, "constant_memory", batches)
    assert torch.allclose(out_u.loss, out_c.loss)
    assert out_u.parts == pytest.approx(out_c.parts)
    expected = {"images", "text", "log_lr"} | ({"corr.logits"} if corr == "full" else set()) | \
        ({"corr.diag", "corr.left", "corr.right"} if corr == "lowrank" else set())
    assert set(gu) == set(gc) == expected
    for name in gu:
        assert gu[name].abs().sum() > 0, name
        assert torch.allclose(gu[name], gc[name], rtol=1e-4, atol=1e-7 * float(gu[name].abs().max())), name


def _nce64(logits, targets=None):
    t = torch.eye(len(logits), dtype=logits.dtype) if targets is None else targets
    rows, cols = F.log_softmax(logits, 1), F.log_softmax(logits, 0)
    rt, ct = t / t.sum(1, keepdim=True), t / t.sum(0, keepdim=True)
    return 0.5 * ((-(rt * rows).sum(1)) + (-(ct * cols).sum(0))).mean()


def test_constant_memory_gradient_matches_finite_differences(monkeypatch):
    # symmetric_info_nce computes in float32; a float64 copy makes central differences precise.
    monkeypatch.setattr(matching, "symmetric_info_nce", _nce64)
    model, syn = tiny_model(dtype=torch.float64), tiny_set("lowrank", dtype=torch.float64)
    start, target = expert_pair(model)
    batches = sample_batches(syn.num_pairs, 3, 6, torch.Generator().manual_seed(0))
    _, grads = grads_of(model, syn, start, target, "constant_memory", batches, N=3)

    def loss() -> float:
        with torch.no_grad():
            return float(match_loss(model, syn, start, target, 3, 6, "constant_memory", batches).loss)

    params = dict(syn.named_parameters())
    for name, ix in [("images", (2, 1, 3, 4)), ("text", (5, 7)), ("log_lr", (1,)), ("corr.left", (0, 2)),
                     ("corr.diag", (4,))]:
        p, eps = params[name], 1e-5
        with torch.no_grad():
            p[ix] += eps
        hi = loss()
        with torch.no_grad():
            p[ix] -= 2 * eps
        lo = loss()
        with torch.no_grad():
            p[ix] += eps
        fd = (hi - lo) / (2 * eps)
        assert fd == pytest.approx(float(grads[name][ix]), rel=1e-4, abs=1e-10), name


def test_zero_student_rate_gives_loss_one_per_group():
    model, syn = tiny_model(), tiny_set()
    with torch.no_grad():
        syn.log_lr.fill_(-200.0)  # eta = exp(-200) == 0 in float32
    start, target = expert_pair(model)
    out = match_loss(model, syn, start, target, 2, 6)
    assert out.parts == pytest.approx({"image": 1.0, "text": 1.0})
    assert torch.equal(out.final, start)


def test_param_distance_loss_is_per_group_and_skips_still_groups():
    groups = torch.tensor([0, 0, 1, 1])
    start, target = torch.zeros(4), torch.tensor([1.0, 1.0, 0.0, 0.0])
    final = torch.tensor([0.5, 0.5, 3.0, 0.0])
    out = param_distance_loss(final, start, target, groups)
    assert out.tolist() == pytest.approx([0.25, 0.0])  # text group: the expert did not move


def test_identity_targets_equal_plain_info_nce():
    model, syn = tiny_model(), tiny_set("identity")
    flat, feats = get_flat(model), model.tower.stem(syn.images)
    soft = student_loss(model, flat, feats, syn.text, syn.corr.matrix())
    from mdw_kit.models.retrieval import functional_logits
    plain = symmetric_info_nce(functional_logits(model, flat, feats, syn.text, from_features=True))
    assert torch.allclose(soft, plain)


def test_tower_groups_put_text_head_in_group_one():
    model = tiny_model()
    g = tower_groups(model)
    n_text = sum(p.numel() for n, p in model.named_parameters() if n.startswith("text_head"))
    assert int(g.sum()) == n_text and len(g) == get_flat(model).numel()


def test_sample_batches_cover_each_permutation():
    b = sample_batches(10, 5, 4, torch.Generator().manual_seed(0))
    assert [len(x) for x in b] == [4] * 5
    assert len(set(torch.cat(b[:2]).tolist())) == 8  # the first two come from one permutation
    with pytest.raises(ValueError, match="batch_syn"):
        sample_batches(10, 2, 1)


def test_bad_inputs_are_clear_errors():
    model, syn = tiny_model(), tiny_set()
    start, target = expert_pair(model)
    with pytest.raises(ValueError, match="mode"):
        match_loss(model, syn, start, target, 2, 6, mode="tesla")
    with pytest.raises(ValueError, match="flat vector"):
        match_loss(model, syn, start[:-1], target, 2, 6)


def _live_saved_bytes(fn) -> int:
    """Bytes of tensors autograd still keeps for backward after ``fn()`` returns."""
    refs: list = []

    def pack(t):
        refs.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    storages = {}
    for r in refs:
        t = r()
        if t is not None:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    del out
    return sum(storages.values())


def test_constant_memory_keeps_only_parameter_vectors_per_step():
    model, syn = tiny_model(), tiny_set(M=24)
    start, target = expert_pair(model)
    P = start.numel()

    def live(mode, N):
        return _live_saved_bytes(lambda: match_loss(model, syn, start, target, N, 12, mode=mode))

    cm_growth = live("constant_memory", 8) - live("constant_memory", 2)
    un_growth = live("unroll", 8) - live("unroll", 2)
    assert cm_growth <= 6 * P * 4 * 1.05  # six more stored theta_k, nothing else
    assert un_growth > 3 * cm_growth


def test_time_plain_steps_and_calibrate_lr():
    model, syn = tiny_model(), tiny_set()
    start, target = expert_pair(model)
    assert time_plain_steps(model, syn, start, 3, 6) > 0
    before = syn.log_lr.detach().clone()
    lrs = calibrate_lr(model, syn, [(start, target)], 2, 6, grid=(1e-4, 1e-2, 1.0))
    assert len(lrs) == 2 and set(lrs) <= {1e-4, 1e-2, 1.0}
    assert torch.equal(syn.log_lr.detach(), before)  # calibration leaves the set as it was


def test_identity_transform_is_plain_matching_and_a_transform_reaches_the_pixels():
    model, start_target = tiny_model(), None
    start, target = expert_pair(model)
    batches = sample_batches(12, 2, 6, torch.Generator().manual_seed(0))
    grads = []
    for transform in (None, lambda x: x, lambda x: x.flip(-1)):
        syn = tiny_set()
        out = match_loss(model, syn, start, target, 2, 6, batches=batches, transform=transform)
        out.loss.backward()
        grads.append(syn.images.grad.clone())
    assert torch.equal(grads[0], grads[1])
    assert not torch.allclose(grads[0], grads[2])
