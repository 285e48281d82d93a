"""Time of one Adam step over a ResNet-50-sized parameter list (not a test: timings live here).

    python tests/benchmarks/bench_optim.py                  # CPU
    python tests/benchmarks/bench_optim.py --device cuda    # GPU

Compares companion.optim.Adam (single-tensor = the pure function per parameter, and
foreach) with torch.optim.Adam (its default, foreach=False, foreach=True) on the 161
float32 tensors (~25.6M parameters) of a ResNet-50 (built by hand: no torchvision).
Each row: median of ``--repeats`` (>= 20) steps after ``--warmup`` steps, taken in turns,
timed with time.perf_counter (after torch.cuda.synchronize on cuda). Prints a markdown table.
Budgets: companion default <= torch default on CPU; <= 1.2x torch foreach on cuda.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import companion.optim as co


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's resnet50: 161 tensors, 25,557,032 numbers."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]           # conv1, bn1
    c_in = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            out = 4 * width
            shapes += [(width, c_in, 1, 1), (width,), (width,),            # conv1, bn1
                       (width, width, 3, 3), (width,), (width,),           # conv2, bn2
                       (out, width, 1, 1), (out,), (out,)]                 # conv3, bn3
            if b == 0:
                shapes += [(out, c_in, 1, 1), (out,), (out,)]               # downsample
            c_in = out
    return shapes + [(1000, 2048), (1000,)]                                  # fc


def time_steps(makers: dict, device: str, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms of one ``opt.step()`` per optimizer, timed round-robin after ``warmup`` steps.

    All optimizers share one set of parameters and fixed gradients (each keeps its own
    state); taking turns step by step spreads any background load evenly over them.
    """
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in resnet50_shapes()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
    opts = {name: make(params) for name, make in makers.items()}
    return median_ms({name: opt.step for name, opt in opts.items()}, device, warmup, repeats)


def median_ms(calls: dict, device: str, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each zero-argument call, taken in turns (round-robin) after
    ``warmup`` rounds, synchronizing cuda around each call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + repeats):
        for name, call in calls.items():
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def bench_args(description: str) -> argparse.Namespace:
    """--device, --warmup and --repeats (>= 20), shared by the benchmark scripts."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if args.repeats < 20:
        ap.error(f"--repeats must be >= 20, got {args.repeats}")
    return args


def print_table(title: str, args: argparse.Namespace, ms: dict[str, float], base: str,
                columns: tuple[str, str]) -> None:
    """The markdown table of the benchmark scripts: each row's median ms and its ratio to
    the row ``base``, under a line with the machine's facts."""
    print(f"{title}, device={args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print(f"| {columns[0]} | {columns[1]} | vs torch default |")
    print("|---|---:|---:|")
    for name, t in ms.items():
        print(f"| {name} | {t:.2f} | {t / ms[base]:.2f}x |")


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    shapes = resnet50_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    makers = dict([
        ("torch.optim.Adam (default)", lambda ps: torch.optim.Adam(ps)),
        ("torch.optim.Adam(foreach=False)", lambda ps: torch.optim.Adam(ps, foreach=False)),
        ("torch.optim.Adam(foreach=True)", lambda ps: torch.optim.Adam(ps, foreach=True)),
        ("companion.optim.Adam (default)", lambda ps: co.Adam(ps)),
        ("companion.optim.Adam(foreach=False)", lambda ps: co.Adam(ps, foreach=False)),
        ("companion.optim.Adam(foreach=True)", lambda ps: co.Adam(ps, foreach=True)),
    ])
    ms = time_steps(makers, args.device, args.warmup, args.repeats)
    print_table(f"One Adam step, {len(shapes)} tensors, {n:,} float32 parameters", args,
                ms, "torch.optim.Adam (default)", ("optimizer", "ms / step"))


if __name__ == "__main__":
    main()
