"""The measurable claims of "What explosion does to training" (book/exploding.ipynb), at small
scale and without running the notebook.

Derivation checked (references: positive homogeneity of ReLU, a closed form; float64 torch
autograd; the exact Hessian from torch.autograd.functional.hessian): a bias-free ReLU MLP with
L hidden layers has L + 1 weight matrices, so scaling every weight by c scales the output by
c^(L+1). With targets y = 0 the MSE scales by c^(2L+2) *exactly*, its gradient with respect
to the weights by c^(2L+1) and its Hessian by c^(2L). With y != 0 and zero biases (the
chapter's net at initialization) these hold once the outputs dominate the targets.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion import curvature, nets
from test_curvature import exact_hessian

F = torch.nn.functional.mse_loss


def _grad_norm(net, x, y):
    net.zero_grad()
    F(net(x), y).backward()
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters()))


def _net(scale, depth, *, bias, width=6):
    return nets.mlp(4, 1, width=width, depth=depth, activation="relu", weight_scale=scale,
                    bias=bias, seed=0).double()


def _data():
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(32, 4, generator=gen, dtype=torch.float64),
            torch.randn(32, 1, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("depth", [2, 4, 8])
def test_gradient_exponent_is_2L_plus_1_exactly_without_biases_and_targets(depth):
    """Bias-free ReLU net, y = 0: |grad(c theta)| / |grad(theta)| = c^(2L+1) to rounding."""
    x, y = _data()
    c = 1.7
    g1 = _grad_norm(_net(1.0, depth, bias=False), x, 0 * y)
    g2 = _grad_norm(_net(c, depth, bias=False), x, 0 * y)
    # (weights are drawn in float32, so c * w is exact only to float32 rounding)
    assert math.log(g2 / g1) / math.log(c) == pytest.approx(2 * depth + 1, abs=1e-5)


def test_gradient_exponent_approaches_2L_plus_1_with_biases_and_targets():
    """The chapter's case (zero biases counted as parameters, y != 0): the exponent measured
    between two scales tends to 2L + 1 as the output swamps the targets, from below."""
    x, y = _data()
    depth = 8
    e = []
    for lo, hi in [(1.0, math.sqrt(2)), (4.0, 8.0)]:
        g1 = _grad_norm(_net(lo, depth, bias=True), x, y)
        g2 = _grad_norm(_net(hi, depth, bias=True), x, y)
        e.append(math.log(g2 / g1) / math.log(hi / lo))
    assert e[1] == pytest.approx(2 * depth + 1, abs=0.02)
    assert abs(e[1] - (2 * depth + 1)) < abs(e[0] - (2 * depth + 1))


def test_hessian_exponent_is_2L_against_exact_hessian():
    """Bias-free, y = 0: lambda_max(c theta) / lambda_max(theta) = c^(2L), with both
    eigenvalues checked against eigvalsh of the exact Hessian."""
    x, y = _data()
    depth, c = 3, 1.5
    lams, exact = [], []
    for s in (1.0, c):
        net = _net(s, depth, bias=False, width=4)
        lams.append(curvature.top_hessian_eigenvalue(net, F, x, 0 * y, iters=300, tol=1e-12))
        exact.append(np.linalg.eigvalsh(exact_hessian(net, x, 0 * y)).max())
    assert lams == pytest.approx(exact, rel=1e-5)
    assert lams[1] / lams[0] == pytest.approx(c ** (2 * depth), rel=1e-5)


def test_hessian_ratio_of_the_chapters_net_is_near_c_to_the_2L():
    """The chapter's experiment at small width (biases, y != 0): the lambda_max ratio between
    sigma_w = 2 and sqrt(2) is within a factor 1.5 of c^(2L) (c = sqrt 2, L = 8), and it
    approaches c^(2L) at larger scales."""
    x, y = _data()
    depth = 8
    lam = {s: curvature.top_hessian_eigenvalue(_net(s, depth, bias=True, width=16), F, x, y,
                                               iters=50)
           for s in (math.sqrt(2), 2.0, 4.0, 8.0)}
    assert 1 / 1.5 < lam[2.0] / lam[math.sqrt(2)] / math.sqrt(2) ** (2 * depth) < 1.5
    assert lam[8.0] / lam[4.0] == pytest.approx(2.0 ** (2 * depth), rel=0.05)


# ---------------------------------------------------------- positive homogeneity (issue 26)
@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("a", [0.3, 2.5])
def test_bias_free_relu_net_is_positively_homogeneous_in_each_weight_matrix(k, a):
    """f(..., a W_k, ...) = a f for a > 0 (degree 1 in each matrix), but not for a < 0:
    f is not linear in W_k."""
    x, _ = _data()
    net = _net(1.0, 4, bias=False)
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    f0 = net(x).detach()
    with torch.no_grad():
        layers[k].weight.mul_(a)
    assert torch.allclose(net(x), a * f0, rtol=1e-12, atol=1e-12)
    if k < len(layers) - 1:                   # a hidden matrix: a ReLU follows it
        with torch.no_grad():
            layers[k].weight.mul_(-1.0)
        assert not torch.allclose(net(x), -a * f0, rtol=1e-6, atol=1e-6)


# ------------------------------------------------- spread of log |g|^2 at finite width
def _log_grad_sq(width, depth, nets=600, seed=0):
    """The chapter's estimate, written independently: a loop over nets, float64."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(nets):
        x = torch.randn(width, generator=gen, dtype=torch.float64, requires_grad=True)
        h = x
        for _l in range(depth):
            W = torch.randn(width, width, generator=gen, dtype=torch.float64) * math.sqrt(2 / width)
            h = torch.relu(W @ h)
        u = torch.randn(width, generator=gen, dtype=torch.float64)
        (g,) = torch.autograd.grad(h @ (u / u.norm()), x)
        out.append(math.log(float(g.pow(2).sum())))
    return np.array(out)


def test_variance_of_log_gradient_norm_grows_like_depth_over_width():
    """Var log |dL/dx|^2 of random He-initialized ReLU nets is about c L / n with c between
    4 and 8 (the chapter finds 4.8 to 7.1): proportional to L at fixed n, and smaller at
    larger n (Hanin 2018: exponential in the sum of 1/n_j)."""
    v = {(L, n): _log_grad_sq(n, L, seed=L + n).var() for L, n in [(4, 16), (12, 16), (12, 48)]}
    for (L, n), var in v.items():
        assert 4 < var / (L / n) < 8, (L, n, var)
    assert 2 < v[12, 16] / v[4, 16] < 4.5
    assert v[12, 48] < 0.5 * v[12, 16]


# ------------------------------------------------------------------ the debugging tools
def test_clip_grad_norm_raises_on_a_non_finite_norm_only_when_asked():
    lin = torch.nn.Linear(3, 1)
    lin.weight.grad = torch.tensor([[math.inf, 1.0, 1.0]])
    lin.bias.grad = torch.zeros(1)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0, error_if_nonfinite=True)
    total = torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0)     # the default: no error
    assert math.isinf(total) and torch.isnan(lin.weight.grad[0, 0])


def test_detect_anomaly_names_the_backward_function_that_returned_nan():
    """sqrt'(0) = inf passes unflagged; the square's backward makes 0 * inf = nan."""
    import warnings

    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = a.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="PowBackward0"):
            with torch.autograd.detect_anomaly():
                ((a - b) ** 2).sum().sqrt().backward()
