"""The expert-curve benchmark evaluates every saved state of every trajectory on validation."""
import pytest
import torch

import mdw_kit as mk
from mdw_kit.evaluation.metrics import evaluate_val
from mdw_kit.experts.buffer import _model_fn
from mdw_kit.models.retrieval import set_flat

BENCHMARK = "bench_expert_curve"


def test_curves_give_one_validation_rsum_per_state(bench, tmp_path):
    data = mk.prepare_data("shapes", noise=0.3, options={"num_images": 60, "image_size": 32}, encoder="hash")
    buf = mk.build_buffer(data, tmp_path / "buf", {"epochs": 3, "warmup_epochs": 1}, runs=1, progress=False)
    c = bench.curves(buf, data)
    assert len(c) == buf.num_trajectories and all(len(row) == buf.num_epochs + 1 for row in c)
    model = _model_fn(buf.model_config)(0)
    set_flat(model, buf.trajectory(0)[-1].float())
    with torch.no_grad():
        last = evaluate_val(model.eval(), data.val_split())["R-sum"]
    assert c[0][-1] == pytest.approx(last, abs=0.01)
    assert c[0][0] != c[0][-1]  # the states differ: training moved the expert
