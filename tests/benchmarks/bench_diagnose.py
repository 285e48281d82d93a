"""Overhead of companion.diagnose.watch on a training step, and the cost of one diagnose() call.

    python tests/benchmarks/bench_diagnose.py                  # CPU
    python tests/benchmarks/bench_diagnose.py --device cuda    # GPU

For three models -- the chapter's 20-layer sigmoid MLP of width 32 (a step of about a
millisecond, the worst case for a per-step overhead), an 8-layer ReLU MLP of width 512
and a 6-layer TokenTransformer -- times blocks of 20 full-batch SGD steps (batch 256;
64 sequences for the transformer): plain, under ``watch(model, opt, every=10)`` and
under ``watch(..., every=1)`` (every step measured). Each row is the median over
``--repeats`` blocks, taken in turns, in ms per step, with its ratio to the plain step.
The last columns time one plain forward and backward pass, and one ``diagnose`` call
without and with the optimizer, each with its ratio to the plain pass. With
``transformers`` installed, two models of the test zoo (a 4-layer GPT-2 and a 4-layer
ViT, diagnosed on their own loss) are timed too.
Budget: every=10 adds at most ~10 % to a step of the two larger models.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_optim import bench_args  # noqa: E402

from companion import nets  # noqa: E402
from companion.diagnose import diagnose, watch  # noqa: E402
from companion.residual import TokenTransformer  # noqa: E402

STEPS = 20


def models(device: str):
    g = torch.Generator().manual_seed(0)
    x16 = torch.randn(256, 16, generator=g).to(device)
    y1 = torch.randn(256, 1, generator=g).to(device)
    tokens = torch.randint(0, 16, (64, 8), generator=g).to(device)

    def token_loss(out, target):
        return F.cross_entropy(out.reshape(-1, 16), target.reshape(-1))

    yield ("sigmoid MLP, 20 x 32", nets.mlp(16, 1, 32, 20, "sigmoid", seed=0).to(device),
           x16, y1, F.mse_loss)
    yield ("ReLU MLP, 8 x 512", nets.mlp(16, 1, 512, 8, "relu", init="kaiming_normal",
                                         seed=0).to(device), x16, y1, F.mse_loss)
    yield ("TokenTransformer, 6 layers", TokenTransformer(16, 8, num_layers=6, seed=0)
           .to(device), tokens, tokens.roll(1, 1), token_loss)
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import (GPT2Config, GPT2LMHeadModel, ViTConfig,
                                  ViTForImageClassification)
    except ImportError:
        return
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (16, 64), generator=g).to(device)
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=500,
                                     n_positions=64, bos_token_id=0, eos_token_id=0))
    yield ("HF GPT-2, 4 x 128", gpt.to(device), {"input_ids": ids, "labels": ids}, None, None)
    vit = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=256, num_labels=10))
    img = torch.randn(32, 3, 32, 32, generator=g).to(device)
    lab = torch.randint(0, 10, (32,), generator=g).to(device)
    yield ("HF ViT, 4 x 128", vit.to(device), {"pixel_values": img, "labels": lab}, None, None)


def _forward(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _loss(model, x, y, loss_fn):
    out = _forward(model, x)
    return out.loss if loss_fn is None else loss_fn(out, y)


def block(model, opt, x, y, loss_fn, every, device) -> float:
    """ms per step of STEPS steps, under watch(every) unless every is None."""
    def steps(w=None):
        for _ in range(STEPS):
            loss = _loss(model, x, y, loss_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if w is not None:
                w.log(loss)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    if every is None:
        steps()
    else:
        with watch(model, opt, every=every) as w:
            steps(w)
    sync()
    return (time.perf_counter() - t) * 1e3 / STEPS


def main() -> None:
    args = bench_args(__doc__.splitlines()[0])
    print(f"watch() overhead, device={args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} blocks of {STEPS} "
          f"steps\n")
    print("| model | plain ms/step | every=10 | every=1 | forward+backward ms | "
          "diagnose() ms | diagnose(optimizer=) ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, model, x, y, loss_fn in models(args.device):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        settings = (None, 10, 1)
        times = {s: [] for s in settings}
        for _ in range(args.warmup):
            for s in settings:
                block(model, opt, x, y, loss_fn, s, args.device)
        for _ in range(args.repeats):
            for s in settings:               # in turns, so drift hits all three alike
                times[s].append(block(model, opt, x, y, loss_fn, s, args.device))
        med = {s: statistics.median(v) for s, v in times.items()}
        plain, diag, diag_opt = [], [], []
        for _ in range(max(5, args.repeats // 4)):
            for kind, into in ((None, plain), ("diag", diag), ("opt", diag_opt)):
                t = time.perf_counter()
                if kind is None:
                    opt.zero_grad()
                    _loss(model, x, y, loss_fn).backward()
                else:
                    diagnose(model, x, y, loss=loss_fn, optimizer=opt if kind == "opt" else None)
                into.append((time.perf_counter() - t) * 1e3)
        fb, d0, d1 = (statistics.median(v) for v in (plain, diag, diag_opt))
        print(f"| {name} | {med[None]:.2f} | {med[10]:.2f} ({med[10] / med[None]:.2f}x) | "
              f"{med[1]:.2f} ({med[1] / med[None]:.2f}x) | {fb:.2f} | {d0:.1f} ({d0 / fb:.1f}x) "
              f"| {d1:.1f} ({d1 / fb:.1f}x) |")


if __name__ == "__main__":
    main()
