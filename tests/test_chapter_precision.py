"""Facts the precision chapter builds on, checked outside the notebook (fast)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from companion import data, nets
from companion import precision as pr
from companion.diagnostics import backprop_gradients

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
def test_format_facts_agree_with_torch_finfo_and_rounding(name):
    f, fi, dt = pr.format_facts(name), torch.finfo(DTYPES[name]), DTYPES[name]
    assert (f.largest, f.smallest_normal, f.eps) == (fi.max, fi.tiny, fi.eps)
    values = torch.tensor([f.smallest_subnormal, f.smallest_subnormal / 2,
                           f.largest * (1 + f.eps / 4), f.largest * (1 + f.eps / 2)],
                          dtype=torch.float64)
    assert values.to(dt).tolist() == [f.smallest_subnormal, 0.0, f.largest, math.inf]


def test_bfloat16_rounding_band_of_relative_updates():
    # in [1, 2) the bfloat16 spacing is 2^-7: an update below half of it, 2^-8, is lost.
    # Relative to w that is 2^-8 at w = 1 and about 2^-9 at w just below 2: the band
    for w, relative in ((1.0, 2.0 ** -8), (2.0 - 2.0 ** -7, 2.0 ** -9)):
        assert (2.0 ** -8 / w) == pytest.approx(relative, rel=0.01)
        u = torch.tensor([0.99 * 2.0 ** -8, 1.01 * 2.0 ** -8])
        assert pr.rounded_away_fraction(u, torch.tensor([w, w]), torch.bfloat16) == 0.5
    # the usual healthy update ratio, 1e-3, is lost on a bfloat16 weight of 1
    assert (torch.tensor(1.0, dtype=torch.bfloat16) + 1e-3).item() == 1.0


def test_float16_backward_loses_what_lost_fraction_predicts():
    # the chapter's depth-8 sigmoid net: a real float16 backward pass gives exact zeros
    # where the float32 values are below half of float16's smallest subnormal
    x, y = data.teacher_regression(512, 16, seed=0)
    net = nets.mlp(16, 1, width=64, depth=8, activation="sigmoid", seed=0)
    g32 = np.concatenate(list(backprop_gradients(net, x, y, F.mse_loss).values()))
    g16 = np.concatenate(list(backprop_gradients(net.half(), x.half(), y.half(),
                                                 F.mse_loss).values()))
    predicted = pr.lost_fraction(g32, torch.float16)
    measured = float(np.mean(g16[g32 != 0] == 0))
    assert predicted > 0.25 and abs(measured - predicted) < 0.02
    assert pr.lost_fraction(g32, torch.bfloat16) == 0.0
    assert pr.lost_fraction(g32, torch.float16, scale=2.0 ** 16) < 1e-3


def test_cpu_autocast_casts_matmuls_down_losses_up_and_softmax_follows():
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.float16):
        h = F.linear(x, torch.eye(16))
        assert h.dtype == torch.float16
        assert F.mse_loss(h, torch.zeros(8, 16)).dtype == torch.float32
        assert torch.softmax(h, -1).dtype == torch.float16      # follows its input
        assert torch.softmax(x, -1).dtype == torch.float32


def test_attention_by_hand_overflows_float16_where_the_fused_one_does_not():
    g = torch.Generator().manual_seed(0)
    d = 64
    x = torch.randn(1, 64, d, generator=g)
    w_q, w_k, w_v = (torch.randn(d, d, generator=g) / math.sqrt(d) for _ in range(3))
    q, k, v = ((x @ (64 * w_q)).half(), (x @ (64 * w_k)).half(), (x @ w_v).half())
    by_hand = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1) @ v
    assert torch.isnan(by_hand).any()
    assert torch.isfinite(F.scaled_dot_product_attention(q, k, v)).all()


def _scaler_run(make, steps=40):
    net = nets.mlp(8, 1, width=16, depth=2, seed=0)
    x, y = data.teacher_regression(256, 8, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = make("cpu", init_scale=2.0 ** 24, growth_interval=5)
    scales = []
    for _ in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.mse_loss(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales, torch.cat([p.detach().flatten() for p in net.parameters()])


def test_companion_grad_scaler_decides_as_torch_does():
    theirs, p_theirs = _scaler_run(torch.amp.GradScaler)
    ours, p_ours = _scaler_run(pr.GradScaler)
    assert ours == theirs and torch.equal(p_ours, p_theirs)
    assert theirs[7] == 2.0 ** 16            # eight overflows from 2^24 before the first step


def test_stochastic_rounding_keeps_small_updates_on_average():
    gen = torch.Generator().manual_seed(0)
    w = torch.ones(2000, dtype=torch.bfloat16)
    for _ in range(50):
        w = pr.stochastic_round(w.float() + 2.0 ** -10, torch.bfloat16, generator=gen)
    assert abs(w.double().mean().item() - (1 + 50 * 2.0 ** -10)) < 2e-3
    nearest = torch.ones(1, dtype=torch.bfloat16)
    for _ in range(50):
        nearest = (nearest.float() + 2.0 ** -10).to(torch.bfloat16)
    assert nearest.item() == 1.0
