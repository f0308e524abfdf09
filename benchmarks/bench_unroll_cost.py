"""Where the time of an unrolled matching iteration goes, and whether other op choices cut it.

The distillation benchmark reports one figure: an iteration (``match_loss`` + ``backward``) costs
about 3.7x the plain SGD steps it unrolls, against a target of 3x. This script splits that figure
for the default CPU tower (ConvNet-3 at 32 px, 100 synthetic pairs, 10 student steps on batches of
50, MiniLM-sized texts) into

- ``plain``: the ``N`` plain SGD steps (:func:`mdw_kit.distill.matching.time_plain_steps`);
- ``forward``: ``match_loss`` (the student steps, with ``create_graph`` in ``"unroll"`` mode);
- ``backward``: ``loss.backward()`` to the images, texts, ``P~`` and rates;

and times the same iteration with the image tower's ops swapped for mathematically equal ones
whose second derivatives PyTorch builds differently:

- ``relu_mask``: ``x * (x > 0)`` instead of ``relu`` (no zero tensor for the second derivative);
- ``pool_reshape``: 2x2 average pooling as a reshape and a sum;
- ``norm_manual``: instance norm written out (mean, variance, scale) instead of ``group_norm``;
- ``channels_last``: the synthetic images in NHWC layout (the student's conv weights are views
  of a flat parameter vector, so they stay NCHW).

Each variant's pixel gradient is compared with the native one (``max_abs_diff``), so a faster
variant that computed something else would show. Everything is timed in one process, variants
interleaved, and the median of ``--reps`` repetitions is reported.

Usage::

    python benchmarks/bench_unroll_cost.py --threads 1
    python benchmarks/bench_unroll_cost.py --pairs 8 --steps 2 --batch 4 --image-size 16 --reps 1   # seconds
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("native", "relu_mask", "pool_reshape", "norm_manual", "channels_last")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=100, help="synthetic pairs (default 100)")
    p.add_argument("--steps", type=int, default=10, help="student steps per iteration (default 10)")
    p.add_argument("--batch", type=int, default=50, help="synthetic pairs per student step (default 50)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--text-dim", type=int, default=384, help="text embedding size (MiniLM: 384)")
    p.add_argument("--mode", choices=("unroll", "constant_memory"), default="unroll")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (median reported)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unroll_cost.json")
    return p.parse_args(argv)


def _modules():
    """Drop-in replacements (same parameter names) for the tower's ReLU, AvgPool2d and GroupNorm."""
    import torch
    from torch import nn

    class ReluMask(nn.Module):
        def forward(self, x):
            return x * (x > 0).to(x.dtype)

    class PoolReshape(nn.Module):
        def __init__(self, k: int):
            super().__init__()
            self.k = k

        def forward(self, x):
            b, c, h, w = x.shape
            k = self.k
            return x.reshape(b, c, h // k, k, w // k, k).sum(dim=(3, 5)) / (k * k)

    class NormManual(nn.GroupNorm):
        def forward(self, x):
            if self.num_groups != self.num_channels:
                return super().forward(x)
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            scale = torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)
            return x * scale + (self.bias.view(1, -1, 1, 1) - mean * scale)

    return ReluMask, PoolReshape, NormManual


def variant_model(model, variant: str):
    """A copy of ``model`` whose image tower uses ``variant``'s ops (same parameters, same values)."""
    from torch import nn
    ReluMask, PoolReshape, NormManual = _modules()
    m = copy.deepcopy(model)
    seq = m.tower.trainable
    for i, mod in enumerate(list(seq)):
        if variant == "relu_mask" and isinstance(mod, nn.ReLU):
            seq[i] = ReluMask()
        elif variant == "pool_reshape" and isinstance(mod, nn.AvgPool2d):
            seq[i] = PoolReshape(int(mod.kernel_size))
        elif variant == "norm_manual" and isinstance(mod, nn.GroupNorm):
            new = NormManual(mod.num_groups, mod.num_channels, mod.eps, mod.affine)
            new.load_state_dict(mod.state_dict())
            seq[i] = new
    return m  # "channels_last" changes the images only: the student's weights come from a flat vector


def reference_variant(variants: list[str]) -> str:
    """What gradients and plain steps are compared with: ``native`` when timed, else the first."""
    return "native" if "native" in variants else variants[0]


def measure(args: argparse.Namespace) -> dict:
    import torch

    from mdw_kit.distill.matching import match_loss, sample_batches, time_plain_steps, tower_groups
    from mdw_kit.distill.synthetic import DistilledSet
    from mdw_kit.models import build_model
    from mdw_kit.models.retrieval import get_flat

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model("convnet3", text_dim=args.text_dim, image_size=args.image_size)
    images = torch.rand(args.pairs, 3, args.image_size, args.image_size)
    text = torch.randn(args.pairs, args.text_dim)
    start = get_flat(base)
    target = start + 0.01 * torch.randn_like(start)
    groups = tower_groups(base)
    batches = [sample_batches(args.pairs, args.steps, args.batch, torch.Generator().manual_seed(r))
               for r in range(args.reps + 1)]

    def make_syn(variant: str) -> DistilledSet:
        syn = DistilledSet.from_pairs(images.clone(), text.clone(), range(args.pairs))
        if variant == "channels_last":
            syn.images.data = syn.images.data.contiguous(memory_format=torch.channels_last)
        return syn

    models = {v: variant_model(base, v) for v in args.variants}
    syns = {v: make_syn(v) for v in args.variants}
    times: dict[str, dict[str, list[float]]] = {v: {"plain": [], "forward": [], "backward": []} for v in args.variants}
    grads: dict[str, torch.Tensor] = {}
    for r in range(args.reps + 1):  # repetition 0 warms up and gives the gradients compared
        for v in args.variants:
            m, syn = models[v], syns[v]
            syn.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = match_loss(m, syn, start, target, args.steps, args.batch, args.mode, batches=batches[r],
                             groups=groups)
            t1 = time.perf_counter()
            out.loss.backward()
            t2 = time.perf_counter()
            plain = time_plain_steps(m, syn, start, args.steps, args.batch, batches=batches[r])
            if r == 0:
                grads[v] = syn.images.grad.detach().contiguous().clone()
                continue
            times[v]["forward"].append(t1 - t0)
            times[v]["backward"].append(t2 - t1)
            times[v]["plain"].append(plain)
    ref_v = reference_variant(args.variants)
    ref = grads[ref_v]
    rows = {}
    for v in args.variants:
        med = {k: statistics.median(x) for k, x in times[v].items()}
        it = med["forward"] + med["backward"]
        rows[v] = {"plain_s": med["plain"], "forward_s": med["forward"], "backward_s": med["backward"],
                   "iteration_s": it, "iteration_over_plain": it / med["plain"],
                   "iteration_over_native_plain": it / statistics.median(times[ref_v]["plain"]),
                   "max_abs_diff_pixel_grad": float((grads[v] - ref).abs().max()),
                   "pixel_grad_scale": float(ref.abs().max())}
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args)
    first = reference_variant(args.variants)
    print(f"{'variant':<14} {'plain s':>8} {'forward s':>10} {'backward s':>11} {'iter/plain':>11} "
          f"{'iter/' + first + ' plain':>20} {'grad diff':>10}")
    for v, r in rows.items():
        print(f"{v:<14} {r['plain_s']:8.3f} {r['forward_s']:10.3f} {r['backward_s']:11.3f} "
              f"{r['iteration_over_plain']:11.2f} {r['iteration_over_native_plain']:20.2f} "
              f"{r['max_abs_diff_pixel_grad']:10.1e}")
    import torch
    native = rows.get("native")
    result = {"command": "python benchmarks/bench_unroll_cost.py "
                         + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "environment": {"python": platform.python_version(), "torch": torch.__version__,
                              "platform": platform.platform(), "threads": args.threads},
              "wall_time_s": time.perf_counter() - t0, "rows": rows,
              "target": None if native is None else {
                  "what": "iteration <= 3x the plain steps it unrolls (native ops)", "value": 3.0,
                  "measured": native["iteration_over_plain"], "met": native["iteration_over_plain"] <= 3.0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
