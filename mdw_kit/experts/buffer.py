"""The expert trajectory buffer: dual-track (or naive) runs saved for trajectory matching.

Format (version 1), one folder:

- ``index.json``: ``{"version": 1, "model_config": ModelConfig dict, "data_fingerprint": str,
  "text_encoder": str, "noise": {"rate", "seed"}, "param_names": [...], "param_shapes": {...},
  "num_params": int, "dtype": "float32"|"float16", "dual_track": bool, "config": {...},
  "runs": [{"run", "track", "seed", "epochs", "file", "sha256", "torch_threads"}], "size_bytes": int}``
  (``torch_threads``: the CPU threads the run trained with; another count sums in another order,
  so the trajectories differ from the first rounding on).
  ``config`` holds the :class:`~mdw_kit.experts.dual_track.DualTrackConfig` dict plus
  ``num_runs`` and ``tracks``.
- ``run{r:03d}_{A|B}.safetensors``: tensor ``trajectory`` ``[E + 1, num_params]``
  (``theta_0 .. theta_E``, layout :func:`~mdw_kit.models.retrieval.trainable_names`).
- ``run{r:03d}_noise.safetensors``: ``p_clean_A`` / ``p_clean_B`` of run ``r`` at the end of its
  training, ``noise_rank_A`` / ``noise_rank_B`` (each track's loss rank, the continuous noise
  score) and ``true_clean`` where known; its header holds the run's index entries, so it
  is written last and marks the run complete.
- ``consensus.safetensors`` (``p_clean``, ``p_clean_A``, ``p_clean_B``: means over the runs)
  and the buffer's :class:`~mdw_kit.experts.report.NoiseReport` (``noise_report.*``).

Runs are written atomically and the index is rewritten after each, so a killed
build restarts from the finished runs; every run seeds everything from its own
seeds, so the result equals an uninterrupted build. With ``torch.distributed``
initialised (or ``rank`` / ``world_size`` given) rank ``k`` does the runs
``r % world_size == k`` and rank 0 writes the final index after a barrier.

Under a launcher (``torchrun``: ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` set) the process
group is initialised on first use (NCCL on GPU, one device per local rank; gloo on CPU).

Example:
    >>> import tempfile, torch
    >>> from mdw_kit.experts.dual_track import DualTrackConfig
    >>> from mdw_kit.models.towers import ModelConfig
    >>> mc = ModelConfig(tower="convnet3", text_dim=8, image_size=16)  # doctest: +SKIP
    >>> buf = build_buffer(tempfile.mkdtemp(), mc, torch.rand(16, 3, 16, 16), torch.randn(16, 8),
    ...                    DualTrackConfig(epochs=2, warmup_epochs=1, batch_size=8), num_runs=1,
    ...                    data_fingerprint="demo", text_encoder_name="random")  # doctest: +SKIP
    >>> buf.num_trajectories, tuple(buf.trajectory(0).shape)[0]  # doctest: +SKIP
    (2, 3)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mdw_kit.experts.dual_track import DualTrackConfig, DualTrackResult, train_dual_track
from mdw_kit.experts.report import NoiseReport, report_from_scores
from mdw_kit.models.retrieval import param_shapes, trainable_names
from mdw_kit.runs import ArtifactError, load_tensors, read_json, save_tensors, write_json
from mdw_kit.utils import progress as _progress

VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16}
INDEX_KEYS = ("version", "model_config", "data_fingerprint", "text_encoder", "noise", "param_names",
              "param_shapes", "num_params", "dtype", "dual_track", "config", "runs", "size_bytes")
SEED_STRIDE = 1000


# ------------------------------------------------------------------ naming
def run_file(run: int, track: str) -> str:
    """File name of one trajectory: ``run{r:03d}_{track}.safetensors``."""
    return f"run{run:03d}_{track}.safetensors"


def noise_file(run: int) -> str:
    """File name of a run's clean probabilities: ``run{r:03d}_noise.safetensors``."""
    return f"run{run:03d}_noise.safetensors"


def run_config(cfg: DualTrackConfig, run: int) -> DualTrackConfig:
    """The config of run ``run``: seeds shifted by ``1000 * run``, no inner progress bar.

    Example:
        >>> run_config(DualTrackConfig(seed_a=0, seed_b=1), 2).seed_b
        2001
    """
    return replace(cfg, seed_a=cfg.seed_a + SEED_STRIDE * run, seed_b=cfg.seed_b + SEED_STRIDE * run,
                   progress=False)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_cfg_dict(model_cfg: Any) -> dict[str, Any]:
    if isinstance(model_cfg, dict):
        return dict(model_cfg)
    return dict(model_cfg.to_dict())


def _model_fn(model_cfg: Any) -> Callable[[int], nn.Module]:
    """``seed -> model`` from a ModelConfig (or its dict)."""
    if isinstance(model_cfg, dict):
        from mdw_kit.models.towers import ModelConfig
        model_cfg = ModelConfig.from_dict(model_cfg)
    return lambda seed: model_cfg.build()


# ------------------------------------------------------------------ buffer
class ExpertBuffer:
    """A validated trajectory buffer on disk (see the module docstring for the format).

    Attributes:
        path: the folder.
        index: the parsed ``index.json``.
    """

    def __init__(self, path: str | Path, index: dict[str, Any], cache_bytes: int = 2 << 30):
        self.path, self.index = Path(path), index
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_bytes = int(cache_bytes)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The index's run entries (one per trajectory)."""
        return self.index["runs"]

    @property
    def num_trajectories(self) -> int:
        return len(self.entries)

    @property
    def num_epochs(self) -> int:
        """``E`` of the trajectories (they hold ``E + 1`` states)."""
        return int(self.entries[0]["epochs"]) if self.entries else 0

    @property
    def size_bytes(self) -> int:
        return int(self.index["size_bytes"])

    @property
    def model_config(self) -> dict[str, Any]:
        return self.index["model_config"]

    def trajectory(self, i: int) -> torch.Tensor:
        """Trajectory ``i`` as float32 ``[E + 1, num_params]`` (kept in memory up to ``cache_bytes``)."""
        if not 0 <= i < self.num_trajectories:
            raise IndexError(f"trajectory {i} out of range: the buffer holds {self.num_trajectories}")
        if i in self._cache:
            return self._cache[i]
        tensors, _ = load_tensors(self.path / self.entries[i]["file"])
        traj = tensors["trajectory"].float()
        while self._cache and sum(t.numel() * 4 for t in self._cache.values()) + traj.numel() * 4 \
                > self._cache_bytes:
            self._cache.pop(next(iter(self._cache)))
        self._cache[i] = traj
        return traj

    @property
    def runs(self) -> list[int]:
        return sorted({int(e["run"]) for e in self.entries})

    @property
    def noise_reports(self) -> list[NoiseReport]:
        """One :class:`NoiseReport` per run (final clean probabilities of its tracks)."""
        return [_run_report(self.path, r, self.index) for r in self.runs]

    @property
    def consensus(self) -> NoiseReport:
        """The buffer's report: each track's clean probability averaged over the runs."""
        return NoiseReport.load(self.path)

    @property
    def consensus_p_clean(self) -> torch.Tensor:
        """``[N]`` consensus clean probability (mean over runs and tracks), float32."""
        return load_tensors(self.path / "consensus.safetensors")[0]["p_clean"].float()

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"ExpertBuffer({str(self.path)!r}, trajectories={self.num_trajectories}, "
                f"epochs={self.num_epochs}, params={self.index['num_params']}, "
                f"dual_track={self.index['dual_track']}, {self.size_bytes / 2**20:.1f} MiB)")


def _run_report(path: Path, run: int, index: dict[str, Any]) -> NoiseReport:
    tensors, meta = load_tensors(path / noise_file(run))
    a = tensors["p_clean_A"]
    tc = tensors.get("true_clean")
    return report_from_scores(a, tensors.get("p_clean_B", a), index["config"].get("threshold", 0.5),
                              None if tc is None else tc.bool(), meta={"run": run},
                              noise_rank_a=tensors.get("noise_rank_A"), noise_rank_b=tensors.get("noise_rank_B"))


# ------------------------------------------------------------------ writing
def _header(model_cfg: Any, model: nn.Module, cfg: DualTrackConfig, num_runs: int, data_fingerprint: str,
            text_encoder_name: str, noise: dict | None, dtype: str) -> dict[str, Any]:
    """Everything of the index except ``runs`` and ``size_bytes``."""
    shapes = param_shapes(model)
    return {"version": VERSION, "model_config": _model_cfg_dict(model_cfg),
            "data_fingerprint": str(data_fingerprint), "text_encoder": str(text_encoder_name),
            "noise": {"rate": (noise or {}).get("rate"), "seed": (noise or {}).get("seed")},
            "param_names": trainable_names(model), "param_shapes": shapes,
            "num_params": int(sum(torch.Size(s).numel() for s in shapes.values())), "dtype": dtype,
            "dual_track": not cfg.naive,
            "config": dict(cfg.to_dict(), num_runs=int(num_runs), tracks=list(cfg.tracks))}


def _build_key(header: dict[str, Any]) -> str:
    """Hash of the settings a run depends on: a resumed build must match it."""
    keep = {k: v for k, v in header.items() if k not in ("runs", "size_bytes")}
    keep["config"] = {k: v for k, v in keep["config"].items() if k not in ("progress", "device")}
    if isinstance(keep["config"].get("train"), dict):  # the device does not change a trajectory
        keep["config"]["train"] = {k: v for k, v in keep["config"]["train"].items() if k != "device"}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _write_run(out: Path, run: int, res: DualTrackResult, header: dict[str, Any], key: str,
               clean: torch.Tensor | None) -> list[dict[str, Any]]:
    """Trajectory files of one run, then its noise file (the completion marker)."""
    entries = []
    for track, traj in res.trajectories.items():
        name = run_file(run, track)
        save_tensors(out / name, {"trajectory": traj.to(DTYPES[header["dtype"]])},
                     {"run": run, "track": track, "build_key": key})
        entries.append({"run": run, "track": track, "seed": res.config.seed(track),
                        "epochs": int(traj.shape[0] - 1), "file": name, "sha256": sha256_file(out / name),
                        "torch_threads": torch.get_num_threads()})
    p = res.p_clean_at()
    tensors = {f"p_clean_{t}": v.double() for t, v in p.items()}
    tensors.update({f"noise_rank_{t}": v.double() for t, v in res.noise_rank_at().items()})
    if clean is not None:
        tensors["true_clean"] = clean.to(torch.uint8)
    meta = {"run": run, "build_key": key, "entries": entries, "wall_time_s": res.wall_time_s,
            "final_epoch": res.final_epoch, "detection": res.detection[-1:] if res.detection else []}
    save_tensors(out / noise_file(run), tensors, meta)
    return entries


def _finished_runs(out: Path, key: str, num_runs: int, verify: bool = True) -> dict[int, list[dict]]:
    """Runs whose noise file exists, matches ``key`` and whose trajectory files check out."""
    done: dict[int, list[dict]] = {}
    for r in range(num_runs):
        if not (out / noise_file(r)).exists():
            continue
        try:
            _, meta = load_tensors(out / noise_file(r))
        except ArtifactError:
            continue  # a partial marker: the run is redone
        if meta.get("build_key") != key:
            raise ArtifactError(f"{out / noise_file(r)} was written by a build with other settings "
                                f"(build key {meta.get('build_key')} != {key}); use a fresh folder")
        entries = meta["entries"]
        if verify and not all((out / e["file"]).exists() and sha256_file(out / e["file"]) == e["sha256"]
                              for e in entries):
            continue
        done[r] = entries
    return done


def _write_index(out: Path, header: dict[str, Any], done: dict[int, list[dict]]) -> dict[str, Any]:
    """Rewrite ``index.json`` (and the consensus report) from the finished runs."""
    runs = [e for r in sorted(done) for e in done[r]]
    size = sum((out / e["file"]).stat().st_size for e in runs)
    size += sum((out / noise_file(r)).stat().st_size for r in done)
    index = dict(header, runs=runs, size_bytes=int(size))
    if done:
        _write_consensus(out, sorted(done), header["config"].get("threshold", 0.5), header)
    write_json(out / "index.json", index)
    return index


def _write_consensus(out: Path, runs: list[int], threshold: float, header: dict[str, Any]) -> None:
    """``consensus.safetensors`` and the buffer's noise report: per-track means over ``runs``."""
    loaded = [load_tensors(out / noise_file(r))[0] for r in runs]
    a = torch.stack([t["p_clean_A"] for t in loaded]).mean(0)
    b = torch.stack([t.get("p_clean_B", t["p_clean_A"]) for t in loaded]).mean(0)
    save_tensors(out / "consensus.safetensors", {"p_clean": 0.5 * (a + b), "p_clean_A": a, "p_clean_B": b},
                 {"runs": runs})
    tc = loaded[0].get("true_clean")
    ranks: dict[str, torch.Tensor | None] = {"A": None, "B": None}
    if all("noise_rank_A" in t for t in loaded):  # mean rank over the runs (buffers before ranks: none)
        ranks["A"] = torch.stack([t["noise_rank_A"] for t in loaded]).mean(0)
        ranks["B"] = torch.stack([t.get("noise_rank_B", t["noise_rank_A"]) for t in loaded]).mean(0)
    report_from_scores(a, b, threshold, None if tc is None else tc.bool(),
                       meta={"runs": runs, "data_fingerprint": header["data_fingerprint"]},
                       noise_rank_a=ranks["A"], noise_rank_b=ranks["B"]).save(out)


def _init_from_launcher() -> None:
    """Initialise the process group from a launcher's environment (``torchrun``), if any."""
    import os

    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _dist_rank(rank: int, world_size: int) -> tuple[int, int, bool]:
    """(rank, world size, distributed?) from an initialised process group, else the arguments."""
    import torch.distributed as dist
    if dist.is_available() and not dist.is_initialized() and (rank, world_size) == (0, 1):
        _init_from_launcher()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), True
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    return rank, world_size, False


def _check_existing(out: Path, header: dict[str, Any], key: str) -> None:
    """A folder holding another build's index is refused, naming the first differing field."""
    if not (out / "index.json").exists():
        return
    old = read_json(out / "index.json")
    if _build_key({k: old.get(k) for k in header}) == key:
        return
    diff = [k for k in header if old.get(k) != header[k]]
    raise ArtifactError(f"{out / 'index.json'} belongs to a buffer built with other settings "
                        f"(differs in {diff or 'config'}); use a fresh folder or the same settings")


def build_buffer(out_dir: str | Path, model_cfg: Any, train_images: torch.Tensor, train_text: torch.Tensor,
                 cfg: DualTrackConfig, num_runs: int, data_fingerprint: str, text_encoder_name: str,
                 noise: dict | None = None, dtype: str = "float32", clean: torch.Tensor | None = None,
                 rank: int = 0, world_size: int = 1, progress: bool = True,
                 callback: Callable[[int, list[dict]], Any] | None = None,
                 groups: torch.Tensor | None = None) -> "ExpertBuffer | None":
    """Train ``num_runs`` dual-track (or naive) runs and save their trajectories; resumable, shardable.

    Args:
        out_dir: the buffer folder (created; finished runs found there are kept).
        model_cfg: a ``ModelConfig`` (``.build()``, ``.to_dict()``) or its dict.
        train_images, train_text: training pairs, as :func:`train_dual_track`.
        cfg: :class:`DualTrackConfig`; run ``r`` shifts both seeds by ``1000 * r``.
        num_runs: runs to train (each gives one trajectory per track).
        data_fingerprint: identity of the training data (``PairDataset.fingerprint()``).
        text_encoder_name: name of the frozen text encoder the embeddings came from.
        noise: ``{"rate", "seed"}`` of the injected noise (recorded only).
        dtype: storage dtype of the trajectories, ``"float32"`` or ``"float16"``.
        clean: optional ground truth flags (kept for the reports).
        rank, world_size: this process's shard when no process group is initialised.
        progress: progress bar over this rank's runs.
        callback: ``callback(run, entries)`` after each run is written.
        groups: optional ``[N]`` image index per pair (see :func:`train_dual_track`).

    Returns:
        the :class:`ExpertBuffer` (loaded and validated) when complete; without a process group
        a rank whose peers are still running returns None.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    rank, world_size, distributed = _dist_rank(rank, world_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_fn = _model_fn(model_cfg)
    header = _header(model_cfg, model_fn(0), cfg, num_runs, data_fingerprint, text_encoder_name, noise, dtype)
    key = _build_key(header)
    _check_existing(out, header, key)
    clean = None if clean is None else torch.as_tensor(clean, dtype=torch.bool).reshape(-1)
    done = _finished_runs(out, key, num_runs)
    todo = [r for r in range(num_runs) if r % world_size == rank and r not in done]
    for r in _progress(todo, desc="expert runs" if world_size == 1 else f"expert runs (rank {rank})", total=len(todo), enabled=None if progress else False):
        res = train_dual_track(model_fn, train_images, train_text, run_config(cfg, r), clean=clean,
                               groups=groups)
        entries = _write_run(out, r, res, header, key, clean)
        if not distributed or rank == 0:
            _write_index(out, header, _finished_runs(out, key, num_runs, verify=False))
        if callback is not None:
            callback(r, entries)
    return _finish(out, header, key, num_runs, rank, distributed)


def _finish(out: Path, header: dict, key: str, num_runs: int, rank: int, distributed: bool):
    """Barrier, final index by rank 0, barrier; the loaded buffer when complete."""
    if distributed:
        import torch.distributed as dist
        dist.barrier()
    done = _finished_runs(out, key, num_runs)
    if rank == 0 or not distributed:
        _write_index(out, header, done)
    if distributed:
        dist.barrier()
    if len(done) < num_runs:
        return None
    return load_buffer(out, data_fingerprint=header["data_fingerprint"])


# ------------------------------------------------------------------ loading
def _check_index(path: Path, index: Any, data_fingerprint: str | None) -> None:
    where = path / "index.json"
    if not isinstance(index, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    missing = [k for k in INDEX_KEYS if k not in index]
    if missing:
        raise ArtifactError(f"{where}: missing field(s) {missing}")
    if index["version"] != VERSION:
        raise ArtifactError(f"{where}: field 'version' is {index['version']}; this mdw-kit reads {VERSION}")
    if index["dtype"] not in DTYPES:
        raise ArtifactError(f"{where}: field 'dtype' is {index['dtype']!r}; expected one of {sorted(DTYPES)}")
    if data_fingerprint is not None and index["data_fingerprint"] != data_fingerprint:
        raise ArtifactError(f"{where}: field 'data_fingerprint' is {index['data_fingerprint']!r} but the data "
                            f"given has {data_fingerprint!r}; the buffer was trained on other data")


def _check_model(path: Path, index: dict, model: nn.Module) -> None:
    where = path / "index.json"
    want = param_shapes(model)
    have = {k: list(v) for k, v in index["param_shapes"].items()}
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            raise ArtifactError(f"{where}: field 'param_shapes' entry '{name}' is {have.get(name)} but the "
                                f"model's trainable parameter has {want.get(name)}; the buffer was "
                                "trained with another model configuration")
    if list(index["param_names"]) != trainable_names(model):
        raise ArtifactError(f"{where}: field 'param_names' order differs from the model's trainable "
                            "parameters; the flat layout would not match")


def _check_file(path: Path, entry: dict, num_params: int, verify_hash: bool) -> None:
    f = path / entry["file"]
    if not f.exists():
        raise ArtifactError(f"{f}: trajectory file of run {entry['run']} track {entry['track']} is missing")
    if verify_hash and sha256_file(f) != entry["sha256"]:
        raise ArtifactError(f"{f}: sha256 differs from index.json (truncated or modified file); "
                            "rerun build_buffer on this folder to redo the run")
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(f), framework="pt") as h:
            shape = list(h.get_slice("trajectory").get_shape())
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{f}: not a readable trajectory file ({e})") from e
    want = [int(entry["epochs"]) + 1, int(num_params)]
    if shape != want:
        raise ArtifactError(f"{f}: tensor 'trajectory' has shape {shape}, expected {want}")


def load_buffer(path: str | Path, model: nn.Module | None = None, data_fingerprint: str | None = None,
                verify_hash: bool = True, allow_incomplete: bool = False) -> ExpertBuffer:
    """Open and validate a buffer; any mismatch is an :class:`ArtifactError` naming the file / field.

    Checks: ``index.json`` present and complete; every trajectory file present, its sha256 (unless
    ``verify_hash=False``) and shape right; the param shapes equal ``model``'s trainable parameter
    shapes (when given); the data fingerprint matches (when given); all runs present (unless
    ``allow_incomplete``).

    Example:
        >>> load_buffer("/nonexistent/buffer")
        Traceback (most recent call last):
        ...
        mdw_kit.runs.ArtifactError: missing file: /nonexistent/buffer/index.json
    """
    path = Path(path)
    index = read_json(path / "index.json")
    _check_index(path, index, data_fingerprint)
    if model is not None:
        _check_model(path, index, model)
    for entry in index["runs"]:
        _check_file(path, entry, index["num_params"], verify_hash)
    want = int(index["config"].get("num_runs", 0)) * len(index["config"].get("tracks", ["A"]))
    if not allow_incomplete and len(index["runs"]) < want:
        raise ArtifactError(f"{path / 'index.json'}: buffer incomplete, {len(index['runs'])} of {want} "
                            "trajectories; rerun build_buffer on this folder to finish it")
    if not index["runs"]:
        raise ArtifactError(f"{path / 'index.json'}: the buffer holds no trajectories")
    return ExpertBuffer(path, index)


def run_buffer(run_dir: str | Path, ds: Any, text_emb: torch.Tensor, model_cfg: Any, cfg: DualTrackConfig,
               num_runs: int, text_encoder_name: str, data_fingerprint: str | None = None,
               dtype: str = "float32", rank: int = 0, world_size: int = 1,
               progress: bool = True) -> ExpertBuffer | None:
    """Build (or resume) the buffer of the training pairs of ``ds`` in ``run_dir/buffer``.

    ``data_fingerprint`` defaults to ``ds.fingerprint()``; the noise record comes from
    ``ds.meta["noise"]`` and the ground truth from ``ds.clean`` when the noise is known.

    Example:
        >>> run_buffer.__name__  # see tests/test_buffer.py for a full run
        'run_buffer'
    """
    import numpy as np
    if int(text_emb.shape[0]) != len(ds):
        raise ValueError(f"text_emb has {int(text_emb.shape[0])} rows but the dataset has {len(ds)} captions")
    tr = torch.as_tensor(np.flatnonzero(ds.pair_split == "train"))
    noise = ds.meta.get("noise") or {}
    return build_buffer(Path(run_dir) / "buffer", model_cfg, ds.pair_inputs(tr), text_emb[tr], cfg, num_runs,
                        data_fingerprint or ds.fingerprint(), text_encoder_name,
                        noise={"rate": noise.get("rate"), "seed": noise.get("seed")}, dtype=dtype,
                        clean=ds.clean[tr] if ds.noise_known else None, rank=rank, world_size=world_size,
                        progress=progress, groups=ds.pair_image[tr])
