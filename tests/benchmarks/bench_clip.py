"""Time of one clip_grad_norm_ over a ResNet-50-sized gradient list (not a test: timings live here).

    python tests/benchmarks/bench_clip.py                  # CPU
    python tests/benchmarks/bench_clip.py --device cuda    # GPU

Compares companion.clip.clip_grad_norm_ (default, foreach=True, and the single-tensor loop
foreach=False) with torch.nn.utils.clip_grad_norm_ (its default, foreach=False,
foreach=True) on the gradients of the 161 float32 tensors (~25.6M parameters) of a
ResNet-50 (shapes from bench_optim.py), plus companion.clip.adaptive_clip_grad_ for scale.
Each row: median of ``--repeats`` (>= 20) calls after ``--warmup`` calls, taken in turns,
timed with time.perf_counter (after torch.cuda.synchronize on cuda). Prints a markdown table.
Budget: companion default <= torch default (CPU and cuda).

The gradients are N(0, 1e-6) (global norm ~5) and max_norm is 1: the first call scales
them to norm 1, after which every call multiplies by ~1 (both libraries always multiply).
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_optim import bench_args, median_ms, print_table, resnet50_shapes  # noqa: E402

import companion.clip as cc  # noqa: E402


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    shapes = resnet50_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=gen).to(args.device).requires_grad_()
        p.grad = torch.randn(s, generator=gen).to(args.device) * 1e-3
        params.append(p)
    tu = torch.nn.utils
    fns = {}
    for lib, mod in (("torch", tu), ("companion", cc)):
        for label, kw in (("(default)", {}), ("(foreach=False)", dict(foreach=False)),
                          ("(foreach=True)", dict(foreach=True))):
            fns[f"{lib} clip_grad_norm_ {label}"] = (
                lambda ps, mod=mod, kw=kw: mod.clip_grad_norm_(ps, 1.0, **kw))
    fns["companion adaptive_clip_grad_ (per tensor)"] = cc.adaptive_clip_grad_
    ms = median_ms({name: (lambda fn=fn: fn(params)) for name, fn in fns.items()},
                   args.device, args.warmup, args.repeats)
    print_table(f"One clip over {len(shapes)} gradients, {n:,} float32 parameters", args,
                ms, "torch clip_grad_norm_ (default)", ("function", "ms / call"))


if __name__ == "__main__":
    main()
