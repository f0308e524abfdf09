"""The unroll-cost benchmark: its op variants compute the same pixel gradient as the native tower,
and a tiny run writes the table with the command that made it."""
import json

import torch

BENCHMARK = "bench_unroll_cost"


def test_variants_compute_the_native_gradient(bench, tmp_path):
    out = tmp_path / "u.json"
    argv = ["--pairs", "8", "--steps", "2", "--batch", "4", "--image-size", "16", "--text-dim", "12",
            "--reps", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"] == "python benchmarks/bench_unroll_cost.py " + " ".join(argv)
    assert set(doc["rows"]) == set(bench.VARIANTS)
    for name, row in doc["rows"].items():
        assert row["pixel_grad_scale"] > 0
        assert row["max_abs_diff_pixel_grad"] <= 1e-5 * row["pixel_grad_scale"], name
        assert row["iteration_s"] == row["forward_s"] + row["backward_s"] > 0
    assert doc["target"]["measured"] == doc["rows"]["native"]["iteration_over_plain"]
    assert doc["target"]["met"] == (doc["target"]["measured"] <= 3.0)


def test_variant_models_share_parameter_values(bench):
    from mdw_kit.models import build_model
    from mdw_kit.models.retrieval import get_flat
    base = build_model("convnet3", text_dim=12, image_size=16)
    x, t = torch.rand(3, 3, 16, 16), torch.randn(3, 12)
    for v in bench.VARIANTS:
        m = bench.variant_model(base, v)
        assert torch.equal(get_flat(m), get_flat(base)), v
        assert torch.allclose(m(x, t), base(x, t), atol=1e-5), v
    swapped = bench.variant_model(base, "relu_mask")
    assert not any(isinstance(mod, torch.nn.ReLU) for mod in swapped.tower.trainable)
