"""The distillation loop, the distilled-set artifact, stage-2 selection, resume and NaN recovery."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.distill import distiller
from mdw_kit.data import load_source
from mdw_kit.distill.distiller import DistillConfig, Distiller, TrajectoryList
from mdw_kit.distill.init import pair_embeddings, select_initial_pairs
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.models import build_model
from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
from mdw_kit.runs import ArtifactError
from mdw_kit.train import TrainConfig, train_contrastive


# ------------------------------------------------------------------ helpers
def tiny_model() -> RetrievalModel:
    torch.manual_seed(0)
    tower = ImageTower(nn.Identity(), nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.AvgPool2d(2)),
                       6, pool="flatten", map_size=4)
    return RetrievalModel(tower, text_dim=12, embed_dim=10)


def random_walks(model: nn.Module, n: int = 2, epochs: int = 4, scale: float = 0.02) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = get_flat(model)
    return [torch.stack([s] + [s + scale * torch.randn(s.shape, generator=g) * (e + 1) for e in range(epochs)])
            for _ in range(n)]


def tiny_data(n: int = 30):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randn(n, 12, generator=g)


def tiny_config(**kw) -> DistillConfig:
    base = dict(num_pairs=10, iterations=6, syn_steps=2, segment_epochs=1, max_start_epoch=3, batch_syn=5,
                lr_init=0.05, device="cpu", progress=False, save_maps_every=0, ceo_beta=0.5, ceo_every=3,
                checkpoint_every=2, seed=3)
    return DistillConfig(**{**base, **kw})


def tiny_distiller(run_dir=None, callback=None, val=None, **kw) -> Distiller:
    model = tiny_model()
    return Distiller(tiny_config(**kw), random_walks(model), model, *tiny_data(), run_dir=run_dir,
                     callback=callback, val=val)


def bow_embed(captions: list[str], dim: int = 64) -> torch.Tensor:
    """Deterministic bag-of-words caption vectors: offline stand-in for a text encoder."""
    g, vocab, rows = torch.Generator().manual_seed(0), {}, []
    for c in captions:
        v = torch.zeros(dim)
        for w in c.split():
            if w not in vocab:
                vocab[w] = torch.randn(dim, generator=g)
            v += vocab[w]
        rows.append(v)
    return F.normalize(torch.stack(rows), dim=1)


def same_state(a: DistilledSet, b: DistilledSet) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------ artifact
def test_distilled_set_save_load_round_trip(tmp_path):
    syn = DistilledSet.from_pairs(torch.rand(9, 3, 8, 8), torch.randn(9, 12), [0, 3, 5, 8], corr="lowrank",
                                  rank=2, lr_init=(0.02, 0.03), meta={"source": "test"})
    with torch.no_grad():
        syn.images.add_(0.1)
        syn.corr.right.normal_()
    syn.record_maps(0, torch.rand(4, 8, 8))
    syn.record_maps(5, torch.rand(4, 8, 8))
    syn.save(tmp_path / "a")
    back = DistilledSet.load(tmp_path / "a")
    assert same_state(syn, back)
    assert back.meta == {"source": "test"} and back.corr.kind == "lowrank" and back.corr.rank == 2
    assert [it for it, _ in back.map_history] == [0, 5]
    assert torch.allclose(back.map_history[1][1], syn.map_history[1][1], atol=1e-3)  # stored as float16
    assert torch.equal(back.maps, syn.maps)
    assert back.learning_rates() == pytest.approx({"image": 0.02, "text": 0.03})
    assert torch.equal(back.targets(), syn.targets())
    assert not torch.equal(back.images, back.init_images)


def test_load_rejects_mismatched_or_missing_files(tmp_path):
    syn = DistilledSet.from_pairs(torch.rand(5, 3, 8, 8), torch.randn(5, 12), [0, 1, 2], corr="full")
    syn.save(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "distilled.json").read_text())
    (tmp_path / "a" / "distilled.json").write_text(json.dumps(dict(cfg, num_pairs=4)))
    with pytest.raises(ArtifactError, match="images"):
        DistilledSet.load(tmp_path / "a")
    cfg["correspondence"] = dict(cfg["correspondence"], kind="lowrank", rank=1)
    (tmp_path / "a" / "distilled.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="correspondence"):
        DistilledSet.load(tmp_path / "a")
    (tmp_path / "a" / "distilled.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ArtifactError):
        DistilledSet.load(tmp_path / "a")
    with pytest.raises(ArtifactError, match="missing"):
        DistilledSet.load(tmp_path / "nowhere")


def test_nearest_captions_decode_synthetic_texts():
    real = F.normalize(torch.randn(6, 12), dim=1)
    syn = DistilledSet.from_pairs(torch.rand(6, 3, 8, 8), real, [4, 1])
    out = syn.nearest_captions(real, [f"c{i}" for i in range(6)], k=2)
    assert [o[0][0] for o in out] == ["c4", "c1"] and out[0][0][1] == pytest.approx(1.0)
    assert len(out[0]) == 2 and out[0][0][1] >= out[0][1][1]


# ------------------------------------------------------------------ stage 2
def clustered(n_clusters=5, per=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, 8, generator=g) * 10
    return torch.cat([c + 0.1 * torch.randn(per, 8, generator=g) for c in centres]), per


def test_selection_keeps_clean_pairs_and_spreads_out():
    emb, per = clustered()
    p = torch.ones(len(emb))
    p[::3] = 0.1  # a third looks noisy
    for method in ("kcenter", "balanced"):
        idx = select_initial_pairs(p, emb, 5, method=method, seed=0)
        assert bool((p[idx] >= 0.5).all())
        assert sorted(set((idx // per).tolist())) == [0, 1, 2, 3, 4], method  # one per cluster
    rnd = select_initial_pairs(p, emb, 5, method="random", seed=0)
    assert bool((p[rnd] >= 0.5).all()) and len(set(rnd.tolist())) == 5
    assert torch.equal(select_initial_pairs(p, emb, 5, seed=4), select_initial_pairs(p, emb, 5, seed=4))


def test_selection_falls_back_to_the_cleanest_pairs():
    emb, _ = clustered()
    p = torch.linspace(0, 0.4, len(emb))  # nobody reaches the threshold
    with pytest.warns(UserWarning, match="highest clean probability"):
        idx = select_initial_pairs(p, emb, 7, method="kcenter")
    assert sorted(idx.tolist()) == list(range(len(emb) - 7, len(emb)))
    with pytest.raises(ValueError, match="init method"):
        select_initial_pairs(p, emb, 3, method="herding")


def test_pair_embeddings_concatenate_text_and_thumbnail():
    e = pair_embeddings(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.randn(4, 12))
    assert e.shape == (4, 12 + 3 * 64)
    assert torch.allclose(e[:, :12].norm(dim=1), torch.ones(4))


# ------------------------------------------------------------------ config
def test_config_round_trip_and_validation():
    cfg = DistillConfig(num_pairs=20, corr="lowrank", mode="constant_memory")
    assert DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown DistillConfig keys"):
        DistillConfig.from_dict({"ipc": 3})
    with pytest.raises(ValueError, match="mode"):
        DistillConfig(mode="fast")
    with pytest.raises(ValueError, match="lr_img"):
        DistillConfig(lr_img=0)


def test_iterations_per_100_pairs_scale_with_the_budget_and_an_explicit_count_wins():
    assert [DistillConfig(num_pairs=m, iterations_per_100_pairs=150).iterations for m in (100, 200, 500, 30)] \
        == [150, 300, 750, 45]
    assert DistillConfig(num_pairs=200, iterations=40).iterations == 40  # 0: iterations as given
    with pytest.raises(ValueError, match="iterations_per_100_pairs"):
        DistillConfig(iterations_per_100_pairs=-1)
    merged = distiller.merge_iterations({"iterations_per_100_pairs": 150, "lr_img": 0.003}, {"iterations": 40})
    assert DistillConfig(num_pairs=500, **merged).iterations == 40
    kept = distiller.merge_iterations({"iterations_per_100_pairs": 150}, {"lr_img": 0.001})
    assert DistillConfig(num_pairs=500, **kept).iterations == 750


def test_min_iterations_is_a_floor_of_the_per_100_rule_and_an_explicit_count_drops_it():
    per100 = dict(iterations_per_100_pairs=150, min_iterations=300)
    assert [DistillConfig(num_pairs=m, **per100).iterations for m in (20, 100, 200, 500)] == [300, 300, 300, 750]
    assert DistillConfig(num_pairs=100, iterations=40, min_iterations=300).iterations == 40  # no rule, no floor
    with pytest.raises(ValueError, match="min_iterations"):
        DistillConfig(min_iterations=-1)
    merged = distiller.merge_iterations({**per100, "lr_img": 0.003}, {"iterations": 40})
    assert merged == {"lr_img": 0.003, "iterations": 40}
    assert DistillConfig(num_pairs=100, **distiller.merge_iterations(per100, {"min_iterations": 0})).iterations == 150


def test_wrong_model_for_the_trajectories_is_an_error():
    with pytest.raises(ArtifactError, match="parameters"):
        Distiller(tiny_config(), [torch.zeros(3, 7)], tiny_model(), *tiny_data())


# ------------------------------------------------------------------ the loop
def test_a_few_iterations_lower_the_matching_loss_on_shapes():
    ds = load_source("shapes", num_images=100, image_size=32, seed=0).split("train")
    x, t = ds.pair_pixels(), bow_embed(ds.captions)
    torch.manual_seed(0)
    model = build_model("convnet3", text_dim=64, image_size=32, embed_dim=64, width=16)
    traj = [get_flat(model)]
    train_contrastive(model, x, t, TrainConfig(epochs=3, batch_size=32, lr=0.01, optimizer="sgd", seed=0,
                                               device="cpu"),
                      callback=lambda e, m, s: traj.append(get_flat(m)))
    cfg = DistillConfig(num_pairs=20, iterations=8, syn_steps=3, segment_epochs=2, max_start_epoch=2,
                        batch_syn=10, lr_init=0.01, ceo_beta=0.5, device="cpu", progress=False,
                        save_maps_every=0)
    d = Distiller(cfg, TrajectoryList([torch.stack(traj)]), model, x, t)
    d.initialise()
    before = d.evaluate_matching(num=4, seed=11)
    d.run()
    after = d.evaluate_matching(num=4, seed=11)
    assert after < before
    assert all(h["event"] is None for h in d.history) and len(d.history) == 8


def test_callback_stats_and_run_folder(tmp_path):
    seen = []
    d = tiny_distiller(run_dir=tmp_path, callback=lambda it, s: seen.append((it, s)), save_maps_every=3)
    syn = d.run()
    assert [it for it, _ in seen] == list(range(1, 7))
    keys = {"loss", "loss_image", "loss_text", "eta_image", "eta_text", "grad_images", "grad_text",
            "grad_corr", "grad_lr", "pixel_step", "time", "event"}
    assert keys <= set(seen[0][1]) and all(math.isfinite(s["loss"]) for _, s in seen)
    back = DistilledSet.load(tmp_path / "artifacts" / "distilled")
    assert same_state(back, syn) and [it for it, _ in back.map_history] == [0, 3, 6]
    assert json.loads((tmp_path / "metrics.json").read_text())["distill"]["iterations"] == 6


@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, prior):
    full = tiny_distiller(run_dir=tmp_path / "full", corr_prior_scale=prior).run()
    assert full.corr.has_prior == (prior > 0)

    def kill(it, stats):
        if it == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        tiny_distiller(run_dir=tmp_path / "cut", callback=kill, corr_prior_scale=prior).run()
    resumed = tiny_distiller(run_dir=tmp_path / "cut", corr_prior_scale=prior)
    done = []
    resumed.callback = lambda it, s: done.append(it)
    syn = resumed.run()
    assert done == [5, 6]  # restarted after the checkpoint of iteration 4: one interval lost at most
    assert same_state(syn, full)
    assert len(resumed.history) == 6
    with pytest.raises(ArtifactError, match="other settings"):
        tiny_distiller(run_dir=tmp_path / "cut", lr_img=0.5, corr_prior_scale=prior).run()
    with pytest.raises(ArtifactError, match="other settings"):  # the prior decides the start: not resumable
        tiny_distiller(run_dir=tmp_path / "cut", corr_prior_scale=0.5).run()


def test_nan_loss_is_caught_reverted_and_step_sizes_halved(tmp_path, monkeypatch):
    real, calls = distiller.match_loss, []

    def poisoned(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(distiller, "match_loss", poisoned)
    states = []
    d = tiny_distiller(run_dir=tmp_path, callback=lambda it, s: states.append(d.syn.images.detach().clone()))
    syn = d.run()
    events = [h["event"] for h in d.history]
    assert events[2] is not None and "non-finite matching loss" in events[2]
    assert [e is None for i, e in enumerate(events) if i != 2] == [True] * 5
    assert torch.equal(states[2], states[1])  # the bad iteration left the last good state
    assert d.history[3]["lr_img"] == pytest.approx(0.5 * d.history[1]["lr_img"])
    assert d.history[3]["lr_txt"] == pytest.approx(0.5 * d.history[1]["lr_txt"])
    assert d.recoveries == 1 and bool(torch.isfinite(syn.images).all())
    assert "reverted to the last good state" in (tmp_path / "log.txt").read_text()


def test_non_positive_student_rate_is_caught(monkeypatch):
    real, calls = distiller.match_loss, []

    def kill_rate(model, syn, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                syn.log_lr.fill_(-float("inf"))  # eta = 0
        return real(model, syn, *a, **k)

    monkeypatch.setattr(distiller, "match_loss", kill_rate)
    d = tiny_distiller()
    syn = d.run()
    assert "learning rate" in d.history[1]["event"]
    assert bool((syn.lr() > 0).all()) and d.recoveries == 1


def test_gives_up_after_max_recoveries(monkeypatch):
    real = distiller.match_loss

    def always_nan(*a, **k):
        out = real(*a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(distiller, "match_loss", always_nan)
    with pytest.raises(FloatingPointError, match="gave up after 3 recoveries"):
        tiny_distiller(max_recoveries=2).run()


def test_student_rate_is_calibrated_when_not_given():
    d = tiny_distiller(lr_init=None)
    syn = d.initialise()
    lrs = syn.meta["lr_calibrated"]
    assert set(lrs) == {"image", "text"}
    assert syn.learning_rates() == pytest.approx(lrs)


@pytest.mark.parametrize("corr", ["identity", "lowrank"])
def test_constant_memory_mode_and_other_correspondences_run(corr):
    d = tiny_distiller(corr=corr, corr_rank=2, mode="constant_memory", iterations=2)
    syn = d.run()
    assert syn.corr.kind == corr and len(d.history) == 2 and d.history[-1]["event"] is None


# ------------------------------------------------------------------ selection on validation
def scripted_val(monkeypatch, scores: dict[int, float]) -> list[int]:
    """Replace the fresh-model validation by a table ``iteration -> R-sum``; returns the calls."""
    calls = []

    def fake(self):
        calls.append(self.iteration)
        return scores[self.iteration]

    monkeypatch.setattr(Distiller, "validation_rsum", fake)
    return calls


def test_selection_returns_the_set_of_the_best_validation_check(monkeypatch, tmp_path):
    calls = scripted_val(monkeypatch, {0: 10.0, 2: 30.0, 4: 20.0, 6: 30.0})
    states = {}
    d = tiny_distiller(run_dir=tmp_path, select_every=2, save_maps_every=2, val=("unused",),
                       callback=lambda it, s: states.update({it: {k: v.clone() for k, v in d.syn.state_dict().items()}}))
    syn = d.run()
    assert calls == [0, 2, 4, 6]
    sel = syn.meta["selection"]
    assert sel["best_iteration"] == 2 and sel["best_val_rsum"] == 30.0  # earliest of the tie with 6
    assert sel["val_rsum_by_iteration"] == [[0, 10.0], [2, 30.0], [4, 20.0], [6, 30.0]]
    assert all(torch.equal(v, states[2][k]) for k, v in syn.state_dict().items())
    assert not torch.equal(syn.images, states[6]["images"])
    assert [it for it, _ in syn.map_history] == [0, 2]  # maps of the returned images come last
    assert d.summary()["selected_iteration"] == 2
    assert [h.get("val/R-sum") for h in d.history] == [None, 30.0, None, 20.0, None, 30.0]
    back = DistilledSet.load(tmp_path / "artifacts" / "distilled")
    assert same_state(back, syn) and back.meta["selection"]["best_iteration"] == 2


def test_selection_can_return_the_starting_pairs(monkeypatch):
    scripted_val(monkeypatch, {0: 50.0, 3: 40.0, 6: 45.0})
    d = tiny_distiller(select_every=3, val=("unused",))
    d.initialise()
    start = d.syn.images.detach().clone()
    d.syn = None
    syn = d.run()
    assert syn.meta["selection"]["best_iteration"] == 0
    assert torch.equal(syn.images.detach(), start)


def test_selection_survives_a_kill_and_resume(monkeypatch, tmp_path):
    table = {0: 1.0, 2: 5.0, 4: 3.0, 6: 4.0}
    scripted_val(monkeypatch, table)
    full = tiny_distiller(run_dir=tmp_path / "full", select_every=2, val=("unused",)).run()

    def kill(it, stats):
        if it == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        tiny_distiller(run_dir=tmp_path / "cut", select_every=2, val=("unused",), callback=kill).run()
    calls = scripted_val(monkeypatch, table)
    syn = tiny_distiller(run_dir=tmp_path / "cut", select_every=2, val=("unused",)).run()
    assert calls == [6]  # checks 0, 2, 4 came back with the checkpoint of iteration 4
    assert syn.meta["selection"]["best_iteration"] == 2 and same_state(syn, full)


def test_selection_needs_validation_data_and_sane_settings():
    with pytest.raises(ValueError, match="val="):
        tiny_distiller(select_every=2)
    with pytest.raises(ValueError, match="select_every"):
        DistillConfig(select_every=-1)
    with pytest.raises(ValueError, match="select_epochs"):
        DistillConfig(select_epochs=0)


def test_selection_trains_fresh_models_on_real_validation_data():
    ds = load_source("shapes", num_images=60, image_size=32, seed=0)
    train, val = ds.split("train"), ds.split("val")
    x, t = train.pair_pixels(), bow_embed(train.captions)
    model = build_model("convnet3", text_dim=64, image_size=32, embed_dim=32, width=8)
    cfg = DistillConfig(num_pairs=8, iterations=2, syn_steps=2, segment_epochs=1, max_start_epoch=1, batch_syn=4,
                        lr_init=0.01, ceo_beta=0.0, device="cpu", progress=False, save_maps_every=0,
                        select_every=2, select_epochs=2)
    d = Distiller(cfg, random_walks(model, n=1, epochs=2), model, x, t, val=(val, bow_embed(val.captions)))
    syn = d.run()
    scores = syn.meta["selection"]["val_rsum_by_iteration"]
    assert [it for it, _ in scores] == [0, 2]
    assert all(0.0 <= r <= 600.0 for _, r in scores)
    assert syn.meta["selection"]["best_val_rsum"] == max(r for _, r in scores)


def test_selection_can_keep_the_learned_rates_on_the_starting_pairs(monkeypatch):
    start = {}

    def fake(self):
        if not start:  # the first check is the start
            start.update(images=self.syn.images.detach().clone(), text=self.syn.text.detach().clone())
        on_start = torch.equal(self.syn.images, start["images"]) and torch.equal(self.syn.text, start["text"])
        return {0: 10.0, 3: 20.0, 6: 15.0}[self.iteration] + (10.0 + self.iteration if on_start and self.iteration else 0)

    monkeypatch.setattr(Distiller, "validation_rsum", fake)
    states = {}
    d = tiny_distiller(select_every=3, select_start_pairs=True, val=("unused",),
                       callback=lambda it, s: states.update({it: {k: v.clone() for k, v in d.syn.state_dict().items()}}))
    syn = d.run()
    sel = syn.meta["selection"]
    assert sel["val_rsum_by_iteration"] == [[0, 10.0], [3, 20.0], [6, 15.0]]
    assert sel["start_pairs_val_rsum_by_iteration"] == [[3, 33.0], [6, 31.0]]
    assert sel["best_iteration"] == 3 and sel["best_kind"] == "start_pairs"
    assert torch.equal(syn.images.detach(), start["images"]) and torch.equal(syn.text.detach(), start["text"])
    for k in ("log_lr",) + tuple(k for k in states[3] if k.startswith("corr.")):
        assert torch.equal(syn.state_dict()[k], states[3][k])  # the rates and P~ learned by iteration 3
    assert not torch.equal(states[3]["log_lr"], states[6]["log_lr"])
    assert d.summary()["selected_kind"] == "start_pairs"


# ------------------------------------------------------------------ image options
def test_image_options_at_strength_zero_are_plain_matching_bit_for_bit(monkeypatch):
    plain = tiny_distiller(iterations=3, ceo_beta=0.0)
    plain.run()
    monkeypatch.setattr(distiller, "augment", lambda *a, **k: pytest.fail("augment ran at strength 0"))
    monkeypatch.setattr(distiller, "total_variation", lambda *a, **k: pytest.fail("TV ran at weight 0"))
    zero = tiny_distiller(iterations=3, ceo_beta=0.0, augment_strength=0.0, tv_weight=0.0, pixel_grad_blur=0.0)
    zero.run()
    for name, t in plain.syn.state_dict().items():
        assert torch.equal(t, zero.syn.state_dict()[name]), name


@pytest.mark.parametrize("option", [{"augment_strength": 1.0}, {"tv_weight": 5.0}])
def test_image_options_change_the_images_and_stay_reproducible(option):
    plain = tiny_distiller(iterations=3, ceo_beta=0.0)
    plain.run()
    a, b = (tiny_distiller(iterations=3, ceo_beta=0.0, **option) for _ in range(2))
    a.run()
    b.run()
    assert torch.equal(a.syn.images, b.syn.images)
    assert not torch.equal(a.syn.images, plain.syn.images)


def test_tv_penalty_makes_images_smoother():
    from mdw_kit.distill.augment import total_variation
    runs = {w: tiny_distiller(iterations=6, ceo_beta=0.0, tv_weight=w) for w in (0.0, 50.0)}
    for d in runs.values():
        d.run()
    assert "tv" in runs[50.0].history[-1]
    smooth, plain = (float(total_variation(runs[w].syn.images.detach())) for w in (50.0, 0.0))
    assert smooth < plain


def test_augmentation_is_differentiable_and_strength_scales_it():
    from mdw_kit.distill.augment import augment
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    small = augment(x, 0.1, torch.Generator().manual_seed(0))
    large = augment(x, 1.0, torch.Generator().manual_seed(0))
    small.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert float((small - x).abs().mean().detach()) < float((large - x).abs().mean().detach())
    with pytest.raises(ValueError, match="strength"):
        augment(x, -1.0)


def test_new_options_are_validated_by_name():
    for bad in ({"augment_strength": -1.0}, {"tv_weight": -0.1}, {"corr_form": "softplus"}, {"corr_off_share": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))[:8]):
            DistillConfig(**bad)


@pytest.mark.parametrize("form", ["exp", "sigmoid"])
def test_correspondence_form_is_kept_through_save_and_load(tmp_path, form):
    d = tiny_distiller(iterations=2, corr_form=form, corr_off_share=0.1)
    syn = d.run()
    assert syn.corr.form == form
    back = DistilledSet.load(syn.save(tmp_path / "set"))
    assert back.corr.form == form and torch.equal(back.targets(), syn.targets())


# ------------------------------------------------------------------ correspondence prior
def test_expert_prior_starts_p_from_the_experts_scores_and_is_kept_with_the_set(tmp_path):
    d = tiny_distiller(iterations=2, corr_prior_scale=1.0)
    syn = d.initialise()
    scores = d.expert_scores()
    assert scores.shape == (10, 10) and syn.corr.has_prior
    assert syn.corr.off_diagonal_share() == pytest.approx(d.cfg.corr_off_share, abs=1e-4)
    Q = syn.corr.row_shares()
    off = ~torch.eye(10, dtype=torch.bool)
    for i in range(10):  # each row gives its off-diagonal share to the texts the experts match it with
        assert torch.argsort(Q[i][off[i]]).tolist() == torch.argsort(scores[i][off[i]]).tolist()
    d.run()
    back = DistilledSet.load(syn.save(tmp_path / "set"))
    assert torch.equal(back.targets(), syn.targets())
    assert torch.allclose(back.corr.initial().matrix(), syn.corr.initial().matrix())
    plain = tiny_distiller(iterations=2)
    plain.initialise()
    assert not plain.syn.corr.has_prior and not torch.allclose(plain.syn.corr.matrix(), syn.corr.initial().matrix())


def test_expert_prior_needs_a_learnable_exp_correspondence():
    for kw in ({"corr": "identity"}, {"corr_form": "sigmoid"}):
        with pytest.raises(ValueError, match="corr_prior_scale"):
            DistillConfig(corr_prior_scale=1.0, **kw)
    with pytest.raises(ValueError, match="corr_prior_scale"):
        DistillConfig(corr_prior_scale=-1.0)
