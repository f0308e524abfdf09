"""The frozen-backbone feature cache (mdw_kit.features) and training / evaluation on cached features."""
import logging

import pytest
import torch

from mdw_kit.evaluation.protocol import evaluate_distilled
from mdw_kit.features import FeatureCache, feature_key, has_frozen_stem, stem_features, with_features
from mdw_kit.models import ModelConfig
from mdw_kit.models.retrieval import ImageTower, StemFeatures, get_flat
from mdw_kit.data.bundle import prepare_data
from mdw_kit.train import TrainConfig, train_contrastive

SIZE = 32


@pytest.fixture(scope="module")
def bundle():
    return prepare_data("shapes", noise=0.3, source_options={"num_images": 60, "image_size": SIZE}, encoder="hash")


def lite(b, **kw):
    return ModelConfig(**{"tower": "efficientnet_lite0", "text_dim": b.text_dim, "image_size": SIZE,
                          "embed_dim": 32, "train_layers": "none", **kw})


def _train(model_cfg, images, text, seed=0):
    torch.manual_seed(seed)
    m = model_cfg.build()
    train_contrastive(m, images, text, TrainConfig(epochs=2, batch_size=16, device="cpu", seed=seed))
    return get_flat(m)


def test_a_cache_hit_trains_bit_identically_to_freshly_computed_features(bundle, tmp_path):
    mc = lite(bundle)
    x, t = bundle.train.pair_pixels(), bundle.train_text
    cache = FeatureCache(tmp_path)
    first = cache.features(mc, bundle.train.images)
    assert not cache.last_hit and cache.last_path.exists()
    hit = cache.features(mc, bundle.train.images)
    assert cache.last_hit
    fresh = FeatureCache(tmp_path, enabled=False).features(mc, bundle.train.images)
    assert torch.equal(hit, fresh) and torch.equal(first, fresh)
    rows = bundle.train.pair_image
    assert torch.equal(_train(mc, hit[rows], t), _train(mc, fresh[rows], t))
    # and the same model as running the frozen backbone on every batch, up to float summation order
    assert torch.allclose(_train(mc, hit[rows], t), _train(mc, x, t), atol=1e-4)


def test_changed_tower_size_weights_or_data_miss(bundle, tmp_path):
    mc = lite(bundle)
    base = feature_key(mc, bundle.train.images)
    other_data = bundle.train.images.clone()
    other_data[0, 0, 0, 0] ^= 1
    weights = tmp_path / "w.safetensors"
    from mdw_kit.models.towers import lite0_weights_path
    raw = bytearray(lite0_weights_path().read_bytes())
    raw[len(raw) // 2] ^= 1  # one bit in the middle of the file
    weights.write_bytes(bytes(raw))
    changed = [feature_key(lite(bundle, train_layers="last_block"), bundle.train.images),
               feature_key(lite(bundle, image_size=64), bundle.train.images),
               feature_key(lite(bundle, weights=str(weights)), bundle.train.images),
               feature_key(mc, other_data),
               feature_key(ModelConfig(tower="openclip:RN50", image_size=SIZE), bundle.train.images)]
    cache = FeatureCache(tmp_path)
    paths = {cache.path(k) for k in changed}
    assert cache.path(base) not in paths and len(paths) == len(changed)


def test_a_corrupt_cache_file_is_rebuilt_and_the_log_names_it(bundle, tmp_path, caplog):
    mc = lite(bundle)
    cache = FeatureCache(tmp_path)
    good = cache.features(mc, bundle.val.images)
    cache.last_path.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="mdw_kit.features"):
        again = cache.features(mc, bundle.val.images)
    assert not cache.last_hit and torch.equal(good, again)
    assert str(cache.last_path) in caplog.text and "rebuilding" in caplog.text
    cache.features(mc, bundle.val.images)
    assert cache.last_hit  # the rebuilt file is good again


def test_towers_without_a_frozen_part_are_left_alone(bundle):
    mc = ModelConfig(tower="convnet3", text_dim=bundle.text_dim, image_size=SIZE)
    assert not has_frozen_stem(mc)
    assert with_features(bundle, mc) is bundle
    with pytest.raises(ValueError, match="image_size"):
        with_features(bundle, lite(bundle, image_size=64))


def test_splits_carry_the_features_of_their_own_images(bundle, tmp_path):
    fb = with_features(bundle, lite(bundle), FeatureCache(tmp_path))
    direct = stem_features(lite(bundle).build(), bundle.test.images)
    assert torch.allclose(fb.test.image_inputs(), direct, atol=1e-5)  # batch size changes float sums only
    assert isinstance(fb.train.pair_inputs(), StemFeatures)
    assert fb.train.images.dtype == torch.uint8 and fb.info["features"]["shape"] == list(direct.shape[1:])


def test_evaluation_of_a_set_runs_the_backbone_once_and_the_splits_never(bundle, tmp_path, monkeypatch):
    fb = with_features(bundle, lite(bundle), FeatureCache(tmp_path))
    calls = []
    real = ImageTower.stem

    def counting(self, x):
        if not isinstance(x, StemFeatures):
            calls.append(int(x.shape[0]))
        return real(self, x)

    monkeypatch.setattr(ImageTower, "stem", counting)
    pairs = (fb.train.pair_pixels()[:12], fb.train_text[:12])
    r = evaluate_distilled(pairs, lite(bundle), fb.val_split(), fb.test_split(), seeds=(0, 1), epochs=3)
    assert calls == [12]  # the 12 training images once, for both seeds; val and test from the cache
    assert 0 <= r["mean"]["R-sum"] <= 600
