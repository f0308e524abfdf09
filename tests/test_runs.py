"""Run folders: orphaned temporary files, file modes, command and provenance checks, thread counts."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from mdw_kit.runs import (RunDir, RunFolderError, check_run_folder, check_writable, clean_tmp, content_hash,
                          open_run, write_json)


def test_artifacts_get_the_users_file_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        RunDir(tmp_path).save_tensors("t.safetensors", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.json", "t.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_orphaned_tmp_files_are_removed_when_the_folder_is_opened_again(tmp_path):
    run = open_run(tmp_path / "r", "train", {}, {"data": "d"})
    (run.path / "checkpoints").mkdir()
    orphan = run.path / "checkpoints" / ".distill.safetensors.x1y2.tmp"
    orphan.write_bytes(b"half")
    open_run(run.path, "train", {}, {"data": "d"})
    assert not orphan.exists()
    assert not [p for p in run.path.rglob("*.tmp")]


def test_clean_tmp_keeps_young_files_under_a_multi_process_launch(tmp_path, monkeypatch):
    young = tmp_path / ".index.json.abc.tmp"
    young.write_text("{")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert clean_tmp(tmp_path) == [] and young.exists()
    os.utime(young, (0, 0))
    assert clean_tmp(tmp_path) == [young]


def test_out_holding_something_else_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no config.json"):
        check_run_folder(tmp_path, "data")
    write_json(tmp_path / "config.json", {"command": "train"})
    with pytest.raises(RunFolderError, match="run folder of 'mdw train', not of 'mdw buffer'"):
        check_run_folder(tmp_path, "buffer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
    assert check_run_folder(tmp_path, "train") == {"command": "train"}


def test_a_rerun_with_another_buffer_is_refused_by_name_and_changes_nothing(tmp_path):
    run = open_run(tmp_path / "r", "distill", {"budget": 10}, {"buffer": "aaaa", "data": "d"})
    before = (run.path / "config.json").read_bytes()
    with pytest.raises(RunFolderError, match=r"another buffer \(aaaa there, bbbb now\)"):
        open_run(run.path, "distill", {"budget": 20}, {"buffer": "bbbb", "data": "d"})
    assert (run.path / "config.json").read_bytes() == before
    legacy = tmp_path / "old"
    write_json(legacy / "config.json", {"command": "distill"})
    with pytest.raises(RunFolderError, match="records no provenance"):
        open_run(legacy, "distill", {}, {"buffer": "aaaa"})


def test_unwritable_or_full_out_is_said_before_the_work(tmp_path, monkeypatch):
    import errno
    with pytest.raises(RunFolderError, match="disk is full"):
        check_writable(tmp_path, need_bytes=1 << 62)
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        check_run_folder(tmp_path / "f", "data")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RunFolderError, match=r"--out '.*/run' is not writable: No space left on device"):
        check_writable(tmp_path / "run")
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the probe is gone
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(RunFolderError, match=r"is not writable: Permission denied"):
                check_writable(ro / "run")
        finally:
            ro.chmod(0o700)


def test_content_hash_of_a_buffer_folder_follows_its_index(tmp_path):
    write_json(tmp_path / "index.json", {"runs": [{"sha256": "1"}]})
    first = content_hash(tmp_path)
    write_json(tmp_path / "index.json", {"runs": [{"sha256": "2"}]})
    assert content_hash(tmp_path) != first and len(first) == 16


def tiny_distiller(run_dir, iterations: int):
    from torch import nn

    from mdw_kit.distill.distiller import DistillConfig, Distiller
    from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
    torch.manual_seed(0)
    tower = ImageTower(nn.Identity(), nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.AvgPool2d(2)),
                       6, pool="flatten", map_size=4)
    model = RetrievalModel(tower, text_dim=12, embed_dim=10)
    g = torch.Generator().manual_seed(0)
    start = get_flat(model)
    walks = [torch.stack([start + 0.02 * e * torch.randn(start.shape, generator=g) for e in range(5)])
             for _ in range(2)]
    cfg = DistillConfig(num_pairs=10, iterations=iterations, syn_steps=2, segment_epochs=1, max_start_epoch=3,
                        batch_syn=5, lr_init=0.05, device="cpu", progress=False, save_maps_every=0, ceo_beta=0.0,
                        checkpoint_every=1, seed=3)
    return Distiller(cfg, walks, model, torch.rand(30, 3, 8, 8, generator=g), torch.randn(30, 12, generator=g),
                     run_dir=run_dir)


def test_checkpoint_records_threads_and_a_resume_with_another_count_says_so(tmp_path):
    threads = torch.get_num_threads()
    d = tiny_distiller(run_dir=tmp_path, iterations=2)
    d.run()
    assert d.run_dir.load_tensors("checkpoints/distill.safetensors")[1]["threads"] == threads
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(UserWarning, match=rf"written with {threads} torch thread\(s\), resumed with {threads + 1}"):
            tiny_distiller(run_dir=tmp_path, iterations=3).run()
    finally:
        torch.set_num_threads(threads)
    assert "resumed with" in (tmp_path / "log.txt").read_text()
