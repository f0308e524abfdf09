"""Tests of mdw_kit.evaluation (metrics and the protocol): multi-caption recall, embedding, select-on-val across seeds."""
from __future__ import annotations

import os
import statistics

import numpy as np
import pytest
import torch
from torch import nn

import mdw_kit.evaluation.metrics as ev
from mdw_kit.data.base import DataError, PairDataset
from mdw_kit.evaluation.metrics import embed_split, evaluate_model, format_table, retrieval_metrics, summarize
from mdw_kit.evaluation.protocol import fit_and_evaluate
from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat, set_flat
from mdw_kit.train import TrainConfig

os.environ.setdefault("MDW_NO_PROGRESS", "1")
torch.set_num_threads(2)

CLASSES, SIZE, TEXT_DIM = 6, 16, 16


def tiny_model(seed: int = 0, norm: bool = False) -> RetrievalModel:
    """Two conv layers on 16 px images (optionally with BatchNorm), linear text head."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1)] + ([nn.BatchNorm2d(8)] if norm else [])
    trainable = nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
    tower = ImageTower(nn.Identity(), trainable, out_channels=8, pool="flatten", map_size=4)
    return RetrievalModel(tower, text_dim=TEXT_DIM, embed_dim=16, temperature=0.1)


def class_split(n_images: int, seed: int, split: str, caps: int = 2,
                caption_shift: int = 0) -> tuple[PairDataset, torch.Tensor]:
    """A split of class-patch images with ``caps`` captions each (class vector + noise).

    ``caption_shift`` describes each image with the class vector of class ``c + shift``,
    i.e. a split whose captions systematically disagree with training.
    """
    fixed = torch.Generator().manual_seed(1234)
    colours, class_vec = torch.rand(CLASSES, 3, generator=fixed), torch.randn(CLASSES, TEXT_DIM, generator=fixed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_images) % CLASSES
    x = torch.rand(n_images, 3, SIZE, SIZE, generator=g) * 0.3
    for i, c in enumerate(labels.tolist()):
        r, col = 2 + 6 * (c // 3), 1 + 5 * (c % 3)
        x[i, :, r:r + 5, col:col + 5] = colours[c].view(3, 1, 1)
    pair_image = torch.arange(n_images).repeat_interleave(caps)
    cap_cls = (labels[pair_image] + caption_shift) % CLASSES
    text = class_vec[cap_cls] + 0.3 * torch.randn(len(pair_image), TEXT_DIM, generator=g)
    ds = PairDataset(images=(x * 255).round().to(torch.uint8), image_ids=[f"{split}{i}" for i in range(n_images)],
                     image_split=np.array([split] * n_images), captions=[f"class {int(c)}" for c in cap_cls],
                     pair_image=pair_image)
    return ds, text


def brute_force(sim: torch.Tensor, pair_image: torch.Tensor, k: int) -> tuple[float, float]:
    """Reference TR@k / IR@k by explicit sorting (inputs without ties)."""
    tr = []
    for i in range(sim.shape[0]):
        mine = set(torch.nonzero(pair_image == i).flatten().tolist())
        if mine:
            tr.append(bool(mine & set(sim[i].argsort(descending=True)[:k].tolist())))
    ir = [int(pair_image[c]) in sim[:, c].argsort(descending=True)[:k].tolist() for c in range(sim.shape[1])]
    return 100 * sum(tr) / len(tr), 100 * sum(ir) / len(ir)


# ------------------------------------------------------------------ metrics
def test_hand_computed_multi_caption_case():
    sim = torch.tensor([[0.9, 0.2, 0.8, 0.1, 0.3],    # image 0: captions 0, 1
                        [0.5, 0.6, 0.4, 0.7, 0.1],    # image 1: caption 2 ranks 4th
                        [0.3, 0.1, 0.2, 0.2, 0.6]])   # image 2: caption 3 ranks low, caption 4 first
    m = retrieval_metrics(sim, torch.tensor([0, 0, 1, 2, 2]), ks=(1, 3, 5))
    want = {"TR@1": 200 / 3, "TR@3": 200 / 3, "TR@5": 100.0, "IR@1": 40.0, "IR@3": 100.0, "IR@5": 100.0}
    for k, v in want.items():
        assert m[k] == pytest.approx(v), k
    assert m["R-sum"] == pytest.approx(sum(want.values()))
    assert list(m) == ["TR@1", "TR@3", "TR@5", "IR@1", "IR@3", "IR@5", "R-sum"]


def test_perfect_and_reversed_rankings():
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    perfect = retrieval_metrics(torch.eye(12)[:, perm], perm)
    assert perfect["R-sum"] == 600.0
    # correct item scored lowest: rank 7 of 8, so only the @10 recalls hit
    rev = retrieval_metrics(-torch.eye(8), torch.arange(8))
    assert rev["TR@1"] == rev["TR@5"] == rev["IR@1"] == rev["IR@5"] == 0.0
    assert rev["TR@10"] == rev["IR@10"] == 100.0 and rev["R-sum"] == 200.0
    rev20 = retrieval_metrics(-torch.eye(20), torch.arange(20))
    assert rev20["R-sum"] == 0.0


def test_matches_brute_force_on_random_scores():
    g = torch.Generator().manual_seed(3)
    pair_image = torch.cat([torch.arange(15), torch.randint(0, 15, (25,), generator=g)])
    sim = torch.randn(15, 40, generator=g)
    m = retrieval_metrics(sim, pair_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        tr, ir = brute_force(sim, pair_image, k)
        assert m[f"TR@{k}"] == pytest.approx(tr) and m[f"IR@{k}"] == pytest.approx(ir)


def test_ties_are_pessimistic_and_captionless_images_skipped():
    const = retrieval_metrics(torch.ones(4, 4), torch.arange(4), ks=(1, 3, 4))
    assert const["TR@1"] == const["TR@3"] == const["IR@1"] == const["IR@3"] == 0.0
    assert const["TR@4"] == const["IR@4"] == 100.0
    # two correct captions tied at the top do not push each other down
    m = retrieval_metrics(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 0, 1]), ks=(1,))
    assert m["TR@1"] == 100.0 and m["IR@1"] == 100.0
    # image 2 has no caption: TR averages over images 0, 1 only
    m = retrieval_metrics(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), torch.tensor([0, 1]), ks=(1,))
    assert m["TR@1"] == 100.0 and m["IR@1"] == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.arange(2))
    with pytest.raises(ValueError, match="one entry per caption"):
        retrieval_metrics(torch.eye(3), torch.arange(2))
    with pytest.raises(ValueError, match="pair_image values"):
        retrieval_metrics(torch.eye(3), torch.tensor([0, 1, 3]))


# ------------------------------------------------------------- embedding
def test_evaluate_model_uses_eval_mode_and_checks_text():
    ds, text = class_split(9, seed=0, split="test")
    model = tiny_model(norm=True)  # BatchNorm: train-mode output would depend on the batch
    model.train()
    img_small, txt_small = embed_split(model, ds, text, batch_size=2)
    img_big, txt_big = embed_split(model, ds, text, batch_size=256)
    assert model.training
    assert torch.allclose(img_small, img_big, atol=1e-5) and torch.allclose(txt_small, txt_big, atol=1e-6)
    assert img_big.shape == (9, 16) and txt_big.shape == (18, 16)
    assert torch.allclose(img_big.norm(dim=1), torch.ones(9), atol=1e-5)
    model.eval()
    with torch.no_grad():
        sim = model.encode_image(ds.image_pixels()) @ model.encode_text(text).T
    assert evaluate_model(model, ds, text) == pytest.approx(retrieval_metrics(sim, ds.pair_image))
    with pytest.raises(DataError, match="text_emb"):
        evaluate_model(model, ds, text[:5])


def test_ensemble_is_the_mean_similarity_of_its_models():
    ds, text = class_split(9, seed=0, split="test")
    a, b = tiny_model(0), tiny_model(1)
    assert ev.evaluate_ensemble([a], (ds, text)) == pytest.approx(evaluate_model(a, ds, text))
    assert ev.evaluate_ensemble([a, a], (ds, text)) == pytest.approx(evaluate_model(a, ds, text))
    ia, ta = embed_split(a, ds, text)
    ib, tb = embed_split(b, ds, text)
    expect = retrieval_metrics((ia @ ta.T + ib @ tb.T) / 2, ds.pair_image)
    assert ev.evaluate_ensemble([a, b], (ds, text)) == pytest.approx(expect)
    arrays = (ds.image_pixels(), text, ds.pair_image)
    assert ev.evaluate_ensemble([a, b], arrays) == pytest.approx(expect)
    with pytest.raises(ValueError, match="at least one model"):
        ev.evaluate_ensemble([], (ds, text))
    with pytest.raises(DataError, match="text_emb"):
        ev.evaluate_ensemble([a], (ds, text[:5]))


# ------------------------------------------------------- select-and-test
def test_fit_and_evaluate_selects_on_val_and_tests_once(monkeypatch):
    train_ds, train_text = class_split(60, seed=0, split="train", caps=1)
    val = class_split(12, seed=1, split="val", caption_shift=1)  # val disagrees with training
    test = class_split(12, seed=2, split="test")
    calls = {"test": 0, "val": 0}
    real = ev.evaluate_model

    def counting(model, ds, text_emb, batch_size=256):
        calls["test" if ds is test[0] else "val"] += 1
        return real(model, ds, text_emb, batch_size)

    monkeypatch.setattr(ev, "evaluate_model", counting)
    states: dict[tuple[int, int], torch.Tensor] = {}

    def keep(epoch, model, stats):
        states[(stats["seed"], epoch)] = get_flat(model).clone()

    cfg = TrainConfig(epochs=5, batch_size=20, lr=3e-3, device="cpu")
    res = fit_and_evaluate(tiny_model, train_ds.pair_pixels(), train_text, cfg, val, test,
                           seeds=(0, 1), callback=keep)
    assert calls == {"test": 2, "val": 10}
    for r in res["per_seed"]:
        rsums = [h["val"]["R-sum"] for h in r["history"]]
        assert r["best_epoch"] == 1 + int(np.argmax(rsums))  # earliest best epoch
        assert r["best_epoch"] < cfg.epochs  # the construction makes later epochs worse on val
        assert r["val"] == r["history"][r["best_epoch"] - 1]["val"]
        model = tiny_model(r["seed"])
        set_flat(model, states[(r["seed"], r["best_epoch"])])
        assert real(model, *test) == pytest.approx(r["test"])
        assert r["train_time_s"] > 0
    assert res["best_epochs"] == [r["best_epoch"] for r in res["per_seed"]]
    rs = [r["test"]["R-sum"] for r in res["per_seed"]]
    assert res["mean"]["R-sum"] == pytest.approx(statistics.mean(rs))
    assert res["sd"]["R-sum"] == pytest.approx(statistics.stdev(rs))


# --------------------------------------------------------------- summaries
def test_summarize_sample_sd_and_single_seed():
    mean, sd = summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}, {"a": 8.0, "b": 2.0}])
    assert mean["a"] == pytest.approx(4.0) and sd["a"] == pytest.approx(statistics.stdev([1, 3, 8]))
    assert sd["b"] == 0.0
    mean, sd = summarize([{"R-sum": 123.0}])
    assert mean == {"R-sum": 123.0} and sd == {"R-sum": 0.0}
    with pytest.raises(ValueError):
        summarize([])


def test_format_table_is_aligned():
    rows = [{"method": "full noisy data", "TR@1": 12.345, "R-sum": (350.0, 4.25)},
            {"method": "random-100", "TR@1": 3.0, "R-sum": 117.0}]
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("method")
    assert len({len(line) for line in lines}) == 1  # last column right-aligned: same width everywhere
    assert "350.0 ± 4.2" in text or "350.0 ± 4.3" in text
    assert "12.3" in lines[2] and lines[3].startswith("random-100")
    header_pos = lines[0].index("TR@1") + len("TR@1")
    assert lines[2].index("12.3") + len("12.3") == header_pos
