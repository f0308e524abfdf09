"""Tests of mdw_kit.train: symmetric InfoNCE, per-pair losses, contrastive training."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.evaluation.metrics import evaluate_arrays
from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
from mdw_kit.train import (TrainConfig, make_optimizer, per_pair_losses, symmetric_info_nce,
                           train_contrastive)

os.environ.setdefault("MDW_NO_PROGRESS", "1")
torch.set_num_threads(2)

CLASSES, SIZE, TEXT_DIM = 6, 16, 16


def tiny_model(seed: int = 0) -> RetrievalModel:
    """A two-layer conv tower (16 px -> 4x4 map, flattened) with a linear text head."""
    torch.manual_seed(seed)
    trainable = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                              nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
    tower = ImageTower(nn.Identity(), trainable, out_channels=8, pool="flatten", map_size=4)
    return RetrievalModel(tower, text_dim=TEXT_DIM, embed_dim=16, temperature=0.1)


def class_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separable pairs: a class-coloured patch at a class position; text = class vector + noise.

    Colours, positions and class vectors are fixed; only the per-item noise depends on ``seed``.
    Returns uint8 images ``[n,3,16,16]``, text ``[n,16]`` and labels ``[n]``.
    """
    fixed = torch.Generator().manual_seed(1234)
    colours = torch.rand(CLASSES, 3, generator=fixed)
    class_vec = torch.randn(CLASSES, TEXT_DIM, generator=fixed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    for i, c in enumerate(labels.tolist()):
        r, col = 2 + 6 * (c // 3), 1 + 5 * (c % 3)
        x[i, :, r:r + 5, col:col + 5] = colours[c].view(3, 1, 1)
    text = class_vec[labels] + 0.3 * torch.randn(n, TEXT_DIM, generator=g)
    return (x * 255).round().to(torch.uint8), text, labels


# ------------------------------------------------------------------ losses
def test_identity_matches_cross_entropy_both_ways():
    logits = torch.randn(7, 7, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.arange(7)
    want = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
    assert torch.allclose(symmetric_info_nce(logits), want, atol=1e-6)
    per = symmetric_info_nce(logits, reduction="none")
    want_per = 0.5 * (F.cross_entropy(logits, y, reduction="none") + F.cross_entropy(logits.T, y, reduction="none"))
    assert torch.allclose(per, want_per, atol=1e-6)
    assert torch.allclose(symmetric_info_nce(logits, reduction="sum"), want_per.sum(), atol=1e-5)


def test_soft_identity_targets_equal_hard_and_soft_matches_manual():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 5, generator=g)
    assert torch.allclose(symmetric_info_nce(logits, targets=torch.eye(5)), symmetric_info_nce(logits), atol=1e-6)
    # scaling an identity target changes nothing (rows / columns are normalised)
    assert torch.allclose(symmetric_info_nce(logits, targets=3 * torch.eye(5)), symmetric_info_nce(logits), atol=1e-6)
    t = torch.rand(5, 5, generator=g)
    lr, lc = logits.log_softmax(1), logits.log_softmax(0)
    manual = [0.5 * (-(t[i] / t[i].sum() * lr[i]).sum() - (t[:, i] / t[:, i].sum() * lc[:, i]).sum())
              for i in range(5)]
    assert torch.allclose(symmetric_info_nce(logits, targets=t, reduction="none"), torch.stack(manual), atol=1e-5)


def test_zero_weight_removes_a_pairs_influence():
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    w = torch.ones(6)
    w[3] = 0.0
    loss = symmetric_info_nce(logits, weights=w)
    per = symmetric_info_nce(logits.detach(), reduction="none")
    assert torch.allclose(loss, per[torch.arange(6) != 3].mean(), atol=1e-6)
    loss.backward()
    assert logits.grad[3, 3] == 0  # its positive score no longer matters
    assert logits.grad[0, 0] != 0
    bumped = logits.detach().clone()
    bumped[3, 3] += 5.0
    assert torch.allclose(symmetric_info_nce(bumped, weights=w), loss.detach(), atol=1e-6)
    assert torch.allclose(symmetric_info_nce(logits.detach(), weights=torch.ones(6)), per.mean(), atol=1e-6)
    assert float(symmetric_info_nce(logits.detach(), weights=torch.zeros(6))) == 0.0


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        symmetric_info_nce(torch.randn(3, 4))
    with pytest.raises(ValueError, match="weights"):
        symmetric_info_nce(torch.randn(3, 3), weights=torch.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        symmetric_info_nce(torch.randn(3, 3), targets=-torch.eye(3))
    with pytest.raises(ValueError, match="reduction"):
        symmetric_info_nce(torch.randn(3, 3), reduction="max")


# ---------------------------------------------------------- per-pair losses
def test_per_pair_losses_deterministic_and_flag_mismatches():
    x, t, _ = class_data(72, seed=0)
    model = tiny_model()
    train_contrastive(model, x, t, TrainConfig(epochs=6, batch_size=24, lr=3e-3, device="cpu"))
    noisy = t.clone()
    bad = torch.tensor([0, 7, 14, 21])  # classes 0, 1, 2, 3: rotate their captions (all mismatched)
    noisy[bad] = t[bad.roll(1)]
    model.train()
    a = per_pair_losses(model, x, noisy, batch_size=24)
    b = per_pair_losses(model, x, noisy, batch_size=24)
    assert model.training  # mode restored
    assert torch.equal(a, b) and a.shape == (72,)
    clean = torch.ones(72, dtype=torch.bool)
    clean[bad] = False
    assert float(a[bad].min()) > float(a[clean].median())
    assert float(a[bad].mean()) > 2 * float(a[clean].mean())
    # a different seed gives different batches, hence different in-batch losses
    assert not torch.equal(a, per_pair_losses(model, x, noisy, batch_size=24, seed=1))


# ----------------------------------------------------------------- training
def test_training_raises_val_rsum_and_reports_stats():
    x, t, _ = class_data(96, seed=0)
    vx, vt, _ = class_data(24, seed=1)
    val = (vx, vt, torch.arange(24))
    model = tiny_model()
    before = evaluate_arrays(model, vx, vt, torch.arange(24))["R-sum"]
    seen = []
    hist = train_contrastive(model, x, t, TrainConfig(epochs=6, batch_size=32, lr=3e-3, device="cpu"),
                             val=val, callback=lambda e, m, s: seen.append((e, s["loss"])))
    assert [h["epoch"] for h in hist] == list(range(1, 7)) == [e for e, _ in seen]
    assert set(hist[0]) >= {"epoch", "loss", "lr", "time", "val"} and hist[0]["lr"] == 3e-3
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["val"]["R-sum"] > before + 100


def test_uint8_float_and_resume_are_identical():
    x, t, _ = class_data(40, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, device="cpu", seed=5)
    m1, m2, m3 = tiny_model(), tiny_model(), tiny_model()
    train_contrastive(m1, x, t, cfg)
    train_contrastive(m2, x.float() / 255, t, cfg)
    assert torch.allclose(get_flat(m1), get_flat(m2), atol=1e-6)
    opt = make_optimizer(m3, cfg)
    first = train_contrastive(m3, x, t, TrainConfig(**{**cfg.to_dict(), "epochs": 1}), optimizer=opt)
    rest = train_contrastive(m3, x, t, cfg, start_epoch=1, optimizer=opt)
    assert [h["epoch"] for h in first + rest] == [1, 2]
    assert torch.allclose(get_flat(m1), get_flat(m3), atol=1e-6)


def test_identity_targets_and_weights_in_training():
    x, t, _ = class_data(30, seed=4)
    cfg = TrainConfig(epochs=2, batch_size=10, lr=1e-3, device="cpu", optimizer="sgd")
    plain, soft, weighted, frozen = tiny_model(), tiny_model(), tiny_model(), tiny_model()
    train_contrastive(plain, x, t, cfg)
    train_contrastive(soft, x, t, cfg, targets=torch.eye(30))
    assert torch.allclose(get_flat(plain), get_flat(soft), atol=1e-6)
    w = torch.ones(30)
    w[:5] = 0
    train_contrastive(weighted, x, t, cfg, weights=w)
    assert not torch.allclose(get_flat(plain), get_flat(weighted))
    start = get_flat(frozen)
    hist = train_contrastive(frozen, x, t, cfg, weights=torch.zeros(30))  # every batch skipped
    assert torch.equal(get_flat(frozen), start) and all(h["loss"] != h["loss"] for h in hist)


def test_train_rejects_bad_shapes_and_config():
    x, t, _ = class_data(8, seed=0)
    with pytest.raises(ValueError, match="text_emb"):
        train_contrastive(tiny_model(), x, t[:5], TrainConfig(epochs=1, device="cpu"))
    with pytest.raises(ValueError, match="weights"):
        train_contrastive(tiny_model(), x, t, TrainConfig(epochs=1, device="cpu"), weights=torch.ones(3))
    with pytest.raises(ValueError, match="targets"):
        train_contrastive(tiny_model(), x, t, TrainConfig(epochs=1, device="cpu"), targets=torch.eye(3))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epochs": 1, "lr_schedule": "cos"})
    cfg = TrainConfig(epochs=3, optimizer="sgd", weight_decay=1e-4)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
