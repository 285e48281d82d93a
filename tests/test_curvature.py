"""companion.curvature against independent references: the exact Hessian of a tiny net from
torch.autograd.functional.hessian (flattened parameters) with numpy's eigvalsh, and the
quadratic 1/2 p^T A p whose Hessian is A (closed form)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from companion import curvature, nets

F = torch.nn.functional.mse_loss


def _tiny(seed=0, bias=True):
    net = nets.mlp(3, 1, width=4, depth=2, activation="tanh", bias=bias, bias_std=0.3 if bias else 0.0,
                   seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(10, 1, generator=gen, dtype=torch.float64)
    return net, x, y


def exact_hessian(net, x, y):
    """The full Hessian of F(net(x), y) over the flattened parameters (torch reference)."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(theta):
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return F(functional_call(net, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


class Quadratic(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.p = nn.Parameter(torch.randn(n, dtype=torch.float64))

    def forward(self, inp):
        return self.p


def _spd(eigs, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigs), len(eigs))))
    return torch.tensor(q @ np.diag(eigs) @ q.T)


def test_hessian_vector_product_matches_exact_hessian():
    """H v from double backward equals the exact Hessian (autograd.functional) times v."""
    net, x, y = _tiny()
    H = exact_hessian(net, x, y)
    v = [torch.randn(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
         for i, p in enumerate(net.parameters())]
    hv = curvature.hessian_vector_product(net, F, x, y, v)
    flat = torch.cat([h.reshape(-1) for h in hv]).numpy()
    np.testing.assert_allclose(flat, H @ torch.cat([t.reshape(-1) for t in v]).numpy(),
                               rtol=1e-8, atol=1e-10)


def test_top_eigenvalue_of_a_tiny_net_matches_eigvalsh():
    """Power iteration on H v reaches numpy's largest eigenvalue of the exact Hessian."""
    net, x, y = _tiny(seed=1)
    top = np.linalg.eigvalsh(exact_hessian(net, x, y)).max()
    lam = curvature.top_hessian_eigenvalue(net, F, x, y, iters=500, tol=1e-12)
    assert lam == pytest.approx(top, rel=1e-6)


def test_quadratic_with_known_top_eigenvalue():
    """For 1/2 p^T A p the Hessian is A: lambda_max is A's largest eigenvalue."""
    A = _spd([5.0, 1.0, 0.5, 0.1])
    q = Quadratic(4)
    lam = curvature.top_hessian_eigenvalue(q, lambda out, y: 0.5 * out @ A @ out,
                                           torch.zeros(1), torch.zeros(1), iters=200, tol=1e-12)
    assert lam == pytest.approx(5.0, rel=1e-9)


def test_negative_dominant_eigenvalue_gives_the_top_one():
    """Eigenvalues (-6, 2, 1): the dominant one in modulus is -6, the largest is 2."""
    A = _spd([-6.0, 2.0, 1.0], seed=2)
    q = Quadratic(3)
    lam = curvature.top_hessian_eigenvalue(q, lambda out, y: 0.5 * out @ A @ out,
                                           torch.zeros(1), torch.zeros(1), iters=300, tol=1e-13)
    assert lam == pytest.approx(2.0, rel=1e-6)


def test_leaves_parameters_and_grads_untouched():
    """Property: measuring does not change the model (weights, .grad)."""
    net, x, y = _tiny(seed=2)
    before = [p.detach().clone() for p in net.parameters()]
    curvature.top_hessian_eigenvalue(net, F, x, y, iters=3)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
