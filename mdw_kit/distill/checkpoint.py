"""Checkpoint and resume for the distillation loop.

``checkpoints/distill.safetensors`` in the run folder holds the distilled set, the optimiser states,
the RNG state, the CEO maps and the best validation copy; its JSON header the iteration, the
settings, the history and the thread count. It is written atomically every ``checkpoint_every``
iterations; a new :class:`~mdw_kit.distill.distiller.Distiller` on the same folder continues from
it, and refuses by name a checkpoint written with other result-changing settings.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mdw_kit.distill.synthetic import DistilledSet
from mdw_kit.runs import ArtifactError, RunDir

CHECKPOINT = "checkpoints/distill.safetensors"
RESUMABLE_CHANGES = ("iterations", "iterations_per_100_pairs", "min_iterations", "checkpoint_every", "device",
                     "progress", "max_recoveries")


class CheckpointResume:
    """Mixin of :class:`~mdw_kit.distill.distiller.Distiller`: :meth:`save_checkpoint` and the resume."""

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/distill.safetensors`` atomically (needs a ``run_dir``)."""
        if self.run_dir is None:
            raise ValueError("save_checkpoint needs a run_dir")
        tensors = {f"syn.{k}": v for k, v in self.syn.tensors().items()}
        tensors["rng"] = self.gen.get_state()
        if self.ceo_maps is not None:
            tensors["ceo_maps"] = self.ceo_maps
        opt_meta = {}
        for name, opt in self.opts.items():
            t, opt_meta[name] = _opt_to_tensors(opt.state_dict())
            tensors.update({f"opt.{name}.{k}": v for k, v in t.items()})
        if self._best is not None:
            tensors.update({f"best.{k}": v for k, v in self._best.items()})
        meta = {"iteration": self.iteration, "recoveries": self.recoveries, "config": self.cfg.to_dict(),
                "syn_config": self.syn.config(), "optimisers": opt_meta, "history": self.history,
                "selection": self.selection, "threads": torch.get_num_threads()}
        return self.run_dir.save_tensors(CHECKPOINT, tensors, meta)

    def _resume(self) -> bool:
        if self.run_dir is None or not self.run_dir.exists(CHECKPOINT):
            return False
        tensors, meta = self.run_dir.load_tensors(CHECKPOINT)
        self._check_resume_config(meta.get("config", {}))
        _warn_threads(self.run_dir, meta.get("threads"))
        syn_t = {k[len("syn."):]: v for k, v in tensors.items() if k.startswith("syn.")}
        self.syn = DistilledSet._from_saved(meta["syn_config"], syn_t, self.run_dir / CHECKPOINT).to(self.device)
        self._make_optimisers()
        for name, opt in self.opts.items():
            sub = {k[len(f"opt.{name}."):]: v for k, v in tensors.items() if k.startswith(f"opt.{name}.")}
            opt.load_state_dict(_opt_from_tensors(sub, meta["optimisers"][name], self.device))
        self.gen.set_state(tensors["rng"])
        self.ceo_maps = tensors.get("ceo_maps")
        self.iteration, self.recoveries = int(meta["iteration"]), int(meta["recoveries"])
        self.history = list(meta["history"])
        self.selection = meta.get("selection") or {"scores": [], "best_iteration": None, "best_val": None}
        best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
        self._best = best or None
        if self.run_dir is not None:
            self.run_dir.log(f"distillation resumed from iteration {self.iteration}")
        return True

    def _check_resume_config(self, saved: dict) -> None:
        diff = [k for k in self.cfg.changed_fields(saved) if k not in RESUMABLE_CHANGES]
        if diff:
            raise ArtifactError(f"{self.run_dir / CHECKPOINT}: checkpoint was written with other settings for "
                                f"{diff}; use a new run folder or the same settings")


def _warn_threads(run_dir: RunDir, saved: int | None) -> None:
    """Say so (warning + log line) when a checkpoint is resumed with another torch thread count."""
    now = torch.get_num_threads()
    if saved is not None and int(saved) != now:
        msg = (f"{run_dir / CHECKPOINT}: written with {saved} torch thread(s), resumed with {now}; "
               "the remaining iterations may differ in the last digits from an uninterrupted run")
        warnings.warn(msg, stacklevel=3)
        run_dir.log(msg)


def _opt_to_tensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state dict -> (tensors, JSON meta); non-tensor state values go into the meta."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _opt_from_tensors(tensors: dict[str, torch.Tensor], meta: dict, device: torch.device) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v
    return {"state": state, "param_groups": meta["param_groups"]}


__all__ = ["CheckpointResume", "CHECKPOINT", "RESUMABLE_CHANGES"]
