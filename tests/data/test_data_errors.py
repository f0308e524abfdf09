"""Bad input: every error names the file, row, column or option; skip_bad drops and reports."""
import json
import warnings

import pytest
from PIL import Image

from mdw_kit.data import DataError, from_lists, load_hf, load_karpathy, load_openmoji, load_source, make_shapes


def _edit_split(root, fn):
    data = json.loads((root / "split.json").read_text())
    fn(data["images"])
    (root / "split.json").write_text(json.dumps(data))


# ----------------------------------------------------------------------------- karpathy
def test_karpathy_missing_image_names_the_file(karpathy_dir):
    (karpathy_dir / "img5.png").unlink()
    with pytest.raises(DataError, match=r"row 5.*missing image file '.*img5\.png'"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_karpathy_corrupt_image_names_the_file(karpathy_dir):
    (karpathy_dir / "img1.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"corrupt or unreadable image file '.*img1\.png'"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_karpathy_empty_caption_names_the_row(karpathy_dir):
    _edit_split(karpathy_dir, lambda images: images[4]["sentences"][2].update(raw="   "))
    with pytest.raises(DataError, match=r"row 4, file 'img4\.png': sentence 2 has an empty caption"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_karpathy_missing_field_and_bad_split_name_the_row(karpathy_dir):
    _edit_split(karpathy_dir, lambda images: images[2].pop("sentences"))
    with pytest.raises(DataError, match=r"row 2: missing field\(s\) \['sentences'\]; the entry has \["):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)
    _edit_split(karpathy_dir, lambda images: images[2].update(sentences=[{"raw": "x"}], split="holdout"))
    with pytest.raises(DataError, match=r"row 2.*unknown split 'holdout'"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_karpathy_bad_split_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="missing split file .*nope.json"):
        load_karpathy(tmp_path, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json' is not valid JSON"):
        load_karpathy(tmp_path, tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match=r"missing field 'images'.*\['annotations'\]"):
        load_karpathy(tmp_path, tmp_path / "other.json")
    with pytest.raises(DataError, match="missing image folder"):
        load_karpathy(tmp_path / "absent", tmp_path / "other.json")


def test_karpathy_skip_bad_reports_what_it_dropped(karpathy_dir):
    (karpathy_dir / "img6.png").unlink()
    _edit_split(karpathy_dir, lambda images: images[0]["sentences"][0].update(raw=""))
    with pytest.warns(UserWarning, match="skipped 2 bad row"):
        ds = load_karpathy(karpathy_dir, karpathy_dir / "split.json", skip_bad=True)
    assert ds.num_images == 6 and "img0.png" not in ds.image_ids and "img6.png" not in ds.image_ids
    skipped = ds.meta["skipped"]
    assert [s["row"] for s in skipped] == [0, 6]
    assert skipped[0]["reason"] == "sentence 0 has an empty caption"
    assert skipped[1]["file"].endswith("img6.png") and "missing image file" in skipped[1]["reason"]
    with pytest.warns(UserWarning, match="skipped 2 bad row"):  # a cached build reports them again
        again = load_karpathy(karpathy_dir, karpathy_dir / "split.json", skip_bad=True)
    assert again.meta["cache"] == "loaded" and again.meta["skipped"] == skipped


# ---------------------------------------------------------------------------------- hf
def test_hf_missing_column_names_it_and_lists_the_others(imagefolder_dir):
    with pytest.raises(DataError, match=r"missing text column 'caption'; available columns: \['image', 'text'\]"):
        load_hf(imagefolder_dir, text_column="caption")
    with pytest.raises(DataError, match=r"missing image column 'img'; available columns"):
        load_hf(imagefolder_dir, image_column="img")


def test_hf_corrupt_and_missing_images_name_the_file(imagefolder_dir):
    (imagefolder_dir / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"row 3, file '.*3\.png'.*corrupt or unreadable"):
        load_hf(imagefolder_dir)
    (imagefolder_dir / "3.png").unlink()
    with pytest.raises(DataError, match=r"missing image file '.*3\.png'"):
        load_hf(imagefolder_dir)


def test_hf_empty_caption_names_the_row(imagefolder_dir):
    rows = (imagefolder_dir / "metadata.jsonl").read_text().splitlines()
    rows[7] = json.dumps({"file_name": "7.png", "text": ""})
    (imagefolder_dir / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"split 'train', row 7, file '.*7\.png': empty or missing caption"):
        load_hf(imagefolder_dir)


def test_hf_skip_bad_and_unreferenced_files_are_reported(imagefolder_dir):
    (imagefolder_dir / "2.png").write_bytes(b"junk")
    rows = (imagefolder_dir / "metadata.jsonl").read_text().splitlines()
    rows[5] = json.dumps({"file_name": "5.png", "text": None})
    (imagefolder_dir / "metadata.jsonl").write_text("\n".join(rows[:9]) + "\n")  # 9.png has no row
    with pytest.warns(UserWarning) as caught:
        ds = load_hf(imagefolder_dir, skip_bad=True, val_frac=0.0, test_frac=0.0)
    messages = " | ".join(str(w.message) for w in caught)
    assert "skipped 2 bad row" in messages and "1 image file(s)" in messages
    assert ds.num_images == 7 and [s["row"] for s in ds.meta["skipped"]] == [2, 5]
    assert ds.meta["unreferenced_files"][0].endswith("9.png")


def test_hf_bad_paths_and_split_names(tmp_path):
    with pytest.raises(DataError, match="missing dataset path '.*absent'"):
        load_hf(tmp_path / "absent")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot read parquet dataset '.*broken.parquet'"):
        load_hf(tmp_path / "broken.parquet")
    import datasets
    d = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))], "text": ["x"]})
    datasets.DatasetDict({"train": d, "extra": d}).save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(DataError, match=r"split\(s\) \['extra'\]; known split names"):
        load_hf(tmp_path / "disk")
    with pytest.raises(DataError, match="option 'format'"):
        load_hf(tmp_path / "disk", format="csv")


# ----------------------------------------------------------------------------- lists
def test_from_lists_lengths_empty_captions_and_files(tmp_path):
    imgs = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    with pytest.raises(DataError, match="lengths disagree: 3 images but 2 captions"):
        from_lists(imgs, ["a", "b"])
    with pytest.raises(DataError, match="lengths disagree: 3 images but 4 splits"):
        from_lists(imgs, ["a", "b", "c"], splits=["train"] * 4)
    with pytest.raises(DataError, match="row 1: empty or missing caption"):
        from_lists(imgs, ["a", " ", "c"])
    with pytest.raises(DataError, match=r"row 2, file '.*gone\.png'"):
        from_lists(imgs[:2] + [tmp_path / "gone.png"], ["a", "b", "c"])
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        ds = from_lists(imgs + [tmp_path / "gone.png"], ["a", "b", "c", "d"], skip_bad=True,
                        splits=["train", "train", "val", "test"])
    assert ds.num_images == 3 and ds.meta["skipped"][0]["file"].endswith("gone.png")


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("size", [16, 225, 32.0, "64"])
def test_image_size_is_checked_by_every_source(size, karpathy_dir, imagefolder_dir):
    calls = [lambda: make_shapes(num_images=4, image_size=size),
             lambda: load_openmoji(limit=10, image_size=size),
             lambda: load_karpathy(karpathy_dir, karpathy_dir / "split.json", image_size=size),
             lambda: load_hf(imagefolder_dir, image_size=size)]
    for call in calls:
        with pytest.raises(DataError, match=r"option 'image_size' must be an integer in \[32, 224\]"):
            call()


def test_other_options_are_checked():
    with pytest.raises(DataError, match="'num_images' must be an integer >= 3"):
        make_shapes(num_images=0)
    with pytest.raises(DataError, match="'captions_per_image' must be at most 4"):
        make_shapes(num_images=5, captions_per_image=5)
    with pytest.raises(DataError, match="'val_frac' must be a number in"):
        load_source("shapes", num_images=5, val_frac=1.2)
    with pytest.raises(DataError, match="leave no training images"):
        load_openmoji(limit=12, val_size=6, test_size=6)
    with pytest.raises(DataError, match="'skip_bad' must be True or False"):
        from_lists([Image.new("RGB", (4, 4))], ["a"], skip_bad="yes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean build warns about nothing
        make_shapes(num_images=5)
