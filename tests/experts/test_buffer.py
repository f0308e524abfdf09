"""The expert trajectory buffer: format, resume after a kill, two-process sharding, refusals."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdw_kit.data import inject_noise, load_source
from mdw_kit.experts.buffer import (INDEX_KEYS, build_buffer, load_buffer, noise_file, run_buffer, run_file,
                                    sha256_file)
from mdw_kit.experts.dual_track import DualTrackConfig
from mdw_kit.models import ModelConfig, param_shapes
from mdw_kit.runs import ArtifactError

TEXT_DIM = 32
MODEL = ModelConfig(tower="convnet2", text_dim=TEXT_DIM, image_size=32, embed_dim=32, tower_kw={"width": 8})
CFG = DualTrackConfig(epochs=2, warmup_epochs=1, batch_size=16, lr=2e-3, optimizer="adam", device="cpu",
                      progress=False)
RUNS = 2


def view_text(ds, dim=TEXT_DIM):
    """Self-made caption embeddings: a fixed random projection of the pooled pixels of the caption's image."""
    pooled = F.avg_pool2d(ds.images.float() / 255, 4).flatten(1)
    proj = torch.randn(pooled.shape[1], dim, generator=torch.Generator().manual_seed(0))
    return ((pooled - pooled.mean(0)) @ proj)[ds.pair_image[ds.source_caption]]


def make_data():
    ds = inject_noise(load_source("shapes", num_images=48, image_size=32, seed=0), rate=0.4, seed=1)
    rows = torch.as_tensor(np.flatnonzero(ds.pair_split == "train"))
    return ds, ds.pair_pixels(rows), view_text(ds)[rows], ds.clean[rows]


@pytest.fixture(scope="module")
def data():
    return make_data()


def _build(out, data, **kw):
    _, images, text, clean = data
    return build_buffer(out, MODEL, images, text, CFG, RUNS, "fp-demo", "view-text",
                        noise={"rate": 0.4, "seed": 1}, clean=clean, progress=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted single-process build."""
    return _build(tmp_path_factory.mktemp("ref") / "buf", data)


def test_format_contract(reference, data):
    buf = reference
    idx = json.loads((buf.path / "index.json").read_text())
    assert set(idx) == set(INDEX_KEYS)
    assert idx["version"] == 1 and idx["dtype"] == "float32" and idx["dual_track"] is True
    assert idx["noise"] == {"rate": 0.4, "seed": 1} and idx["data_fingerprint"] == "fp-demo"
    model = MODEL.build()
    assert idx["param_shapes"] == param_shapes(model)
    assert idx["num_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert [(e["run"], e["track"]) for e in idx["runs"]] == [(r, t) for r in range(RUNS) for t in "AB"]
    for e in idx["runs"]:
        assert e["file"] == run_file(e["run"], e["track"]) == f"run{e['run']:03d}_{e['track']}.safetensors"
        assert e["sha256"] == sha256_file(buf.path / e["file"]) and e["epochs"] == CFG.epochs
        assert e["torch_threads"] == torch.get_num_threads()  # recorded: another count sums in another order
    assert [e["seed"] for e in idx["runs"]] == [0, 1, 1000, 1001]
    assert buf.num_trajectories == 2 * RUNS and buf.num_epochs == CFG.epochs
    traj = buf.trajectory(3)
    assert traj.dtype == torch.float32 and traj.shape == (CFG.epochs + 1, idx["num_params"])
    assert not torch.equal(buf.trajectory(0), buf.trajectory(2))  # runs differ
    assert buf.size_bytes == idx["size_bytes"] > traj.numel() * 4 * buf.num_trajectories
    # clean probabilities per run and for the buffer
    n = len(data[3])
    assert len(buf.noise_reports) == RUNS and len(buf.noise_reports[0]) == n
    assert (buf.path / noise_file(0)).exists() and (buf.path / "consensus.safetensors").exists()
    expect = torch.stack([torch.as_tensor(r.p_clean) for r in buf.noise_reports]).mean(0).float()
    assert torch.allclose(buf.consensus_p_clean, expect, atol=1e-6)
    assert buf.consensus.summary()["noise_known"] and len(buf.consensus) == n
    assert load_buffer(buf.path, model=model, data_fingerprint="fp-demo").num_trajectories == 2 * RUNS


def test_kill_and_resume_equals_uninterrupted(tmp_path, data, reference):
    out = tmp_path / "buf"

    def kill(run, entries):
        if run == 0:
            raise KeyboardInterrupt("simulated kill after the first run")

    with pytest.raises(KeyboardInterrupt):
        _build(out, data, callback=kill)
    partial = json.loads((out / "index.json").read_text())
    assert [e["run"] for e in partial["runs"]] == [0, 0]
    with pytest.raises(ArtifactError, match="incomplete"):
        load_buffer(out)
    assert load_buffer(out, allow_incomplete=True).num_trajectories == 2

    done = []
    buf = _build(out, data, callback=lambda r, e: done.append(r))
    assert done == [1]  # the finished run was not redone
    for i in range(buf.num_trajectories):
        assert torch.equal(buf.trajectory(i), reference.trajectory(i))
    assert [e["sha256"] for e in buf.index["runs"]] == [e["sha256"] for e in reference.index["runs"]]
    assert torch.equal(buf.consensus_p_clean, reference.consensus_p_clean)


def _shard_worker(rank, world, init_file, out, threads):
    import torch.distributed as dist
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _build(out, make_data())
    finally:
        dist.destroy_process_group()


def test_two_process_sharding_writes_a_complete_equal_buffer(tmp_path, reference):
    import torch.multiprocessing as mp
    out = tmp_path / "sharded"
    # same thread count as the reference build, so the kernels reduce in the same order
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "rendezvous"), str(out), torch.get_num_threads()),
             nprocs=2, join=True)
    buf = load_buffer(out, model=MODEL.build(), data_fingerprint="fp-demo")
    assert buf.num_trajectories == reference.num_trajectories
    for i in range(buf.num_trajectories):
        assert torch.equal(buf.trajectory(i), reference.trajectory(i))
    assert [(e["run"], e["track"], e["seed"]) for e in buf.index["runs"]] == \
        [(e["run"], e["track"], e["seed"]) for e in reference.index["runs"]]


def test_rank_argument_without_process_group(tmp_path, data):
    out = tmp_path / "buf"
    assert _build(out, data, rank=1, world_size=2) is None  # run 1 only; rank 0's run is missing
    assert sorted(p.name for p in out.glob("run*_noise.safetensors")) == [noise_file(1)]
    buf = _build(out, data, rank=0, world_size=2)           # run 0: now complete
    assert buf is not None and buf.runs == [0, 1]


def test_wrong_fingerprint_and_param_shapes_are_refused(reference):
    with pytest.raises(ArtifactError, match="data_fingerprint"):
        load_buffer(reference.path, data_fingerprint="other-data")
    wider = ModelConfig(**{**MODEL.to_dict(), "embed_dim": 16}).build()
    with pytest.raises(ArtifactError, match="param_shapes.*image_proj"):
        load_buffer(reference.path, model=wider)


def test_truncated_missing_and_corrupt_files_are_refused(tmp_path, reference):
    out = tmp_path / "copy"
    shutil.copytree(reference.path, out)
    f = out / run_file(1, "B")
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="run001_B.safetensors.*sha256"):
        load_buffer(out)
    with pytest.raises(ArtifactError, match="run001_B.safetensors.*shape|run001_B.safetensors.*readable"):
        load_buffer(out, verify_hash=False)
    f.unlink()
    with pytest.raises(ArtifactError, match="run001_B.safetensors.*missing"):
        load_buffer(out)
    (out / "index.json").write_text("{\"version\": 1}")
    with pytest.raises(ArtifactError, match="missing field"):
        load_buffer(out)
    (out / "index.json").unlink()
    with pytest.raises(ArtifactError, match="index.json"):
        load_buffer(out)


def test_resume_redoes_a_damaged_run_and_refuses_other_settings(tmp_path, data, reference):
    out = tmp_path / "copy"
    shutil.copytree(reference.path, out)
    f = out / run_file(1, "A")
    f.write_bytes(f.read_bytes()[:-10])
    done = []
    buf = _build(out, data, callback=lambda r, e: done.append(r))
    assert done == [1] and torch.equal(buf.trajectory(2), reference.trajectory(2))
    with pytest.raises(ArtifactError, match="other settings"):
        build_buffer(out, MODEL, data[1], data[2], CFG, RUNS, "another-fingerprint", "view-text", progress=False)


def test_float16_storage_and_naive_single_track(tmp_path, data, reference):
    _, images, text, _ = data
    naive = DualTrackConfig(**{**CFG.to_dict(), "naive": True, "num_tracks": 1})
    buf = build_buffer(tmp_path / "naive", MODEL, images, text, naive, 1, "fp-demo", "view-text",
                       dtype="float16", progress=False)
    assert buf.index["dual_track"] is False and buf.index["dtype"] == "float16"
    assert [e["track"] for e in buf.entries] == ["A"]
    traj = buf.trajectory(0)
    assert traj.dtype == torch.float32
    assert torch.equal(traj[0], reference.trajectory(0)[0].half().float())  # same theta_0 (same seed)
    assert (buf.path / run_file(0, "A")).stat().st_size < (reference.path / run_file(0, "A")).stat().st_size
    with pytest.raises(ValueError, match="dtype"):
        build_buffer(tmp_path / "x", MODEL, images, text, CFG, 1, "fp", "t", dtype="bfloat16")


def test_run_buffer_from_a_dataset(tmp_path, data):
    ds, _, _, _ = data
    text = view_text(ds)
    buf = run_buffer(tmp_path, ds, text, MODEL, CFG, num_runs=1, text_encoder_name="view-text", progress=False)
    assert buf.path == tmp_path / "buffer" and buf.index["data_fingerprint"] == ds.fingerprint()
    assert buf.index["noise"] == {"rate": 0.4, "seed": 1}
    assert buf.consensus.summary()["true_noise_rate"] == pytest.approx(ds.split("train").noise_rate, abs=1e-6)
