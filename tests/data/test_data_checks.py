"""Data checks: 16-bit images, images shared across splits, duplicate rows, repeated texts, non-UTF-8 files."""
from __future__ import annotations

import json
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from mdw_kit.data import DataError, load_hf, load_karpathy
from mdw_kit.data.sources import decode_image


def _png16_rgb(value: int, size: int = 8) -> bytes:
    """A 16-bit-per-channel RGB PNG of one grey level (Pillow cannot write these)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" + struct.pack(">H", value) * 3 * size
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["gray16", "rgb16", "gray16-tiff"])
def test_16_bit_images_keep_their_grey_level(tmp_path, kind):
    mid = 32896  # 128 * 257: mid-grey at 16 bits
    if kind == "rgb16":
        data = _png16_rgb(mid)
    else:
        f = tmp_path / ("a.tif" if kind.endswith("tiff") else "a.png")
        Image.fromarray(np.full((8, 8), mid, dtype=np.uint16)).save(f)
        data = f.read_bytes()
    arr = decode_image(data, 32)
    assert abs(float(arr.mean()) - 128) <= 1, (kind, float(arr.mean()))


def test_a_16_bit_gradient_is_not_almost_white(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    f = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(f)
    assert 120 < float(decode_image(f, 32).mean()) < 136  # clipping at 255 gave about 254


# ------------------------------------------------------------------------ leakage
def _split_file(root, fn):
    data = json.loads((root / "split.json").read_text())
    fn(data["images"])
    (root / "split.json").write_text(json.dumps(data))


def test_karpathy_same_file_in_train_and_test_is_counted_and_named(karpathy_dir):
    _split_file(karpathy_dir, lambda ims: ims.append({**ims[0], "split": "test"}))
    with pytest.raises(DataError, match=r"karpathy: 1 image\(s\) of val/test also in an earlier split .*"
                                         r"'img0\.png' \(test\) = 'img0\.png' \(train\).*allow_leakage=True"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_karpathy_identical_bytes_under_other_names_is_leakage_and_can_be_allowed(karpathy_dir):
    (karpathy_dir / "copy.png").write_bytes((karpathy_dir / "img0.png").read_bytes())
    (karpathy_dir / "copy2.png").write_bytes((karpathy_dir / "img1.png").read_bytes())
    _split_file(karpathy_dir, lambda ims: ims.extend([
        {"filename": "copy.png", "split": "val", "sentences": [{"raw": "a copy"}]},
        {"filename": "copy2.png", "split": "test", "sentences": [{"raw": "another copy"}]}]))
    with pytest.raises(DataError, match=r"2 image\(s\).*'copy\.png' \(val\) = 'img0\.png' \(train\)"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)
    with pytest.warns(UserWarning, match=r"2 image\(s\) of val/test .*allow_leakage=True: kept"):
        ds = load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False, allow_leakage=True)
    assert ds.meta["leakage"]["cross_split_images"] == 2
    with pytest.raises(DataError, match="option 'allow_leakage' must be True or False"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False, allow_leakage="yes")


def test_clean_karpathy_records_no_leakage_and_no_duplicates(karpathy_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)
    assert ds.meta["leakage"]["cross_split_images"] == 0 and ds.meta["duplicates"] == {"images": 0, "pairs": 0}


def test_imagefolder_stored_splits_sharing_a_file_are_leakage(imagefolder_dir):
    (imagefolder_dir / "train").mkdir()
    (imagefolder_dir / "test").mkdir()
    for i in range(10):
        (imagefolder_dir / f"{i}.png").rename(imagefolder_dir / ("test" if i >= 8 else "train") / f"{i}.png")
    (imagefolder_dir / "metadata.jsonl").unlink()
    for split, ids in (("train", range(8)), ("test", range(8, 10))):
        (imagefolder_dir / split / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": f"{i}.png", "text": f"shade {i}"}) + "\n" for i in ids))
    (imagefolder_dir / "test" / "9.png").write_bytes((imagefolder_dir / "train" / "3.png").read_bytes())
    with pytest.raises(DataError, match=r"hf: 1 image\(s\) of val/test .*\(test\) = '.*3\.png' \(train\)"):
        load_hf(imagefolder_dir, val_frac=0.0)


def test_imagefolder_rows_of_one_file_are_drawn_into_one_split_and_reported(imagefolder_dir):
    rows = [json.dumps({"file_name": f"{i % 5}.png", "text": f"caption {i}"}) for i in range(10)]
    (imagefolder_dir / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"5 image\(s\) repeat an earlier image of their split"):
        ds = load_hf(imagefolder_dir, val_frac=0.2, test_frac=0.2, seed=0)
    assert ds.meta["leakage"]["cross_split_images"] == 0  # never split one file across splits
    assert ds.meta["duplicates"] == {"images": 5, "pairs": 0}


def test_save_to_disk_identical_bytes_across_splits_is_leakage(tmp_path):
    import datasets
    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    img = Image.new("RGB", (32, 32), (10, 20, 30))
    parts = {s: datasets.Dataset.from_dict({"image": [img, Image.new("RGB", (32, 32), (k * 50, 0, 0))],
                                            "text": [f"{s} a", f"{s} b"]}, features=feats)
             for k, s in enumerate(("train", "validation", "test"))}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(DataError, match=r"hf: 2 image\(s\) of val/test"):
        load_hf(tmp_path / "disk")


# ------------------------------------------------------------------ text files
def test_non_utf8_metadata_is_a_one_line_error_naming_the_file_and_line(imagefolder_dir):
    meta = imagefolder_dir / "metadata.jsonl"
    lines = meta.read_bytes().split(b"\n")
    lines[2] = json.dumps({"file_name": "2.png", "text": "caf\u00e9"}).encode().replace(b"\\u00e9", b"\xe9")
    meta.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"metadata file '.*metadata\.jsonl' is not UTF-8 text: line 3 has byte 0xe9"):
        load_hf(imagefolder_dir)


def test_non_utf8_split_json_is_a_one_line_error(karpathy_dir):
    raw = (karpathy_dir / "split.json").read_bytes().replace(b"picture number 0", b"caf\xe9", 1)
    (karpathy_dir / "split.json").write_bytes(raw)
    with pytest.raises(DataError, match=r"split file '.*split\.json' is not UTF-8 text: byte 0xe9 at offset \d+ "
                                         r"\(line 1\)"):
        load_karpathy(karpathy_dir, karpathy_dir / "split.json", cache=False)


def test_summary_names_the_training_noise_rate_and_counts_repeated_texts():
    from mdw_kit.data import from_lists, inject_noise
    ims = [np.full((8, 8, 3), i, dtype=np.uint8) for i in range(10)]
    caps = [f"c{i}" for i in range(6)] + ["dup", "dup", "dup", "solo"]
    ds = inject_noise(from_lists(ims, caps, splits=["train"] * 6 + ["test"] * 4), 0.5, seed=0)
    s = ds.summary()
    assert s["train_noise_rate"] == 0.5 and s["all_pairs_noise_rate"] == 0.3
    assert (s["test_repeated_text_pairs"], s["train_repeated_text_pairs"]) == (3, 0)
    assert "noise_rate" not in s  # no unnamed rate
