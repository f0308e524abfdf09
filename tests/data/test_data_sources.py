"""Data sources on tiny data: registry, shapes, openmoji, karpathy, hf (imagefolder, parquet, save_to_disk)."""
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from mdw_kit.data import (SOURCES, DataError, PairDataset, from_lists, list_sources, load_hf, load_karpathy,
                          load_openmoji, load_source, make_shapes, source_options)
from mdw_kit.data.openmoji import emoji_caption, emoji_concept, emoji_from_id
from mdw_kit.data.shapes import BACKGROUND, COLORS


# ---------------------------------------------------------------------------- registry
def test_registry_lists_and_resolves_every_source():
    assert list_sources() == ["hf", "karpathy", "openmoji", "shapes"]
    assert set(SOURCES) == set(list_sources())
    assert SOURCES["shapes"] is make_shapes and SOURCES["hf"] is load_hf
    assert source_options("karpathy")["max_images"] is None


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(DataError, match="known sources: hf, karpathy, openmoji, shapes"):
        load_source("flickr")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['num_imgs'\].*num_images"):
        load_source("shapes", num_imgs=3)
    with pytest.raises(DataError, match="needs option.*image_root"):
        load_source("karpathy", split_json="x.json")


# ------------------------------------------------------------------------------ shapes
def test_shapes_is_deterministic_and_a_prefix_of_a_larger_set():
    a, b = make_shapes(num_images=20, seed=4), make_shapes(num_images=20, seed=4)
    assert a.fingerprint() == b.fingerprint() and a.boxes == b.boxes
    assert make_shapes(num_images=20, seed=5).fingerprint() != a.fingerprint()
    big = make_shapes(num_images=40, seed=4)
    assert torch.equal(big.images[:20], a.images) and big.captions[:20] == a.captions


def test_shapes_sizes_splits_and_defaults():
    ds = load_source("shapes")
    s = ds.summary()
    assert (s["images"], s["pairs"], s["image_size"]) == (600, 600, 32)
    assert (s["val_images"], s["test_images"], s["train_images"]) == (60, 60, 480)
    assert ds.meta["source"] == "shapes" and ds.meta["options"]["seed"] == 0
    big = make_shapes(num_images=5, image_size=96, captions_per_image=3)
    assert big.images.shape == (5, 3, 96, 96) and len(big) == 15
    assert all(len(set(big.captions[3 * i:3 * i + 3])) == 3 for i in range(5))


def test_shapes_boxes_hold_their_objects_and_captions_name_them_left_to_right():
    ds = make_shapes(num_images=30, image_size=64, seed=2, captions_per_image=2)
    for i, objs in enumerate(ds.boxes):
        img = ds.images[i].permute(1, 2, 0).numpy()
        assert 2 <= len(objs) <= 4
        inside = np.zeros(img.shape[:2], dtype=bool)
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and o["label"] == f"{o['color']} {o['shape']}"
            patch = img[y0:y1, x0:x1].reshape(-1, 3)
            colour_share = (patch == COLORS[o["color"]]).all(1).mean()
            assert colour_share > 0.3, (i, o)  # a triangle or diamond fills about half of its box
            inside[y0:y1, x0:x1] = True
        assert (img[~inside] == BACKGROUND).all()
        centres = [o["box"][0] + o["box"][2] for o in objs]
        assert centres == sorted(centres)
        phrases = [f"a {o['size']} {o['color']} {o['shape']}" for o in objs]
        assert ds.captions[2 * i] == " left of ".join(phrases)
        assert ds.captions[2 * i + 1] == " right of ".join(phrases[::-1])


def test_shapes_captions_are_nearly_all_distinct():
    ds = make_shapes(num_images=200, seed=0)
    assert len(set(ds.captions)) >= 195


# ---------------------------------------------------------------------------- openmoji
def test_openmoji_small_build_renders_named_emoji_on_white():
    ds = load_openmoji(limit=60, image_size=32, val_size=6, test_size=6)
    assert 50 <= ds.num_images <= 60 and len(ds) == ds.num_images
    assert ds.summary()["val_images"] == 6 and ds.summary()["test_images"] == 6
    for image_id, cap in zip(ds.image_ids, ds.captions):
        assert cap == emoji_caption(emoji_from_id(image_id)) and ":" not in cap and "_" not in cap
    assert (ds.images[:, :, 0, 0] == 255).all()  # white corners
    assert (ds.images.flatten(1).min(1).values < 200).all()  # every image has ink
    assert "OpenMoji" in ds.meta["attribution"] and ds.meta["license"] == "CC BY-SA 4.0"
    assert ds.meta["options"]["limit"] == 60 and ds.meta["source"] == "openmoji"


def test_openmoji_is_cached_and_seed_moves_the_split():
    a = load_openmoji(limit=40, image_size=48)
    b = load_openmoji(limit=40, image_size=48)
    assert b.meta["cache"] == "loaded" and a.fingerprint() == b.fingerprint()
    c = load_openmoji(limit=40, image_size=48, seed=1)
    assert torch.equal(a.images, c.images) and not np.array_equal(a.image_split, c.image_split)
    assert load_openmoji(limit=40, image_size=48, cache=False).fingerprint() == a.fingerprint()


def test_emoji_concepts_group_variants_only():
    woman_tech_dark = "\U0001F469\U0001F3FF\u200d\U0001F4BB"
    man_tech = "\U0001F468\u200d\U0001F4BB"
    runner_woman = "\U0001F3C3\u200d\u2640\ufe0f"
    assert emoji_concept(woman_tech_dark) == emoji_concept(man_tech)
    assert emoji_concept(runner_woman) == emoji_concept("\U0001F3C3")
    assert emoji_concept("\U0001F478") == emoji_concept("\U0001F934")  # princess, prince
    assert emoji_concept("\U0001F600") != emoji_concept("\U0001F601")
    assert emoji_concept("\u2640\ufe0f") != emoji_concept("\u2642\ufe0f")  # the signs alone stay apart



def test_skin_tone_grouping_keeps_skin_tones_together_and_genders_apart():
    woman_tech_dark = "\U0001F469\U0001F3FF\u200d\U0001F4BB"
    woman_tech = "\U0001F469\u200d\U0001F4BB"
    man_tech = "\U0001F468\u200d\U0001F4BB"
    assert emoji_concept(woman_tech_dark, "skin_tone") == emoji_concept(woman_tech, "skin_tone")
    assert emoji_concept(woman_tech, "skin_tone") != emoji_concept(man_tech, "skin_tone")
    with pytest.raises(ValueError, match="grouping"):
        emoji_concept(man_tech, "gender")
    with pytest.raises(DataError, match="grouping"):
        load_openmoji(limit=24, grouping="loose")
    ds = load_openmoji(limit=40, image_size=32, grouping="skin_tone")
    assert ds.meta["options"]["grouping"] == "skin_tone"
    concepts: dict[str, set] = {}
    for image_id, split in zip(ds.image_ids, ds.image_split):
        concepts.setdefault(emoji_concept(emoji_from_id(image_id), "skin_tone"), set()).add(split)
    assert all(len(v) == 1 for v in concepts.values()), "a skin-tone family straddles splits"

def _check_openmoji(ds: PairDataset) -> None:
    concepts: dict[str, set] = {}
    for image_id, split in zip(ds.image_ids, ds.image_split):
        concepts.setdefault(emoji_concept(emoji_from_id(image_id)), set()).add(split)
    assert all(len(s) == 1 for s in concepts.values()), "a concept straddles splits"
    flat = ds.images.flatten(1).numpy()
    assert len(np.unique(flat, axis=0)) == ds.num_images, "duplicate pixels across images"


@pytest.mark.slow
def test_openmoji_full_default_build():
    ds = load_source("openmoji")
    s = ds.summary()
    assert s["val_images"] == 500 and s["test_images"] == 500
    assert s["train_images"] == s["images"] - 1000 and s["images"] == s["pairs"]
    assert 3600 <= s["images"] <= 3990  # about 3,950 named emoji, less the ones drawn alike
    meta = ds.meta
    assert meta["rendered"] - meta["duplicates_dropped"] == s["images"]
    assert meta["rendered"] + len(meta["not_rendered"]) == meta["candidates"]
    assert sum(len(d["dropped"]) for d in meta["duplicates"]) == meta["duplicates_dropped"]
    _check_openmoji(ds)


def test_openmoji_split_invariants_on_a_subset():
    _check_openmoji(load_openmoji(limit=300, val_size=40, test_size=40))


# ---------------------------------------------------------------------------- karpathy
def test_karpathy_reads_splits_captions_and_filepaths(karpathy_dir):
    ds = load_karpathy(karpathy_dir, karpathy_dir / "split.json", image_size=32)
    assert ds.num_images == 8 and ds.images.shape[1:] == (3, 32, 32)
    assert ds.image_split.tolist() == ["train", "train", "train", "val", "test", "train", "val", "test"]
    assert Counter(ds.pair_image.tolist()) == {i: 5 for i in range(8)}  # at most five captions
    assert ds.image_ids[2] == "val2014/img2.png" and ds.captions[10] == "a blue picture number 0"
    assert tuple(ds.images[0, :, 16, 16].tolist()) == (255, 0, 0)  # red, resized and cropped
    assert ds.meta["skipped"] == [] and ds.meta["source"] == "karpathy"


def test_karpathy_options_and_cache(karpathy_dir):
    few = load_source("karpathy", image_root=karpathy_dir, split_json=karpathy_dir / "split.json",
                      max_images=4, captions_per_image=2, image_size=40)
    assert few.num_images == 4 and len(few) == 8 and few.image_size == 40
    assert set(few.image_split.tolist()) == {"train", "val", "test"}
    again = load_karpathy(karpathy_dir, karpathy_dir / "split.json", max_images=4, captions_per_image=2,
                          image_size=40)
    assert again.meta["cache"] == "loaded" and again.fingerprint() == few.fingerprint()


# --------------------------------------------------------------------------------- hf
def test_hf_imagefolder_with_seeded_split(imagefolder_dir):
    ds = load_source("hf", path=imagefolder_dir, val_frac=0.2, test_frac=0.1, seed=3)
    s = ds.summary()
    assert (s["images"], s["train_images"], s["val_images"], s["test_images"]) == (10, 7, 2, 1)
    assert sorted(ds.captions) == sorted(f"shade number {i}" for i in range(10))
    i = ds.captions.index("shade number 4")
    assert tuple(ds.images[int(ds.pair_image[i]), :, 5, 5].tolist()) == (100, 155, 100)
    assert ds.meta["options"]["format"] == "imagefolder" and ds.meta["unreferenced_files"] == []
    other = load_hf(imagefolder_dir, val_frac=0.2, test_frac=0.1, seed=4)
    assert not np.array_equal(other.image_split, ds.image_split)


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (36, 30), color).save(buf, "PNG")
    return buf.getvalue()


def test_hf_parquet_with_bytes_structs_and_caption_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"picture": [{"bytes": _png(c), "path": None} for c in ("red", "green", "blue", "black")],
                      "caps": [["red one", "crimson"], ["green one"], ["blue one"], ["black one", "dark"]]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    ds = load_hf(tmp_path / "pairs.parquet", image_column="picture", text_column="caps",
                 val_frac=0.25, test_frac=0.25)
    assert ds.num_images == 4 and len(ds) == 6 and ds.meta["options"]["format"] == "parquet"
    assert ds.pair_image[ds.captions.index("crimson")] == ds.pair_image[ds.captions.index("red one")]
    assert ds.summary()["val_images"] == 1 and ds.summary()["test_images"] == 1


def test_hf_save_to_disk_keeps_its_own_splits(tmp_path):
    import datasets
    parts = {}
    for k, (name, n) in enumerate((("train", 6), ("validation", 2), ("test", 3))):
        imgs = [Image.new("RGB", (32, 32), (i * 40, k * 80, 0)) for i in range(n)]
        parts[name] = datasets.Dataset.from_dict({"image": imgs, "text": [f"{name} {i}" for i in range(n)]},
                                                 features=datasets.Features({"image": datasets.Image(),
                                                                             "text": datasets.Value("string")}))
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "disk"))
    ds = load_hf(tmp_path / "disk", val_frac=0.5)  # the stored validation split wins over val_frac
    assert ds.meta["options"]["format"] == "disk"
    assert Counter(ds.image_split.tolist()) == {"train": 6, "val": 2, "test": 3}
    assert all(c.startswith("validation") for c in ds.split("val").captions)


def test_from_lists_builds_pairs_from_memory():
    imgs = [Image.new("RGB", (50, 30), c) for c in ("red", "green", "blue", "white")]
    arr = np.full((20, 20, 3), 9, dtype=np.uint8)
    ds = from_lists(imgs + [arr], ["r", ["g", "green"], "b", "w", "nine"], splits=["train"] * 4 + ["test"])
    assert ds.num_images == 5 and len(ds) == 6 and ds.image_split[-1] == "test"
    assert int(ds.images[4].max()) == 9
    json.dumps(ds.summary())


def test_concept_split_keeps_families_whole_and_stratifies_big_ones():
    from mdw_kit.data.openmoji import concept_split
    concepts = [f"big{i}" for i in range(10) for _ in range(10)] + [f"single{i}" for i in range(200)]
    split = concept_split(concepts, val_size=50, test_size=50, seed=3)
    assert Counter(split.tolist()) == {"train": 200, "val": 50, "test": 50}
    for fam in {c for c in concepts}:
        assert len({s for c, s in zip(concepts, split) if c == fam}) == 1, fam
    for s in ("val", "test"):  # both get their share of the big families, not only singletons
        assert sum(1 for c, x in zip(concepts, split) if x == s and c.startswith("big")) >= 10
