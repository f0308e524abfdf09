"""Noise injection: exact count, a derangement of train captions only, seeded, recorded."""
import json

import numpy as np
import pytest
import torch

from mdw_kit.data import DataError, apply_noise_record, inject_noise, make_shapes, noise_record


@pytest.fixture(scope="module")
def clean():
    return make_shapes(num_images=60, seed=0)


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9])
def test_exact_count_and_no_fixed_points(clean, rate):
    noisy = inject_noise(clean, rate, seed=1)
    n_train = int((clean.pair_split == "train").sum())
    count = round(rate * n_train)
    assert noisy.meta["noise"] == {"rate": rate, "seed": 1, "count": count}
    bad = torch.nonzero(~noisy.clean).flatten()
    assert len(bad) == count and noisy.noise_known
    assert (noisy.source_caption[bad] != bad).all()
    assert sorted(noisy.source_caption[bad].tolist()) == sorted(bad.tolist())  # permuted among themselves
    for p in bad.tolist():
        assert noisy.captions[p] == clean.captions[int(noisy.source_caption[p])] != clean.captions[p]
    keep = noisy.clean.nonzero().flatten().tolist()
    assert [noisy.captions[p] for p in keep] == [clean.captions[p] for p in keep]


def test_val_and_test_untouched_and_input_unchanged(clean):
    before = clean.fingerprint()
    noisy = inject_noise(clean, 0.8, seed=2)
    for split in ("val", "test"):
        assert noisy.split(split).captions == clean.split(split).captions
        assert bool(noisy.split(split).clean.all())
    assert set(noisy.pair_split[(~noisy.clean).numpy()].tolist()) == {"train"}
    assert clean.fingerprint() == before and bool(clean.clean.all()) and not clean.noise_known
    assert torch.equal(noisy.images, clean.images)


def test_seeded_reproducible_and_seed_dependent(clean):
    a, b, c = inject_noise(clean, 0.4, seed=5), inject_noise(clean, 0.4, seed=5), inject_noise(clean, 0.4, seed=6)
    assert a.captions == b.captions and torch.equal(a.source_caption, b.source_caption)
    assert not torch.equal(a.source_caption, c.source_caption)


def test_rate_zero_is_clean_but_known(clean):
    zero = inject_noise(clean, 0.0, seed=3)
    assert zero.noise_known and bool(zero.clean.all()) and zero.captions == clean.captions
    assert zero.meta["noise"]["count"] == 0 and noise_record(zero)["noisy_pairs"] == []


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.2", True])
def test_rate_outside_range_is_an_error(clean, rate):
    with pytest.raises(DataError, match="rate"):
        inject_noise(clean, rate, seed=0)


def test_single_pair_noise_is_an_error_and_double_noise_is_refused(clean):
    n_train = int((clean.pair_split == "train").sum())
    with pytest.raises(DataError, match="exactly 1"):
        inject_noise(clean, 1.0 / n_train, seed=0)
    with pytest.raises(DataError, match="already carries"):
        inject_noise(inject_noise(clean, 0.3, seed=0), 0.3, seed=1)


def test_multi_caption_images_count_own_image_swaps_as_noise():
    ds = make_shapes(num_images=6, seed=1, captions_per_image=4, val_frac=0.0, test_frac=0.2)
    found = False
    for seed in range(20):
        noisy = inject_noise(ds, 0.5, seed=seed)
        bad = torch.nonzero(~noisy.clean).flatten()
        assert len(bad) == round(0.5 * int((ds.pair_split == "train").sum()))
        own = bad[ds.pair_image[noisy.source_caption[bad]] == ds.pair_image[bad]]
        found |= len(own) > 0  # a caption of the pair's own image: still marked as noise
        assert (noisy.source_caption[own] != own).all() and not noisy.clean[own].any()
    assert found


def test_noise_record_is_json_and_reapplies(clean):
    noisy = inject_noise(clean, 0.5, seed=9)
    rec = json.loads(json.dumps(noise_record(noisy)))
    assert rec["count"] == len(rec["noisy_pairs"]) == int((~noisy.clean).sum())
    assert rec["rate"] == 0.5 and rec["seed"] == 9 and len(rec["source_caption"]) == len(clean)
    again = apply_noise_record(clean, rec)
    assert again.captions == noisy.captions and torch.equal(again.clean, noisy.clean)
    with pytest.raises(DataError, match="no injected noise"):
        noise_record(clean)
    with pytest.raises(DataError, match="covers"):
        apply_noise_record(make_shapes(num_images=10, seed=0), rec)
    with pytest.raises(DataError, match="subset"):
        apply_noise_record(clean, noise_record(noisy.split("train")))
    broken = dict(rec, source_caption=[0] * len(clean))
    with pytest.raises(DataError, match="not a permutation"):
        apply_noise_record(clean, broken)


def test_noise_follows_splits_when_subsetting(clean):
    noisy = inject_noise(clean, 0.5, seed=4)
    train = noisy.split("train")
    assert int((~train.clean).sum()) == noisy.meta["noise"]["count"]
    assert np.isclose(train.noise_rate, 0.5, atol=0.02)


def test_noise_never_hands_a_pair_a_caption_with_its_own_text():
    from mdw_kit.data import from_lists
    from mdw_kit.data.noise import noisy_permutation
    rng = np.random.default_rng(0)
    texts = [f"caption {int(k)}" for k in rng.integers(0, 12, size=120)]  # about 10 repeats of each text
    ims = [np.full((8, 8, 3), i, dtype=np.uint8) for i in range(120)]
    ds = from_lists(ims, texts, splits=["train"] * 120)
    for seed in range(5):
        noisy = inject_noise(ds, 0.8, seed=seed)
        moved = (~noisy.clean).nonzero().flatten().tolist()
        assert len(moved) == 96
        assert all(noisy.captions[p] != ds.captions[p] for p in moved), seed
    unique = list(range(50))
    assert noisy_permutation(np.arange(50), 20, 3) == noisy_permutation(np.arange(50), 20, 3, [str(u) for u in unique])


def test_noise_with_one_text_on_most_chosen_pairs_is_refused():
    from mdw_kit.data import from_lists
    ims = [np.full((8, 8, 3), i, dtype=np.uint8) for i in range(10)]
    ds = from_lists(ims, ["same"] * 8 + ["a", "b"], splits=["train"] * 10)
    with pytest.raises(DataError, match=r"noise injection: \d+ of the 10 chosen training pairs carry the text 'same'"):
        inject_noise(ds, 0.95, seed=0)
