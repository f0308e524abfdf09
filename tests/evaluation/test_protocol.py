"""evaluate_distilled: epoch chosen on val only, learned rates and soft targets used, clear errors."""
from __future__ import annotations

import pytest
import torch

from mdw_kit.data import load_source
from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled, group_optimizer
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.models import ModelConfig
from mdw_kit.data.bundle import HashTextEncoder

CFG = EvalConfig(epochs=4, eval_every=1, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup():
    ds = load_source("shapes", num_images=48, seed=0, val_frac=0.25, test_frac=0.25)
    enc = HashTextEncoder(32)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    emb = {s: enc.encode(d.captions) for s, d in splits.items()}
    mc = ModelConfig(tower="convnet3", text_dim=32, image_size=32, embed_dim=16, tower_kw={"width": 4})
    train = splits["train"]
    pairs = (train.images[train.pair_image], emb["train"])
    return mc, pairs, (splits["val"], emb["val"]), (splits["test"], emb["test"])


def _synthetic(pairs, M=8, corr="full"):
    images, text = pairs
    s = DistilledSet.from_pairs(images, text, list(range(M)), corr=corr, lr_init=(0.05, 0.02),
                                meta={"config": {"batch_syn": 4}})
    return s


def test_epoch_is_chosen_on_val_never_test(setup):
    mc, pairs, val, test = setup
    a = evaluate_distilled(pairs, mc, val, test, seeds=(0,), cfg=CFG, keep_history=True)
    b = evaluate_distilled(pairs, mc, val, val, seeds=(0,), cfg=CFG, keep_history=True)
    hist = a["per_seed"][0]["history"]
    val_rsum = [h["val"]["R-sum"] for h in hist]
    best = hist[val_rsum.index(max(val_rsum))]["epoch"]
    assert a["best_epochs"] == [best] == b["best_epochs"]
    assert a["per_seed"][0]["val"] == b["per_seed"][0]["val"] == hist[best - 1]["val"]
    assert b["mean"] == b["per_seed"][0]["val"]  # testing on val reproduces the chosen val metrics


def test_distilled_set_trains_with_learned_rates_and_soft_targets(setup):
    mc, pairs, val, test = setup
    syn = _synthetic(pairs)
    r = evaluate_distilled(syn, mc, val, test, seeds=(0, 1), cfg=CFG)
    assert r["trainer"] == "sgd_learned_lr" and r["soft_targets"]
    assert r["rates"] == pytest.approx({"image": 0.05, "text": 0.02})
    assert r["batch_size"] == 4 and r["num_pairs"] == 8 and len(r["per_seed"]) == 2
    assert set(r["mean"]) == set(r["sd"]) and "R-sum" in r["mean"] and r["sd"]["R-sum"] >= 0
    plain = evaluate_distilled(syn, mc, val, test, seeds=(0,), cfg=CFG, use_soft_targets=False,
                               use_learned_lr=False)
    assert plain["trainer"] == "adam" and not plain["soft_targets"] and plain["rates"] is None


def test_soft_targets_change_training(setup):
    mc, pairs, val, test = setup
    syn = _synthetic(pairs)
    with torch.no_grad():  # a correspondence that pairs image i with text i+1
        syn.corr.logits.fill_(-8.0)
        syn.corr.logits[torch.arange(8), (torch.arange(8) + 1) % 8] = 8.0
    soft = evaluate_distilled(syn, mc, val, test, seeds=(0,), cfg=CFG, keep_history=True)
    hard = evaluate_distilled(syn, mc, val, test, seeds=(0,), cfg=CFG, keep_history=True, use_soft_targets=False)
    assert soft["per_seed"][0]["history"][0]["loss"] != pytest.approx(hard["per_seed"][0]["history"][0]["loss"])


def test_group_optimizer_puts_the_text_head_at_its_own_rate():
    m = ModelConfig(tower="convnet3", text_dim=8, image_size=32, tower_kw={"width": 4}).build()
    opt = group_optimizer(m, {"image": 0.3, "text": 0.01}, momentum=0.5)
    text_ids = {id(p) for p in m.text_head.parameters()}
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.01]
    assert {id(p) for p in opt.param_groups[1]["params"]} == text_ids
    assert not text_ids & {id(p) for p in opt.param_groups[0]["params"]}


def test_errors_are_clear(setup):
    mc, pairs, val, test = setup
    with pytest.raises(TypeError, match="DistilledSet or real pairs"):
        evaluate_distilled(pairs[0], mc, val, test, cfg=CFG)
    with pytest.raises(ValueError, match="one row per pair"):
        evaluate_distilled((pairs[0][:5], pairs[1][:4]), mc, val, test, cfg=CFG)
    with pytest.raises(ValueError, match="at least one seed"):
        evaluate_distilled(pairs, mc, val, test, seeds=(), cfg=CFG)
    with pytest.raises(ValueError, match="EvalConfig"):
        EvalConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown EvalConfig keys"):
        EvalConfig.from_dict({"epoch": 3})
