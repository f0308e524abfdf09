"""Selection on validation for the distillation loop: score candidate sets, keep and restore the best.

With ``DistillConfig.select_every > 0`` the :class:`~mdw_kit.distill.distiller.Distiller` scores its
set at the start, every ``select_every`` iterations and at the end by the best validation R-sum of
fresh models trained on it, and returns the best check (the start included). This module holds
those steps as a mixin of the loop; the scores never touch the test split.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("mdw_kit.distill.distiller")


class ValidationSelection:
    """Mixin of :class:`~mdw_kit.distill.distiller.Distiller`: the validation checks and the best copy."""

    def validation_rsum(self) -> float:
        """Mean best validation R-sum of ``select_seeds`` fresh models trained on the current set."""
        from mdw_kit.evaluation.protocol import EvalConfig, evaluate_distilled
        model_cfg = self._model_config_dict()
        if model_cfg is None:
            raise ValueError("selection on validation needs a model config (pass model_cfg, not a bare module)")
        ecfg = EvalConfig(epochs=self.cfg.select_epochs, eval_every=max(1, self.cfg.select_epochs // 15),
                          device=str(self.device))
        seeds = list(range(self.cfg.select_seeds))
        return float(evaluate_distilled(self.syn, model_cfg, self.val, self.val, seeds=seeds, cfg=ecfg)
                     ["val_mean"]["R-sum"])

    def _select(self, it: int) -> float:
        """Score the current set (and, with ``select_start_pairs``, its start-pairs variant: the
        current ``P~`` and rates on the starting pixels and texts) on val; keep a copy of the best
        candidate so far (earliest on ties, the set before its variant). Returns the set's score."""
        score = self._consider(it, "set", self.validation_rsum(), self.syn.state_dict())
        if self.cfg.select_start_pairs and it > 0:
            current = {k: v.detach().clone() for k, v in self.syn.state_dict().items()}
            pixels, text = self.syn.starting_pairs(self.real_images, self.real_text)
            variant = {**current, "images": pixels.to(self.device), "text": text.to(self.device)}
            self.syn.load_state_dict(variant)
            try:
                variant_score = self.validation_rsum()
            finally:
                self.syn.load_state_dict(current)
            self._consider(it, "start_pairs", variant_score, variant)
        return score

    def _consider(self, it: int, kind: str, score: float, state: dict[str, torch.Tensor]) -> float:
        """Record ``score`` of candidate ``kind``; keep a CPU copy of ``state`` if it is the best so far."""
        sel = self.selection
        sel.setdefault("scores" if kind == "set" else "start_pairs_scores", []).append([int(it), score])
        if sel["best_val"] is None or score > sel["best_val"]:
            sel["best_val"], sel["best_iteration"], sel["best_kind"] = score, int(it), kind
            self._best = {k: v.detach().cpu().clone() for k, v in state.items()}
        return score

    def _restore_best(self) -> None:
        """Make the set the one of the best validation check; region maps after it are dropped."""
        sel, it = self.selection, self.selection["best_iteration"]
        kind = sel.get("best_kind", "set")
        self.syn.meta["selection"] = {"best_iteration": it, "best_kind": kind, "best_val_rsum": sel["best_val"],
                                      "val_rsum_by_iteration": sel["scores"],
                                      "select_epochs": self.cfg.select_epochs, "select_seeds": self.cfg.select_seeds}
        if self.cfg.select_start_pairs:
            self.syn.meta["selection"]["start_pairs_val_rsum_by_iteration"] = sel.get("start_pairs_scores", [])
        if (it == self.iteration and kind == "set") or self._best is None:
            return
        self.syn.load_state_dict({k: v.to(self.device) for k, v in self._best.items()})
        self.syn.map_history = [(i, m) for i, m in self.syn.map_history if i <= it]
        if self.cfg.save_maps_every:
            self._record_maps(it)
        what = "the set" if kind == "set" else "the starting pixels and texts with the P~ and rates"
        msg = (f"selected {what} of iteration {it} on validation (R-sum {sel['best_val']:.1f}; "
               f"the set of the last iteration {self.iteration}: {sel['scores'][-1][1]:.1f})")
        log.info(msg)
        if self.run_dir is not None:
            self.run_dir.log(msg)


__all__ = ["ValidationSelection"]
