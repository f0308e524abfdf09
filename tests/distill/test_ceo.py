"""Stage 4 (CEO): region maps, pixel-gradient modulation, and its effect inside the distiller."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.data import load_source
from mdw_kit.distill.ceo import gaussian_blur, modulate_pixel_grad, region_maps
from mdw_kit.evaluation.pointing import pointing_game_hits as peak_in_boxes
from mdw_kit.distill.distiller import DistillConfig, Distiller
from mdw_kit.distill.matching import match_loss, sample_batches
from mdw_kit.models import build_model
from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
from mdw_kit.train import TrainConfig, train_contrastive


# ------------------------------------------------------------------ helpers
def tiny_model(spatial: bool = True) -> RetrievalModel:
    torch.manual_seed(0)
    if spatial:
        tower = ImageTower(nn.Identity(), nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.AvgPool2d(2)),
                           6, pool="flatten", map_size=4)
    else:  # the trainable part ends in a flat vector: no spatial map
        tower = ImageTower(nn.Identity(), nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten()),
                           2, pool="flatten", map_size=8)
    return RetrievalModel(tower, text_dim=12, embed_dim=10)


def random_walk(model: nn.Module, epochs: int = 4, scale: float = 0.02, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = get_flat(model)
    return torch.stack([s] + [s + scale * torch.randn(s.shape, generator=g) * (e + 1) for e in range(epochs)])


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


def tiny_config(**kw) -> DistillConfig:
    base = dict(num_pairs=10, iterations=2, syn_steps=2, segment_epochs=1, max_start_epoch=2, batch_syn=5,
                lr_init=0.05, device="cpu", progress=False, save_maps_every=0, seed=0)
    return DistillConfig(**{**base, **kw})


def tiny_data(n: int = 30):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randn(n, 12, generator=g)


# ------------------------------------------------------------------ modulation
def test_beta_zero_is_the_identity():
    g = torch.randn(3, 3, 8, 8)
    assert modulate_pixel_grad(g, torch.rand(3, 8, 8), beta=0.0) is g


def test_modulation_keeps_each_images_mean_step_and_moves_regions_more():
    torch.manual_seed(0)
    g = torch.randn(4, 3, 16, 16)
    maps = torch.zeros(4, 16, 16)
    maps[:, 4:8, 4:8] = 1.0  # a small discriminative region
    for beta in (0.3, 1.0, 3.0):
        out = modulate_pixel_grad(g, maps, beta=beta, clip=(0.1, 5.0))
        assert torch.allclose(out.abs().mean(dim=(1, 2, 3)), g.abs().mean(dim=(1, 2, 3)), rtol=1e-5)
        ratio = (out / g)[:, 0]
        inside, outside = ratio[:, 4:8, 4:8], ratio[:, 8:, 8:]
        assert float(inside.min()) > float(outside.max())  # the region moves more
        spread = ratio.flatten(1).amax(1) / ratio.flatten(1).amin(1)
        assert float(spread.max()) <= 5.0 / 0.1 + 1e-4  # per image, the clip bounds the spread


def test_uniform_maps_change_nothing():
    g = torch.randn(2, 3, 8, 8)
    assert torch.allclose(modulate_pixel_grad(g, torch.full((2, 8, 8), 0.3), beta=2.0), g)


# ------------------------------------------------------------------ maps
@pytest.mark.parametrize("method", ["auto", "gradcam", "gradcam_mixed", "hirescam", "guided", "saliency", "smoothgrad",
                                    "occlusion"])
def test_region_maps_are_normalised_maps(method):
    model, (x, t) = tiny_model(), tiny_data(6)
    maps = region_maps(model, None, x, t, torch.eye(6), k=2, method=method)
    assert maps.shape == (6, 8, 8)
    assert float(maps.min()) >= 0 and torch.allclose(maps.flatten(1).amax(1), torch.ones(6))


def test_maps_follow_the_correspondence_and_the_given_parameters():
    model, (x, t) = tiny_model(), tiny_data(6)
    P = torch.eye(6)
    shifted = torch.roll(torch.eye(6), 1, dims=1)  # image i now ranks text i+1 first
    a = region_maps(model, None, x, t, P, k=1, method="saliency")
    assert not torch.allclose(a, region_maps(model, None, x, t, shifted, k=1, method="saliency"))
    other = get_flat(model) + 0.5 * torch.randn(get_flat(model).shape)
    assert not torch.allclose(a, region_maps(model, other, x, t, P, k=1, method="saliency"))
    assert torch.allclose(a, region_maps(model, None, x, t, P, k=1, method="saliency"))  # model unchanged


def test_smoothgrad_is_deterministic_and_smoother_than_saliency():
    model, (x, t) = tiny_model(), tiny_data(6)
    a = region_maps(model, None, x, t, torch.eye(6), k=1, method="smoothgrad")
    assert torch.equal(a, region_maps(model, None, x, t, torch.eye(6), k=1, method="smoothgrad"))
    raw = region_maps(model, None, x, t, torch.eye(6), k=1, method="saliency")

    def roughness(m):  # mean absolute difference between horizontal neighbours
        return float((m[:, :, 1:] - m[:, :, :-1]).abs().mean())
    assert roughness(a) < roughness(raw)


def test_occlusion_maps_find_the_region_the_score_depends_on():
    # a tower that only looks at the top-left 4 x 4 corner of an 8 x 8 image
    tower = ImageTower(nn.Identity(), nn.Sequential(nn.ZeroPad2d((0, -4, 0, -4)), nn.Conv2d(3, 4, 1)), 4,
                       pool="flatten", map_size=4)
    torch.manual_seed(0)
    model = RetrievalModel(tower, text_dim=12, embed_dim=10)
    x, t = tiny_data(5)
    maps = region_maps(model, None, x, t, torch.eye(5), k=1, method="occlusion")
    assert maps.shape == (5, 8, 8)
    corner = maps[:, :4, :4].mean()
    assert float(maps[:, 6:, 6:].max()) == 0.0 and float(corner) > 0.2


def test_tower_without_spatial_map_falls_back_to_saliency():
    model, (x, t) = tiny_model(spatial=False), tiny_data(4)
    with pytest.warns(UserWarning, match="'gradcam' needs a spatial feature map"):
        a = region_maps(model, None, x, t, torch.eye(4), k=1, method="gradcam")
    b = region_maps(model, None, x, t, torch.eye(4), k=1, method="saliency")
    assert torch.allclose(a, b)


# ------------------------------------------------------------------ map stages
RED_BOX = [4, 18, 12, 26]  # x0, y0, x1, y1 of the one red square in a white 32 x 32 scene


def colour_model() -> RetrievalModel:
    """A tower whose frozen blocks see 'redness' and 'whiteness' (2 channels, stride 2) and whose
    trainable block is a 1 x 1 conv; text 'red' = [1, 0], 'white' = [0, 1] in the joint space."""
    det = nn.Conv2d(3, 2, 1)
    with torch.no_grad():  # pixels arrive normalised to [-1, 1]
        det.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-1.0, 0.5, 0.5]]).view(2, 3, 1, 1))
        det.bias.copy_(torch.tensor([0.0, 1.0]))
    mix = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        mix.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        mix.bias.zero_()
    tower = ImageTower(nn.Sequential(det, nn.ReLU(), nn.AvgPool2d(2)), nn.Sequential(mix, nn.ReLU()), 2,
                       pool="avg", name="colours")
    model = RetrievalModel(tower, text_dim=2, embed_dim=2)
    with torch.no_grad():
        for lin in (model.image_proj, model.text_head):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return model


def red_square_scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """Two white scenes with one red square each (the second one shifted right), and a white one;
    texts: 'red', 'red', 'white'."""
    x = torch.ones(3, 3, 32, 32)
    x0, y0, x1, y1 = RED_BOX
    x[0, 1:, y0:y1, x0:x1] = 0.0
    x[1, 1:, y0:y1, x0 + 16:x1 + 16] = 0.0
    return x, torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("stage,side", [("last", 16), ("stride2", 16), (0, 32), (1, 32), ("auto", 16)])
def test_stages_resolve_to_their_feature_map(stage, side):
    from mdw_kit.distill.feature_maps import resolve_stage
    model, (x, _) = colour_model(), red_square_scenes()
    st = resolve_stage(model, 32, stage)
    fmap = st.pre(x)
    assert st.side == side and fmap.shape[-1] == side
    assert torch.allclose(st.post(fmap), model.tower.spatial(model.tower.stem(x)), atol=1e-6)


@pytest.mark.parametrize("stage", ["stride2", 1, "last"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam_mixed", "hirescam", "guided"])
def test_feature_map_methods_return_the_stage_size_and_peak_on_the_object(method, stage):
    from mdw_kit.distill.feature_maps import resolve_stage
    model, (x, t) = colour_model(), red_square_scenes()
    side = resolve_stage(model, 32, stage).side
    native = region_maps(model, None, x, t, torch.eye(3), k=1, method=method, stage=stage, native=True)
    assert native.shape == (3, side, side)
    maps = region_maps(model, None, x, t, torch.eye(3), k=1, method=method, stage=stage)
    assert maps.shape == (3, 32, 32)
    x0, y0, x1, y1 = RED_BOX
    boxes = [[{"label": "red square", "box": RED_BOX}], [{"label": "red square", "box": [x0 + 16, y0, x1 + 16, y1]}]]
    assert peak_in_boxes(maps[:2], boxes).all()
    assert peak_in_boxes(native[:2], boxes, image_size=32).all()


def test_mixed_gradcam_is_gradcam_for_one_text_and_mixes_before_the_relu_for_more(monkeypatch):
    from mdw_kit.distill import ceo
    model, (x, t) = tiny_model(), tiny_data(6)
    P = torch.eye(6) + 0.3 * torch.roll(torch.eye(6), 1, dims=1)
    one = {m: region_maps(model, None, x, t, P, k=1, method=m) for m in ("gradcam", "gradcam_mixed")}
    assert torch.allclose(one["gradcam"], one["gradcam_mixed"], atol=1e-6)
    two = {m: region_maps(model, None, x, t, P, k=2, method=m) for m in ("gradcam", "gradcam_mixed")}
    assert not torch.allclose(two["gradcam"], two["gradcam_mixed"])
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(ceo.torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    region_maps(model, None, x, t, P, k=3, method="gradcam_mixed")
    assert len(calls) == 1  # one backward pass for all k texts
    calls.clear()
    region_maps(model, None, x, t, P, k=3, method="gradcam")
    assert len(calls) == 3


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_pixel_methods_find_the_object(method):
    """(SmoothGrad is left out: on this scene its noise opens the detector's ReLU on the white
    background, where the clean image has no gradient at all.)"""
    model, (x, t) = colour_model(), red_square_scenes()
    maps = region_maps(model, None, x, t, torch.eye(3), k=1, method=method)
    x0, y0, x1, y1 = RED_BOX
    boxes = [[{"label": "red square", "box": RED_BOX}], [{"label": "red square", "box": [x0 + 16, y0, x1 + 16, y1]}]]
    assert maps.shape == (3, 32, 32) and peak_in_boxes(maps[:2], boxes).all()


def test_auto_uses_the_towers_default_stage_and_warns_when_it_overrides_a_choice(monkeypatch):
    from mdw_kit.distill import feature_maps
    model, (x, t) = colour_model(), red_square_scenes()
    monkeypatch.setitem(feature_maps.DEFAULT_STAGES, "colours", 1)  # the 32 x 32 map after the ReLU
    auto = region_maps(model, None, x, t, torch.eye(3), k=1)
    assert torch.allclose(auto, region_maps(model, None, x, t, torch.eye(3), k=1, method="gradcam", stage=1))
    with pytest.warns(UserWarning, match="ignores the stage"):  # a 2 x 2 stage is too coarse for auto
        small = region_maps(model, None, x[:, :, :4, :4], t, torch.eye(3), k=1, stage="last")
    assert small.shape == (3, 4, 4)


def test_bad_stages_are_clear_errors():
    model, (x, t) = colour_model(), red_square_scenes()
    with pytest.raises(ValueError, match="map stage 7"):
        region_maps(model, None, x, t, torch.eye(3), stage=7)
    with pytest.raises(ValueError, match="unknown map stage"):
        region_maps(model, None, x, t, torch.eye(3), stage="middle")


def test_peak_in_boxes_scales_boxes():
    m = torch.zeros(2, 8, 8)
    m[0, 1, 1], m[1, 6, 6] = 1, 1
    boxes = [[{"label": "a", "box": [0, 0, 8, 8]}]] * 2  # top-left quarter of a 32 px image
    assert peak_in_boxes(m, boxes, image_size=32).tolist() == [True, False]


# ------------------------------------------------------------------ inside the distiller
def _one_step(beta: float, **kw) -> tuple[Distiller, torch.Tensor, dict]:
    model = tiny_model()
    x, t = tiny_data()
    d = Distiller(tiny_config(ceo_beta=beta, **kw), [random_walk(model)], model, x, t)
    d.initialise()
    before = d.syn.images.detach().clone()
    stats = d.step(1)
    return d, before, stats


def test_beta_zero_step_is_plain_matching_exactly():
    d, before, stats = _one_step(0.0)
    # replay the iteration by hand from the same start and the same draws (generator seeded by cfg.seed)
    ref = Distiller(tiny_config(), [random_walk(tiny_model())], tiny_model(), *tiny_data())
    syn = ref.initialise()
    assert torch.equal(syn.images.detach(), before)
    g = torch.Generator().manual_seed(0)
    ti, t0 = ref._draw_start(g)
    batches = sample_batches(syn.num_pairs, 2, 5, g)
    traj = ref.buffer.trajectory(ti)
    match_loss(ref.model, syn, traj[t0], traj[t0 + 1], 2, 5, batches=batches).loss.backward()
    grad = syn.images.grad / syn.images.grad.abs().mean()  # normalize_pixel_grad, then one SGD step
    expected = (before - ref.cfg.lr_img * grad).clamp(0, 1)
    assert (ti, t0) == (stats["trajectory"], stats["start_epoch"])
    assert torch.allclose(d.syn.images.detach(), expected, atol=1e-6)
    assert not torch.allclose(expected, before)


def test_beta_positive_keeps_the_mean_pixel_step():
    plain = dict(normalize_pixel_grad=False, clamp_pixels=False, lr_img=50.0)
    d0, before0, _ = _one_step(0.0, **plain)
    d1, before1, _ = _one_step(1.0, **plain)
    step0, step1 = d0.syn.images.detach() - before0, d1.syn.images.detach() - before1
    assert torch.equal(before0, before1)
    assert float(step0.abs().mean()) > 0
    assert torch.allclose(step1.abs().mean(dim=(1, 2, 3)), step0.abs().mean(dim=(1, 2, 3)), rtol=1e-4)
    assert not torch.allclose(step1, step0)  # ... but distributed differently


def test_uniform_maps_make_ceo_equal_plain(monkeypatch):
    from mdw_kit.distill import distiller
    monkeypatch.setattr(distiller, "region_maps", lambda model, flat, images, *a, **k:
                        torch.ones(images.shape[0], *images.shape[2:]))
    d0, _, _ = _one_step(0.0)
    d1, _, _ = _one_step(2.0)
    assert torch.equal(d0.syn.images, d1.syn.images)


def test_maps_land_on_shapes_objects_after_distillation():
    ds = load_source("shapes", num_images=150, image_size=32, seed=0).split("train")
    x, t = ds.pair_pixels(), bow_embed(ds.captions)
    torch.manual_seed(0)
    model = build_model("convnet3", text_dim=64, image_size=32, embed_dim=64, width=16)
    traj = [get_flat(model)]
    train_contrastive(model, x, t, TrainConfig(epochs=4, batch_size=32, lr=0.01, optimizer="sgd", seed=0,
                                               device="cpu"),
                      callback=lambda e, m, s: traj.append(get_flat(m)))
    cfg = DistillConfig(num_pairs=40, iterations=3, syn_steps=2, segment_epochs=1, max_start_epoch=2,
                        batch_syn=10, lr_init=0.03, ceo_beta=1.0, device="cpu", progress=False,
                        save_maps_every=3)
    d = Distiller(cfg, [torch.stack(traj)], build_model("convnet3", text_dim=64, image_size=32,
                                                         embed_dim=64, width=16), x, t)
    syn = d.run()
    maps = syn.map_history[-1][1]
    assert syn.map_history[-1][0] == 3 and not torch.equal(syn.images, syn.init_images)
    boxes = [ds.boxes[int(ds.pair_image[i])] for i in syn.init_indices]
    covered = torch.stack([_box_mask(b) for b in boxes])
    hits = float(peak_in_boxes(maps, boxes).mean())
    mass_in = (maps * covered).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    # chance: the share of the image the objects cover
    assert float(hits) > float(covered.mean()) + 0.1
    assert float(mass_in.mean()) > float(covered.mean())


def _box_mask(objs: list[dict], size: int = 32) -> torch.Tensor:
    z = torch.zeros(size, size)
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        z[y0:y1, x0:x1] = 1
    return z


def test_pixel_grad_blur_makes_the_pixel_step_smooth():
    def roughness(step):  # mean absolute difference between horizontal neighbours, per unit step
        return float((step[..., 1:] - step[..., :-1]).abs().mean() / step.abs().mean())
    opts = dict(clamp_pixels=False)
    d0, before0, _ = _one_step(0.0, **opts)
    d1, before1, _ = _one_step(0.0, pixel_grad_blur=1.0, **opts)
    assert torch.equal(before0, before1)
    plain, blurred = d0.syn.images.detach() - before0, d1.syn.images.detach() - before1
    assert roughness(blurred) < 0.5 * roughness(plain)
    # the mean pixel step stays lr_img (normalize_pixel_grad comes after the blur)
    assert abs(float(blurred.abs().mean()) - d1.cfg.lr_img) < 1e-6


def test_gaussian_blur_keeps_constants_and_mass():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 5, 5), 0.7), 2.0), torch.full((1, 1, 5, 5), 0.7))
    assert gaussian_blur(x, 0.0) is x
    assert torch.allclose(gaussian_blur(x, 1.0).mean(), x.mean(), atol=0.02)


def test_maps_of_an_unchanged_set_are_computed_once_and_the_run_is_unchanged(monkeypatch):
    """The maps saved after iteration i are the CEO maps of iteration i + 1: computed once, same run."""
    def run(cache: bool):
        model = tiny_model()
        d = Distiller(tiny_config(ceo_beta=0.5, ceo_every=2, save_maps_every=2, iterations=4), [random_walk(model)],
                      model, *tiny_data())
        calls = []
        compute = d._compute_maps
        d._compute_maps = lambda: calls.append(1) or compute()
        if not cache:
            d._maps_key = lambda: object()  # never equal: every call computes
        syn = d.run()
        return syn, len(calls)

    cached, n_cached = run(True)
    plain, n_plain = run(False)
    assert torch.equal(cached.images.detach(), plain.images.detach())
    assert [it for it, _ in cached.map_history] == [it for it, _ in plain.map_history] == [0, 2, 4]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(cached.map_history, plain.map_history))
    # record 0 = CEO 1, record 2 = CEO 3, record 4: 3 computations instead of 5
    assert (n_cached, n_plain) == (3, 5)
