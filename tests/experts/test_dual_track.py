"""Dual-track collaborative learning on tiny shapes data, and the noise report it produces."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdw_kit.data import inject_noise, load_source
from mdw_kit.experts.dual_track import (DualTrackConfig, global_pair_losses, run_noise_report,
                                        summarize_detection, train_dual_track)
from mdw_kit.experts.report import NoiseReport, report_from_scores
from mdw_kit.models import ModelConfig, get_flat
from mdw_kit.train import TrainConfig, symmetric_info_nce, train_contrastive
from mdw_kit.utils import seed_everything

TEXT_DIM = 64
MODEL = ModelConfig(tower="convnet2", text_dim=TEXT_DIM, image_size=32, embed_dim=64, tower_kw={"width": 16})


def view_text(ds, dim=TEXT_DIM):
    """Self-made caption embeddings: a fixed random projection of the pooled pixels of the image a
    caption was written for. A pair with an injected wrong caption gets another image's view, and a
    small ConvNet learns the matching within a couple of epochs (no text model needed)."""
    pooled = F.avg_pool2d(ds.images.float() / 255, 4).flatten(1)
    proj = torch.randn(pooled.shape[1], dim, generator=torch.Generator().manual_seed(0))
    per_image = (pooled - pooled.mean(0)) @ proj
    return per_image[ds.pair_image[ds.source_caption]]


@pytest.fixture(scope="module")
def noisy_ds():
    return inject_noise(load_source("shapes", num_images=200, image_size=32, seed=0), rate=0.4, seed=1)


@pytest.fixture(scope="module")
def noisy_shapes(noisy_ds):
    rows = torch.as_tensor(np.flatnonzero(noisy_ds.pair_split == "train"))
    return noisy_ds.pair_pixels(rows), view_text(noisy_ds)[rows], noisy_ds.clean[rows]


def model_fn(seed):
    return MODEL.build()


FAST = dict(batch_size=32, lr=2e-3, optimizer="adam", device="cpu", progress=False)  # the mechanism, fast


def test_dual_track_separates_noisy_from_clean(noisy_shapes):
    images, text, clean = noisy_shapes
    cfg = DualTrackConfig(epochs=4, warmup_epochs=2, **FAST)
    res = train_dual_track(model_fn, images, text, cfg, clean=clean)
    det = summarize_detection(res)
    assert det["final"]["consensus"]["auroc"] > 0.9
    assert det["final"]["A"]["auroc"] > 0.85 and det["final"]["B"]["auroc"] > 0.85
    assert det["warmup"]["consensus"]["auroc"] > 0.75
    n = len(clean)
    assert res.trajectories["A"].shape == (cfg.epochs + 1, get_flat(model_fn(0)).numel())
    assert not torch.equal(res.trajectories["A"], res.trajectories["B"])  # different seeds
    assert sorted(res.p_clean["A"]) == [2, 3, 4]  # scored from the end of warm-up on
    assert res.p_clean["B"][4].shape == (n,)
    rank = res.noise_rank["A"][4]
    assert rank.shape == (n,) and float(rank.min()) == 0.0 and float(rank.max()) == 1.0
    assert 0.0 <= det["final"]["consensus"]["auroc_p_clean"] <= 1.0
    rep = res.report()
    s = rep.summary()
    assert s["noise_known"] and s["auroc"] == pytest.approx(det["final"]["consensus"]["auroc"], abs=1e-6)
    assert 0.1 < s["estimated_noise_rate"] < 0.7


def test_naive_single_track_equals_plain_training(noisy_shapes):
    images, text, _ = noisy_shapes
    seed = 5
    cfg = DualTrackConfig(epochs=3, warmup_epochs=1, naive=True, num_tracks=1, seed_a=seed, **FAST)
    res = train_dual_track(model_fn, images, text, cfg)

    seed_everything(seed)
    model = model_fn(seed)
    plain = [get_flat(model).clone()]
    train_contrastive(model, images, text, TrainConfig(epochs=3, batch_size=32, lr=2e-3, seed=seed, device="cpu"),
                      callback=lambda e, m, s: plain.append(get_flat(m).clone()))
    assert torch.equal(res.trajectories["A"], torch.stack(plain))
    assert list(res.trajectories) == ["A"]
    assert sorted(res.p_clean["A"]) == [1, 3]  # naive runs are scored at warm-up end and at the end


def test_select_and_weight_modes_train_differently(noisy_shapes):
    images, text, clean = noisy_shapes
    out = {}
    for mode in ("select", "weight"):
        cfg = DualTrackConfig(epochs=2, warmup_epochs=1, mode=mode, **FAST)
        out[mode] = train_dual_track(model_fn, images, text, cfg, clean=clean)
    # identical warm-up, different cross-supervised epochs
    assert torch.equal(out["select"].trajectories["A"][:2], out["weight"].trajectories["A"][:2])
    assert not torch.equal(out["select"].trajectories["A"][2], out["weight"].trajectories["A"][2])


def test_select_mode_that_keeps_nothing_falls_back_with_a_warning(noisy_shapes):
    images, text, _ = noisy_shapes
    cfg = DualTrackConfig(epochs=2, warmup_epochs=1, mode="select", threshold=0.999999, **FAST)
    with pytest.warns(UserWarning, match="select mode"):
        res = train_dual_track(model_fn, images[:64], text[:64], cfg)
    assert not torch.equal(res.trajectories["A"][1], res.trajectories["A"][2])  # it kept training


def test_keep_fraction_keeps_the_peers_lowest_ranked_share():
    from mdw_kit.experts.dual_track import _peer_weights
    rank = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    p = torch.tensor([0.1, 0.9, 0.6, 0.9, 0.2, 0.9, 0.1, 0.8, 0.3, 1.0])
    w = _peer_weights(p, DualTrackConfig(keep_fraction=0.3), rank)
    assert w.tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    auto = _peer_weights(p, DualTrackConfig(keep_fraction="auto"), rank)  # mean p = 0.57 -> 6 pairs
    assert int(auto.sum()) == 6 and bool((auto[rank.argsort()[:6]] == 1).all())
    floor = _peer_weights(p, DualTrackConfig(keep_fraction=0.3, min_weight=0.1), rank)
    assert sorted(set(floor.tolist())) == [pytest.approx(0.1), 1.0] and int((floor == 1).sum()) == 3
    # without a keep fraction, select keeps p > threshold, and the floor lifts the others
    thr = _peer_weights(p, DualTrackConfig(min_weight=0.2), rank)
    assert thr.tolist() == [pytest.approx(v) for v in (0.2, 1, 1, 1, 0.2, 1, 0.2, 1, 0.2, 1)]


def test_keep_fraction_trains_differently_from_the_threshold(noisy_shapes):
    images, text, clean = noisy_shapes
    cfg = DualTrackConfig(epochs=2, warmup_epochs=1, **FAST)
    a = train_dual_track(model_fn, images, text, cfg, clean=clean)
    b = train_dual_track(model_fn, images, text, replace(cfg, keep_fraction=0.5), clean=clean)
    assert torch.equal(a.trajectories["A"][:2], b.trajectories["A"][:2])
    assert not torch.equal(a.trajectories["A"][2], b.trajectories["A"][2])


def test_callbacks_and_determinism(noisy_shapes):
    images, text, clean = noisy_shapes
    seen, infos = [], []
    cfg = DualTrackConfig(epochs=2, warmup_epochs=1, **FAST)
    a = train_dual_track(model_fn, images, text, cfg, clean=clean,
                         callback=lambda t, e, m, s: seen.append((t, e)),
                         epoch_callback=lambda e, info: infos.append(info))
    b = train_dual_track(model_fn, images, text, cfg)
    assert seen == [("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    assert [i["epoch"] for i in infos] == [1, 2] and "detection" in infos[-1]
    assert torch.equal(a.trajectories["B"], b.trajectories["B"])
    assert torch.equal(a.p_clean["A"][2], b.p_clean["A"][2])


@pytest.mark.parametrize("bad, match", [
    (dict(mode="vote"), "mode"), (dict(num_tracks=1), "num_tracks"), (dict(warmup_epochs=9, epochs=3), "warmup"),
    (dict(seed_a=3, seed_b=3), "different seeds"), (dict(loss_ema=1.0), "loss_ema"),
    (dict(loss_average="median"), "loss_average"), (dict(scoring="random"), "scoring"),
    (dict(keep_fraction=1.5), "keep_fraction"), (dict(keep_fraction="half"), "keep_fraction"),
    (dict(min_weight=1.0), "min_weight"), (dict(keep_fraction=0.5, mode="weight"), "keep_fraction")])
def test_config_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        DualTrackConfig(**bad)


def test_config_round_trip_and_unknown_key():
    cfg = DualTrackConfig(epochs=7, mode="weight")
    assert DualTrackConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="lr_decay"):
        DualTrackConfig.from_dict({"lr_decay": 0.1})


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="train_text"):
        train_dual_track(model_fn, torch.rand(8, 3, 32, 32), torch.randn(7, TEXT_DIM), DualTrackConfig(**FAST))
    with pytest.raises(ValueError, match="clean"):
        train_dual_track(model_fn, torch.rand(8, 3, 32, 32), torch.randn(8, TEXT_DIM), DualTrackConfig(**FAST),
                         clean=torch.ones(5, dtype=torch.bool))


def test_global_pair_losses_equal_one_full_batch_and_respect_groups():
    model = model_fn(0).eval()
    x, t = torch.rand(12, 3, 32, 32), torch.randn(12, TEXT_DIM)
    full = symmetric_info_nce(model(x, t), reduction="none")
    assert torch.allclose(global_pair_losses(model, x, t, batch_size=5), full, atol=1e-5)
    x[1] = x[0]  # pairs 0 and 1 share an image (two captions of one picture)
    groups = torch.tensor([0, 0] + list(range(1, 11)))
    logits = model(x, t)
    logits[0, 1] = logits[1, 0] = -1e9  # neither is the other's negative
    want = symmetric_info_nce(logits, reduction="none")
    assert torch.allclose(global_pair_losses(model, x, t, groups=groups, batch_size=5), want, atol=1e-5)


def test_run_noise_report_writes_the_report(tmp_path, noisy_ds):
    cfg = DualTrackConfig(epochs=2, warmup_epochs=1, **FAST)
    rep = run_noise_report(tmp_path, noisy_ds, view_text(noisy_ds), MODEL, cfg)
    train = noisy_ds.split("train")
    assert len(rep) == len(train) and rep.captions == train.captions
    back = NoiseReport.load(tmp_path)
    assert back.summary() == rep.summary() and back.summary()["true_noise_rate"] == pytest.approx(0.4, abs=0.02)
    doc = json.loads((tmp_path / "dual_track.json").read_text())
    assert [d["epoch"] for d in doc["detection_per_epoch"]] == [1, 2]
    assert doc["history"]["A"][0]["val"] is not None  # validated on the val split
    assert (tmp_path / "noise_report.csv").exists() and (tmp_path / "p_clean_history.safetensors").exists()


# ------------------------------------------------------------------ report
def test_noise_report_summary_table_and_round_trip(tmp_path):
    a = np.array([0.95, 0.9, 0.2, 0.1, 0.6, 0.3])
    b = np.array([0.85, 0.7, 0.4, 0.3, 0.2, 0.9])
    truth = np.array([True, True, False, False, True, False])
    rep = report_from_scores(a, b, threshold=0.5, true_clean=truth, captions=list("uvwxyz"))
    s = rep.summary()
    # consensus: 0.9, 0.8, 0.3, 0.2, 0.4, 0.6 -> flagged rows 2, 3, 4
    assert s["kept"] == 3 and s["estimated_noise_rate"] == pytest.approx(0.5)
    assert s["estimated_residual_noise"] == pytest.approx(np.mean([0.1, 0.2, 0.4]), abs=1e-5)
    assert s["precision"] == pytest.approx(2 / 3, abs=1e-5) and s["recall"] == pytest.approx(2 / 3, abs=1e-5)
    assert s["true_residual_noise"] == pytest.approx(1 / 3, abs=1e-5) and s["true_noise_rate"] == pytest.approx(0.5)
    assert s["auroc"] == pytest.approx(8 / 9, abs=1e-5)
    df = rep.to_dataframe()
    assert list(df.columns[:6]) == ["pair", "p_clean_A", "p_clean_B", "p_clean", "noise_score", "is_noisy"]
    assert df["is_noisy"].tolist() == [False, False, True, True, True, False]
    rep.save(tmp_path)
    assert (tmp_path / "noise_report.json").exists() and (tmp_path / "noise_report.csv").exists()
    back = NoiseReport.load(tmp_path)
    assert back.summary() == s and back.captions == list("uvwxyz")
    assert np.allclose(back.p_clean, rep.p_clean)



def test_loss_ranks_break_the_ties_of_a_saturated_posterior(tmp_path):
    # Three pairs get p_clean exactly 0 (a saturated mixture posterior); only their loss ranks
    # tell the truly noisy ones (ranks 0.8, 1.0) from the clean one (rank 0.6).
    p = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    rank = np.array([0.0, 0.2, 0.6, 0.8, 1.0, 0.4])
    truth = np.array([True, True, True, False, False, True])
    plain = report_from_scores(p, true_clean=truth).summary()
    ranked = report_from_scores(p, true_clean=truth, noise_rank_a=rank)
    s = ranked.summary()
    assert plain["auroc"] == pytest.approx(7 / 8) and s["auroc"] == pytest.approx(1.0)
    assert s["auroc_p_clean"] == pytest.approx(7 / 8) and s["auroc_A"] == pytest.approx(1.0)
    assert s["precision"] == plain["precision"]  # the flag still comes from p_clean
    assert np.allclose(ranked.noise_score, rank)
    assert ranked.to_dataframe()["noise_rank_B"].tolist() == rank.tolist()
    ranked.save(tmp_path)
    back = NoiseReport.load(tmp_path)
    assert np.allclose(back.noise_rank_a, rank) and back.summary() == s
    with pytest.raises(ValueError, match="noise_rank_a"):
        NoiseReport(p, p, noise_rank_a=rank)
    with pytest.raises(ValueError, match="noise_rank_a"):
        report_from_scores(p, noise_rank_a=rank[:4])

def test_noise_report_without_ground_truth_and_bad_lengths(tmp_path):
    rep = report_from_scores([0.9, 0.1, 0.8])
    s = rep.summary()
    assert s["noise_known"] is False and "auroc" not in s and s["kept"] == 2
    with pytest.raises(ValueError, match="p_clean_b"):
        report_from_scores([0.9, 0.1], [0.5])
    from mdw_kit.runs import ArtifactError
    with pytest.raises(ArtifactError, match="noise_report.json"):
        NoiseReport.load(tmp_path)


def test_chance_gate_keeps_every_pair_when_no_pair_sits_at_chance(noisy_shapes, caplog):
    """The no-noise check: when the high-loss component stays below the gate x chance loss, every
    pair is clean (weights 1, report estimates no noise) and a warning says why; off by default."""
    images, text, clean = noisy_shapes
    assert DualTrackConfig().chance_gate is None
    cfg = DualTrackConfig(epochs=3, warmup_epochs=1, chance_gate=10.0, **FAST)  # 10 x log N: never reached
    with caplog.at_level("WARNING", logger="mdw_kit.experts.dual_track"):
        res = train_dual_track(model_fn, images, text, cfg, clean=clean)
    assert all(bool((p == 1).all()) for t in "AB" for p in res.p_clean[t].values())
    assert all(res.gmm[t][e]["noise_free"] for t in "AB" for e in res.gmm[t])
    assert res.report().summary()["estimated_noise_rate"] == 0.0
    assert "no mismatched pairs found" in caplog.text
    # the loss ranks are left alone: detection by rank still works
    assert summarize_detection(res)["final"]["consensus"]["auroc"] > 0.8
    # a gate below every fitted mean never fires and changes nothing
    low = train_dual_track(model_fn, images, text, DualTrackConfig(epochs=3, warmup_epochs=1, chance_gate=1e-6,
                                                                    **FAST), clean=clean)
    off = train_dual_track(model_fn, images, text, DualTrackConfig(epochs=3, warmup_epochs=1, **FAST), clean=clean)
    assert torch.equal(low.trajectories["A"], off.trajectories["A"])
    assert not any(low.gmm["A"][e]["noise_free"] for e in low.gmm["A"])


@pytest.mark.parametrize("gate", [0.0, -1.0])
def test_chance_gate_must_be_positive(gate):
    with pytest.raises(ValueError, match="chance_gate"):
        DualTrackConfig(chance_gate=gate)


def test_default_preset_turns_the_chance_gate_on():
    from mdw_kit import stages
    assert stages.dual_track_config(preset="default").chance_gate == 0.85
    assert stages.dual_track_config(preset="default", naive=True).naive
