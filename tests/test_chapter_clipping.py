"""Facts the clipping chapter builds on, checked outside the notebook (fast)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from companion import clip as cc
from companion import data, nets


def quartic_grad(x):
    return 2 * x + 4 * x * x * x          # f(x) = x^2 + x^4; overflows to inf, no error


@pytest.mark.parametrize("x0", [1.5, 6.0, 24.0])
def test_largest_stable_fixed_step_of_the_quartic(x0):
    eta_max = 1 / (1 + 2 * x0 ** 2)          # x_1 = -x_0 exactly
    assert cc.descent_steps(quartic_grad, x0, lr=0.99 * eta_max, max_steps=10 ** 6) is not None
    assert cc.descent_steps(quartic_grad, x0, lr=1.01 * eta_max, max_steps=10 ** 4) is None
    # six times 1/f''(x0) for large x0
    assert eta_max * (2 + 12 * x0 ** 2) == pytest.approx(6, rel=0.2)


def test_clip_before_unscale_sees_the_scaled_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = data.teacher_regression(64, 8, seed=0)
    F.mse_loss(model(x), y).backward()
    true = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    for order in ("clip, unscale", "unscale, clip"):
        model.zero_grad()
        scaler.scale(F.mse_loss(model(x), y)).backward()     # float32: no overflow
        if order == "unscale, clip":
            scaler.unscale_(opt)
        seen = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf).item()
        expected = true if order == "unscale, clip" else 2.0 ** 8 * true
        assert seen == pytest.approx(expected, rel=1e-5)
        scaler.step(opt)      # unscales if not done, steps
        scaler.update()
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()                    # the new true norm
        true = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()


def test_accumulate_then_clip_equals_full_batch_clip():
    model = nets.mlp(4, 1, width=8, depth=2, seed=0).double()
    x, y = data.teacher_regression(32, 4, seed=0)
    x, y = x.double(), y.double()
    params = list(model.parameters())
    F.mse_loss(model(x), y).backward()
    cc.clip_grad_norm_(params, 0.05)
    full = torch.cat([p.grad.flatten() for p in params])
    model.zero_grad()
    for xb, yb in zip(x.chunk(4), y.chunk(4)):
        (F.mse_loss(model(xb), yb) / 4).backward()
    cc.clip_grad_norm_(params, 0.05)
    once = torch.cat([p.grad.flatten() for p in params])
    assert torch.allclose(once, full, atol=1e-14, rtol=0)
    each = torch.zeros_like(full)
    for xb, yb in zip(x.chunk(4), y.chunk(4)):
        model.zero_grad()
        (F.mse_loss(model(xb), yb) / 4).backward()
        cc.clip_grad_norm_(params, 0.05)
        each += torch.cat([p.grad.flatten() for p in params])
    assert not torch.allclose(each, full, atol=1e-6)
