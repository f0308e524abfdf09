"""The stage API (mdw_kit.stages, `import mdw_kit as mk`) in the default regime, and the presets."""
import json

import pytest
import torch

import mdw_kit as mk
from mdw_kit import experiments as X
from mdw_kit.distill.methods import distiller_for
from mdw_kit.models.retrieval import ImageTower, StemFeatures
from mdw_kit.pipeline import PipelineConfig
from mdw_kit.presets import load_preset, merge

TINY = {"num_images": 80, "image_size": 32}


@pytest.fixture(scope="module")
def data():
    return mk.prepare_data("shapes", noise=0.3, options=TINY, encoder="hash")


@pytest.fixture(scope="module")
def buffer(data, tmp_path_factory):
    return mk.build_buffer(data, tmp_path_factory.mktemp("buf"), {"epochs": 4, "warmup_epochs": 1}, runs=1,
                           progress=False)


def test_prepare_data_gives_the_default_regime_with_cached_features(data):
    assert data.model_config.tower == "efficientnet_lite0" and data.model_config.train_layers == "none"
    assert isinstance(data.train.pair_inputs(), StemFeatures) and data.train.images.dtype == torch.uint8
    assert data.info["features"]["shape"][0] == 1280
    scratch = mk.prepare_data("shapes", noise=0.3, options=TINY, encoder="hash", preset="scratch")
    assert scratch.model_config.tower == "convnet3" and scratch.train.features is None


def _distiller(data, buffer, **over):
    return distiller_for("mdw", data, 12, buffer, {"iterations": 12, "syn_steps": 3, "segment_epochs": 1,
                                                   "max_start_epoch": 2, "batch_syn": 12, "progress": False,
                                                   "save_maps_every": 0, "checkpoint_every": 0, "ceo_every": 20,
                                                   **over})


def test_a_small_default_run_lowers_the_matching_loss_and_evaluates_on_features(data, buffer, monkeypatch):
    # texts, P~ and student rates learn (pixels held): the matching loss on fixed draws falls
    dist = _distiller(data, buffer, lr_img=1e-9)
    dist.initialise()
    before = dist.evaluate_matching(num=6, seed=11)
    syn = dist.run()
    assert dist.evaluate_matching(num=6, seed=11) < before
    pixel_batches = []
    real = ImageTower.stem
    monkeypatch.setattr(ImageTower, "stem", lambda self, x: (pixel_batches.append(len(x))
                                                             if not isinstance(x, StemFeatures) else None)
                        or real(self, x))
    res = mk.evaluate(syn, data, seeds=(0,), config={"epochs": 3, "eval_every": 1})
    assert pixel_batches == [12]  # the synthetic images once; val and test come from the cache
    assert 0 <= res["mean"]["R-sum"] <= 600


def test_the_pixels_learn_through_the_frozen_backbone(data, buffer):
    dist = _distiller(data, buffer, iterations=2)
    syn = dist.run()
    change = (syn.images.detach() - syn.init_images).abs().mean()
    assert torch.isfinite(change) and change > 1e-3


def test_noise_report_and_buffer_come_from_one_setting(data, buffer):
    rep = mk.noise_report(data, {"epochs": 4, "warmup_epochs": 1})
    assert len(rep.p_clean) == len(data.train) == len(buffer.consensus.p_clean)
    assert buffer.index["config"]["train"]["epochs"] == 4


def test_run_method_uses_the_bundle_model_and_features(data, buffer, tmp_path):
    r = mk.run_method("clean_random", data, 10, {"dual_track": buffer}, eval_config={"epochs": 3}, seeds=(0,),
                      run_dir=tmp_path / "cr")
    assert r["eval"]["num_pairs"] == 10 and json.loads((tmp_path / "cr" / "result.json").read_text())["key"]
    with pytest.raises(ValueError, match="coreset, not a distillation"):
        distiller_for("clean_random", data, 10, buffer)


def test_presets_load_by_name_and_refuse_unknown_names_and_sections(tmp_path):
    assert set(mk.list_presets()) >= {"default", "smoke", "scratch"}
    with pytest.raises(ValueError, match="did you mean 'smoke'"):
        load_preset("smok")
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"data": {}, "dataa": {}}))
    with pytest.raises(ValueError, match="unknown sections \\['dataa'\\]"):
        load_preset(bad)
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_pipeline_config_resolves_overrides_over_the_preset():
    p = PipelineConfig(source="shapes", source_options={"num_images": 50}, budget=30, expert_epochs=3,
                       model={"tower": "convnet3"}).resolved()
    assert p["data"]["options"] == {"num_images": 50}  # the preset's openmoji options are dropped
    assert p["distill"]["budget"] == 30 and p["model"]["tower"] == "convnet3"
    assert p["distill"]["config"]["max_start_epoch"] <= 3 - p["distill"]["config"]["segment_epochs"]


def test_the_default_preset_scales_iterations_with_the_budget_with_a_floor_unless_a_count_is_given():
    from mdw_kit.distill.methods import METHODS
    for budget, its in ((100, 300), (200, 300), (500, 750)):
        cfg = mk.stages._distill_overrides(None, load_preset("default"))
        assert METHODS["mdw"].distill_config(budget, cfg).iterations == its
    p = PipelineConfig(iterations=40).resolved()["distill"]["config"]
    assert METHODS["mdw"].distill_config(500, p).iterations == 40
    s = X.grid_settings("default", budgets=[200], distill={"iterations": 60})
    assert METHODS["lors"].distill_config(200, s["distill"]).iterations == 60


def test_distiller_is_the_stage_not_yet_run_and_feeds_a_callback(data, buffer):
    seen = []
    dist = mk.distiller(data, buffer, budget=12, config={"iterations": 3, "syn_steps": 2, "segment_epochs": 1,
                                                         "max_start_epoch": 2, "batch_syn": 12, "progress": False,
                                                         "save_maps_every": 0, "checkpoint_every": 0},
                        callback=lambda it, stats: seen.append(it))
    assert dist.iteration == 0 and dist.cfg.num_pairs == 12 and dist.cfg.lr_img == 0.003  # the preset's
    syn = dist.run()
    assert seen == [1, 2, 3] and syn.num_pairs == 12 and dist.summary()["iterations"] == 3


def test_noise_report_naive_is_one_plain_track_and_takes_callbacks(data):
    epochs = []
    rep, res = mk.noise_report(data, {"epochs": 2, "warmup_epochs": 1}, naive=True, validate=False,
                               with_result=True, epoch_callback=lambda e, det: epochs.append(e))
    assert res.config.naive and res.config.tracks == ("A",) and len(rep.p_clean) == len(data.train)
    assert epochs and max(epochs) <= 2
