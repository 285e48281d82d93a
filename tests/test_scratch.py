"""Tests of companion.scratch (the numpy MLP with hand-written backprop).

Reference: torch autograd in float64 on the same weights -- parameter gradients,
input gradient, torch.autograd.functional.jacobian for the input Jacobian and for each
layer's map h -> f(W h + b). Gradients must agree to a relative tolerance of 1e-6
(``np.testing.assert_allclose(rtol=1e-6, atol=1e-12)``, the atol only for entries that are
zero up to rounding).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.nets import mlp
from companion.scratch import Gradients, ScratchMLP

SETTINGS = settings(max_examples=30, deadline=None)
RTOL, ATOL = 1e-6, 1e-12

shapes = st.fixed_dictionaries({
    "activation": st.sampled_from(["sigmoid", "tanh", "relu"]),
    "hidden": st.lists(st.integers(1, 7), min_size=0, max_size=5),   # depth 0..5 hidden
    "n_in": st.integers(1, 5),
    "n_out": st.integers(1, 3),
    "batch": st.integers(1, 6),
    "scale": st.sampled_from([0.5, 1.0, 2.0]),
    "seed": st.integers(0, 2**16),
})


def _close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def _torch_grads(model: nn.Sequential, x: np.ndarray, g: np.ndarray):
    """Autograd of L = sum(y_hat * g), so dL/dy_hat = g."""
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model(xt)
    (out * torch.from_numpy(g)).sum().backward()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return (out.detach().numpy(), [m.weight.grad.numpy() for m in linears],
            [m.bias.grad.numpy() for m in linears], xt.grad.numpy())


@SETTINGS
@given(shapes)
def test_backward_matches_autograd(s):
    """dW, db, dx and y_hat agree with torch autograd on the same float64 weights."""
    sizes = [s["n_in"], *s["hidden"], s["n_out"]]
    net = ScratchMLP(sizes, s["activation"], s["scale"], seed=s["seed"])
    rng = np.random.default_rng(s["seed"] + 1)
    x = rng.standard_normal((s["batch"], s["n_in"]))
    g = rng.standard_normal((s["batch"], s["n_out"]))
    y_ref, dW_ref, db_ref, dx_ref = _torch_grads(net.to_torch(), x, g)

    _close(net.forward(x), y_ref, "forward")
    grads = net.backward(g)
    assert isinstance(grads, Gradients)
    assert len(grads.dW) == len(grads.db) == len(grads.delta) == len(sizes) - 1
    for l, (dW, db) in enumerate(zip(grads.dW, grads.db)):
        _close(dW, dW_ref[l], f"dW[{l}]")
        _close(db, db_ref[l], f"db[{l}]")
    _close(grads.dx, dx_ref, "dx")
    np.testing.assert_array_equal(grads.delta[-1], g)   # delta_L = dL/dy_hat


@SETTINGS
@given(depth=st.integers(1, 6), width=st.integers(1, 8), act=st.sampled_from(["sigmoid", "tanh", "relu"]),
       seed=st.integers(0, 1000))
def test_load_from_nets_mlp_matches_autograd(depth, width, act, seed):
    """Weights copied from companion.nets.mlp (float64) give autograd's gradients."""
    model = mlp(3, 2, width, depth, act, weight_scale=1.5, bias_std=0.3, seed=seed).double()
    net = ScratchMLP([3] + [width] * depth + [2], act).load_from_torch(model)
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    y_ref, dW_ref, db_ref, dx_ref = _torch_grads(model, x, g)
    _close(net.forward(x), y_ref, "forward")
    grads = net.backward(g)
    for l in range(depth + 1):
        _close(grads.dW[l], dW_ref[l], f"dW[{l}]")
        _close(grads.db[l], db_ref[l], f"db[{l}]")
    _close(grads.dx, dx_ref, "dx")


def test_mse_gradient_matches_autograd():
    """With L = 1/2 sum (y_hat - y)^2, grad_output = y_hat - y reproduces autograd's dW."""
    net = ScratchMLP([5, 6, 6, 2], "tanh", seed=3)
    model = net.to_torch()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 2))
    (0.5 * ((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).sum()).backward()
    grads = net.backward(net.forward(x) - y)
    _close(grads.dW[0], model.fc1.weight.grad.numpy(), "dW[0]")


@SETTINGS
@given(shapes)
def test_chain_factors_product_is_input_jacobian(s):
    """prod of chain factors == torch.autograd.functional.jacobian(model, x) for one example,
    and each hidden factor == the Jacobian of h -> f(W h + b) at the cached h."""
    sizes = [s["n_in"], *s["hidden"], s["n_out"]]
    net = ScratchMLP(sizes, s["activation"], s["scale"], seed=s["seed"])
    model = net.to_torch()
    x = np.random.default_rng(s["seed"]).standard_normal((1, s["n_in"]))
    jac = torch.autograd.functional.jacobian(model, torch.from_numpy(x))  # (1, out, 1, in)
    _close(net.input_jacobian(x)[0], jac[0, :, 0, :].numpy(), "input Jacobian")

    factors = net.chain_factors(x)
    assert [F.shape for F in factors] == [(1, o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    children = list(model.children())
    for l, F in enumerate(factors[:-1]):
        fc, act = children[2 * l], children[2 * l + 1]
        h = torch.from_numpy(net.h[l][0])
        J = torch.autograd.functional.jacobian(lambda v: act(fc(v)), h)
        _close(F[0], J.numpy(), f"factor {l}")
    _close(factors[-1][0], net.W[-1], "output factor")


@SETTINGS
@given(shapes)
def test_factor_norms(s):
    """factor_norms == np.linalg.norm of each factor, and ||dy/dx||_2 <= prod ||J_l||_2
    (submultiplicativity)."""
    sizes = [s["n_in"], *s["hidden"], s["n_out"]]
    net = ScratchMLP(sizes, s["activation"], s["scale"], seed=s["seed"])
    x = np.random.default_rng(s["seed"]).standard_normal((s["batch"], s["n_in"]))
    norms = net.factor_norms(x)
    assert norms.shape == (s["batch"], len(sizes) - 1)
    for b in range(s["batch"]):
        for l, F in enumerate(net.chain_factors(x)):
            assert norms[b, l] == pytest.approx(np.linalg.norm(F[b], 2), rel=1e-12, abs=1e-15)
        jnorm = np.linalg.norm(net.input_jacobian(x)[b], 2)
        assert jnorm <= np.prod(norms[b]) * (1 + 1e-9) + 1e-15
    fro = net.factor_norms(x, ord="fro")
    _close(fro[:, 0], np.linalg.norm(net.chain_factors(x)[0], axis=(1, 2)), "fro")


def test_init_law_and_seed():
    """W ~ N(0, scale^2 / fan_in) within 5 standard errors; biases zero; seeded."""
    n_in, n_out, scale = 400, 300, 1.7
    net = ScratchMLP([n_in, n_out, 1], weight_scale=scale, seed=5)
    W = net.W[0]
    sigma = scale / math.sqrt(n_in)
    assert W.shape == (n_out, n_in) and W.dtype == np.float64
    assert abs(W.mean()) < 5 * sigma / math.sqrt(W.size)
    assert abs(W.std() - sigma) < 5 * sigma / math.sqrt(2 * W.size)
    assert all((b == 0).all() for b in net.b)
    same, other = ScratchMLP([n_in, n_out, 1], weight_scale=scale, seed=5), ScratchMLP([n_in, n_out, 1], seed=6)
    np.testing.assert_array_equal(same.W[0], W)
    assert not np.array_equal(other.W[0], W)


def test_to_torch_roundtrip_and_names():
    """to_torch -> load_from_torch copies weights exactly; names follow companion.nets.mlp."""
    net = ScratchMLP([3, 4, 4, 2], "relu", seed=1)
    model = net.to_torch()
    assert [n for n, _ in model.named_children()] == \
        [n for n, _ in mlp(3, 2, 4, 2, "relu", seed=0).named_children()]
    copy = ScratchMLP([3, 4, 4, 2], "relu", seed=99).load_from_torch(model)
    for a, b in zip(copy.W + copy.b, net.W + net.b):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=[3]), "sizes"),
    (dict(sizes=[3, 0, 1]), "sizes"),
    (dict(sizes=[3, 1], activation="nope"), "activation"),
    (dict(sizes=[3, 1], weight_scale=0.0), "weight_scale"),
    (dict(sizes=[3, 1], weight_scale=float("nan")), "weight_scale"),
    (dict(sizes=[3, 1], seed=-1), "seed"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScratchMLP(**kwargs)


def test_sizes_type_error():
    with pytest.raises(TypeError, match="sizes"):
        ScratchMLP("abc")
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int, got 2.5"):
        ScratchMLP([3, 2.5, 1])


def test_backward_before_forward_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"call net.forward\(x\) first"):
        ScratchMLP([3, 2], seed=0).backward(np.zeros((1, 2)))


def test_argument_types():
    net = ScratchMLP([3, 2], seed=0)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        net.forward([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="x must be finite data"):
        net.forward(np.array([[0.0, np.nan, 0.0]]))
    net.forward(np.zeros((1, 3)))
    grads = net.backward(np.array([[np.nan, 0.0]]))   # a diverged loss: NaN propagates
    assert np.isnan(grads.dW[0]).any()
    with pytest.raises(TypeError, match="ord must be 2 or 'fro'"):
        net.factor_norms(np.zeros((1, 3)), ord=None)
    with pytest.raises(ValueError, match="dtype must be a torch floating dtype"):
        net.to_torch(torch.int64)
    with pytest.raises(TypeError, match="seed must be an int"):
        ScratchMLP([3, 2], seed=None)
    big = ScratchMLP([3, 2], seed=2**64 - 1)
    np.testing.assert_array_equal(big.W[0], ScratchMLP([3, 2], seed=2**64 - 1).W[0])


def test_call_errors():
    net = ScratchMLP([3, 4, 2], seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        net.forward(np.zeros((2, 4)))
    net.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="grad_output"):
        net.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ord"):
        net.factor_norms(np.zeros((1, 3)), ord=1)


def test_load_from_torch_errors():
    net = ScratchMLP([3, 4, 2], seed=0)
    with pytest.raises(TypeError, match="sequential"):
        net.load_from_torch([np.zeros((4, 3))])
    with pytest.raises(ValueError, match="2 Linear layers"):
        net.load_from_torch(mlp(3, 2, 4, 2, seed=0))
    with pytest.raises(ValueError, match="weight shape"):
        net.load_from_torch(mlp(3, 2, 5, 1, seed=0))


@pytest.mark.parametrize("kind, value", [("weight", float("nan")), ("bias", float("inf"))])
def test_load_from_torch_refuses_nonfinite_weights_by_layer(kind, value):
    """A NaN weight used to be copied silently (every output NaN afterwards); refused,
    naming the layer, and nothing is copied: the net keeps its own (finite) weights."""
    net = ScratchMLP([3, 4, 2], seed=0)
    before = [W.copy() for W in net.W]
    model = mlp(3, 2, 4, 1, seed=0)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        getattr(last, kind).view(-1)[1] = value
    with pytest.raises(ValueError, match=rf"sequential's Linear layer 2 \('out'\) {kind} must "
                                         r"be finite data, got 1 NaN or infinite value"):
        net.load_from_torch(model)
    for W, W0 in zip(net.W, before):
        np.testing.assert_array_equal(W, W0)
