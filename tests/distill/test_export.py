"""Export: PNGs + overlays + index.json/HTML, and a Hugging Face dataset that round-trips."""
from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mdw_kit.data import load_source
from mdw_kit.distill.export import export_hf_dataset, export_png
from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.data.bundle import HashTextEncoder

INIT = [0, 3, 5, 8]


@pytest.fixture
def setup():
    ds = load_source("shapes", num_images=12, seed=0)
    text = HashTextEncoder(16).encode(ds.captions)
    images = ds.images[ds.pair_image]
    syn = DistilledSet.from_pairs(images, text, INIT, corr="lowrank", rank=2)
    return syn, text, ds.captions


def test_png_export_writes_images_overlays_captions_and_index(setup, tmp_path):
    syn, text, captions = setup
    maps = torch.zeros(len(INIT), 32, 32)
    maps[:, :8, :8] = 1.0
    syn.record_maps(0, maps)
    index = export_png(syn, tmp_path, text, captions, k=2)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:04d}.png" for i in range(len(INIT))]
    assert len(list((tmp_path / "overlays").iterdir())) == len(INIT)
    on_disk = json.loads((tmp_path / "index.json").read_text())
    assert on_disk == json.loads(json.dumps(index))
    for i, row in enumerate(on_disk["pairs"]):
        assert row["captions"][0]["text"] == captions[INIT[i]]  # texts start at real captions
        assert row["captions"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
        assert len(row["captions"]) == 2 and row["init_index"] == INIT[i]
    png = np.asarray(Image.open(tmp_path / "images" / "0001.png"))
    assert png.shape == (128, 128, 3)
    want = (syn.images[1].detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(png[::4, ::4], want)
    overlay = np.asarray(Image.open(tmp_path / "overlays" / "0001.png")).astype(int)
    assert np.abs(overlay[:32, :32] - png[:32, :32]).mean() > np.abs(overlay[64:, 64:] - png[64:, 64:]).mean()
    page = (tmp_path / "index.html").read_text()
    assert page.count("<figure>") == len(INIT) and "overlays/0003.png" in page


def test_png_export_without_maps_warns_and_skips_overlays(setup, tmp_path):
    syn, text, captions = setup
    with pytest.warns(UserWarning, match="no region maps"):
        index = export_png(syn, tmp_path, text, captions)
    assert not index["region_maps"] and not (tmp_path / "overlays").exists()
    assert len(list((tmp_path / "images").iterdir())) == len(INIT)


def test_png_export_errors(setup, tmp_path):
    syn, text, captions = setup
    with pytest.raises(ValueError, match="region maps must be"):
        export_png(syn, tmp_path, text, captions, region_maps=torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="captions were given"):
        export_png(syn, tmp_path, text, captions[:-1], region_maps=False)
    with pytest.raises(ValueError, match="caption embeddings"):
        export_png(syn, tmp_path, text[:, :8], captions, region_maps=False)


def test_hf_dataset_round_trips(setup, tmp_path):
    syn, text, captions = setup
    with torch.no_grad():
        syn.images.add_(0.1 * torch.randn_like(syn.images)).clamp_(0, 1)
    path = export_hf_dataset(syn, tmp_path / "hf", text, captions, k=3)
    back = datasets.load_from_disk(str(path))
    assert len(back) == len(INIT)
    assert list(back["caption"]) == [captions[i] for i in INIT]
    assert all(len(c) == 3 for c in back["captions"])
    assert torch.allclose(torch.tensor(list(back["text_embedding"])), syn.text.detach(), atol=1e-6)
    assert torch.allclose(torch.tensor(list(back["correspondence"])), syn.targets(), atol=1e-6)
    assert list(back["init_index"]) == INIT
    img = np.asarray(back[2]["image"])
    want = (syn.images[2].detach() * 255).round().byte().permute(1, 2, 0).numpy()
    assert img.shape == (32, 32, 3) and np.array_equal(img, want)
    meta = json.loads(back.info.description)
    assert meta["num_pairs"] == len(INIT) and meta["correspondence"] == "lowrank"
