"""Tests of companion.nets.

References: the sampling distribution of a Gaussian's sample std/mean (tolerances are
derived from the number of draws), torch.nn.init.calculate_gain, np.linalg.eigvals /
svd, and a hand-written backprop-through-time recursion in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _gaussian import check_gaussian, std_tol

from companion.nets import BatchFirst, SimpleRNN, mlp, rnn_gradient_norms

SETTINGS = settings(max_examples=25, deadline=None)


# ------------------------------------------------------------------------------ mlp
@SETTINGS
@given(depth=st.integers(1, 6), width=st.integers(1, 9), n_in=st.integers(1, 5),
       n_out=st.integers(1, 4))
def test_mlp_names_sizes_and_forward_shape(depth, width, n_in, n_out):
    """Names follow fc1, act1, ..., fc{depth}, act{depth}, out; sizes chain correctly."""
    net = mlp(n_in, n_out, width, depth, seed=0)
    expected = [n for i in range(1, depth + 1) for n in (f"fc{i}", f"act{i}")] + ["out"]
    assert [n for n, _ in net.named_children()] == expected
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == depth + 1
    sizes = [n_in] + [width] * depth + [n_out]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(sizes[:-1], sizes[1:]))
    assert isinstance(net.act1, nn.Module) and not isinstance(net[-1], type(net.act1))
    assert net(torch.randn(7, n_in)).shape == (7, n_out)


@pytest.mark.parametrize("weight_scale", [0.5, 1.0, 2.0])
def test_mlp_weights_are_gaussian_with_std_scale_over_sqrt_fan_in(weight_scale):
    """Every Linear (out included): W ~ N(0, weight_scale^2 / fan_in); biases zero."""
    net = mlp(300, 200, 400, 2, weight_scale=weight_scale, seed=1)
    for m in net:
        if isinstance(m, nn.Linear):
            check_gaussian(m.weight, weight_scale / math.sqrt(m.in_features))
            assert torch.count_nonzero(m.bias) == 0


def test_mlp_bias_options():
    """bias=False drops biases; bias_std > 0 draws N(0, bias_std^2)."""
    net = mlp(2, 3, 5, 2, bias=False, seed=0)
    assert all(m.bias is None for m in net if isinstance(m, nn.Linear))
    net = mlp(1, 1, 4000, 1, bias_std=0.3, seed=0)
    check_gaussian(net.fc1.bias, 0.3)


def test_mlp_seed_is_reproducible_and_leaves_global_rng_untouched():
    """Same seed -> identical parameters; the global RNG state does not move."""
    for init in (None, "xavier_normal", lambda w: w.normal_(0.0, 0.1)):
        state = torch.random.get_rng_state()
        a = mlp(4, 3, 16, 3, activation="prelu", init=init, bias_std=0.1, seed=7)
        b = mlp(4, 3, 16, 3, activation="prelu", init=init, bias_std=0.1, seed=7)
        assert torch.equal(state, torch.random.get_rng_state())
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
            assert na == nb and torch.equal(pa, pb)
        c = mlp(4, 3, 16, 3, activation="prelu", init=init, bias_std=0.1, seed=8)
        assert not torch.equal(a.fc2.weight, c.fc2.weight)
        assert not torch.equal(a.fc2.weight, a.fc3.weight)  # layers are not copies


def test_mlp_without_seed_uses_global_rng():
    """seed=None draws from torch's global RNG, so torch.manual_seed reproduces it."""
    torch.manual_seed(3)
    a = mlp(4, 3, 8, 2)
    torch.manual_seed(3)
    b = mlp(4, 3, 8, 2)
    assert torch.equal(a.fc2.weight, b.fc2.weight)


def test_mlp_xavier_normal_std():
    """xavier_normal: std = sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    net = mlp(300, 100, 500, 1, init="xavier_normal", weight_scale=5.0, seed=0)
    check_gaussian(net.fc1.weight, math.sqrt(2 / (300 + 500)))
    check_gaussian(net.out.weight, math.sqrt(2 / (500 + 100)))


@pytest.mark.parametrize("activation, nonlinearity",
                         [("tanh", "tanh"), ("relu", "relu"), ("selu", "selu"),
                          ("sigmoid", "sigmoid"), ("linear", "linear"), ("gelu", "relu")])
def test_mlp_kaiming_normal_uses_gain_of_activation(activation, nonlinearity):
    """kaiming_normal: std = calculate_gain(activation) / sqrt(fan_in); unknown -> relu."""
    net = mlp(400, 10, 300, 1, activation=activation, init="kaiming_normal", seed=0)
    gain = nn.init.calculate_gain(nonlinearity)
    check_gaussian(net.fc1.weight, gain / math.sqrt(400))


def test_mlp_orthogonal_zeros_and_callable_init():
    """orthogonal: W W^T = I on square layers; zeros: all zero; a callable runs in place."""
    net = mlp(32, 32, 32, 2, init="orthogonal", seed=0)
    for m in net:
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double()
            torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64),
                                       atol=1e-5, rtol=0)
    net = mlp(3, 2, 4, 2, init="zeros")
    assert all(torch.count_nonzero(m.weight) == 0 for m in net if isinstance(m, nn.Linear))
    net = mlp(3, 2, 4, 2, init=lambda w: w.fill_(0.5))
    assert all(bool((m.weight == 0.5).all()) for m in net if isinstance(m, nn.Linear))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(depth=0), ValueError, "depth must be an int >= 1, got 0"),
    (dict(width=0), ValueError, "width must be an int >= 1, got 0"),
    (dict(in_features=0), ValueError, "in_features must be an int >= 1, got 0"),
    (dict(out_features=-2), ValueError, "out_features must be an int >= 1, got -2"),
    (dict(weight_scale=0.0), ValueError, "weight_scale must be a finite number > 0, got 0.0"),
    (dict(weight_scale=-1.0), ValueError, "weight_scale must be a finite number > 0"),
    (dict(weight_scale=math.inf), ValueError, "weight_scale must be a finite number"),
    (dict(bias_std=-0.1), ValueError, "bias_std must be a finite number >= 0"),
    (dict(bias=False, bias_std=0.1), ValueError, "bias_std must be 0 when bias=False"),
    (dict(depth=True), TypeError, "depth must be an int, got True"),
    (dict(width=4.0), TypeError, "width must be an int, got 4.0"),
    (dict(weight_scale="1"), TypeError, "weight_scale must be a real number"),
    (dict(bias=1), TypeError, "bias must be True or False"),
    (dict(init=3), TypeError, "init must be None, an initializer name or a callable"),
    (dict(seed=-1), ValueError, r"seed must be an int in \[0, 18446744073709551615\], got -1"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(activation=None), TypeError, "activation name must be a str"),
    (dict(activation="swishy"), ValueError, "swishy"),
    (dict(init="not_an_init"), ValueError, "not_an_init"),
])
def test_mlp_errors(kwargs, exc, match):
    """Each bad argument raises the documented error naming the argument and value."""
    args = dict(in_features=3, out_features=2, width=4, depth=2) | kwargs
    with pytest.raises(exc, match=match):
        mlp(**args)


# ------------------------------------------------------------------------------ RNN
@SETTINGS
@given(hidden=st.integers(1, 24), radius=st.floats(0.05, 3.0),
       kind=st.sampled_from(["gaussian", "orthogonal"]), seed=st.integers(0, 1000))
def test_rnn_spectral_radius_is_exact(hidden, radius, kind, seed):
    """max |eigenvalue| of W_hh (np.linalg.eigvals) equals spectral_radius; an orthogonal
    W_hh also has every singular value equal to it."""
    rnn = SimpleRNN(2, hidden, spectral_radius=radius, recurrent_init=kind, seed=seed)
    w = rnn.W_hh.detach().double().numpy()
    assert np.abs(np.linalg.eigvals(w)).max() == pytest.approx(radius, rel=1e-5)
    if kind == "orthogonal":
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), radius, rtol=1e-5)


def test_rnn_seed_reproducible_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = SimpleRNN(3, 5, seed=4), SimpleRNN(3, 5, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def _manual_rnn(rnn: SimpleRNN, x: torch.Tensor):
    """Reference: the Elman recursion with tanh written out, and BPTT by hand for
    L = sum(y):  dL/dh_T = 1 W_hy,  dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh."""
    W_xh, W_hh, b, W_hy = (p.detach().double() for p in (rnn.W_xh, rnn.W_hh, rnn.b, rnn.W_hy))
    h = torch.zeros(x.shape[1], W_hh.shape[0], dtype=torch.float64)
    hs = []
    for t in range(x.shape[0]):
        h = torch.tanh(h @ W_hh.T + x[t] @ W_xh.T + b)
        hs.append(h)
    y = h @ W_hy.T
    delta = torch.ones_like(y) @ W_hy
    deltas = [delta]
    for t in range(len(hs) - 1, 0, -1):
        delta = (delta * (1 - hs[t] ** 2)) @ W_hh
        deltas.append(delta)
    return y, hs, deltas[::-1]


@SETTINGS
@given(T=st.integers(1, 12), B=st.integers(1, 4), radius=st.floats(0.3, 2.0),
       seed=st.integers(0, 100))
def test_rnn_forward_and_hidden_grads_match_manual_bptt(T, B, radius, seed):
    """y and h.grad (kept through retain_grad) equal the hand-written recursion."""
    rnn = SimpleRNN(3, 6, output_size=2, spectral_radius=radius, seed=seed).double()
    x = torch.randn(T, B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = rnn(x)
    y.sum().backward()
    y_ref, hs_ref, deltas = _manual_rnn(rnn, x)
    assert y.shape == (B, 2) and len(rnn.hidden_states) == T
    torch.testing.assert_close(y.detach(), y_ref)
    for h, h_ref, d in zip(rnn.hidden_states, hs_ref, deltas):
        torch.testing.assert_close(h.detach(), h_ref)
        torch.testing.assert_close(h.grad, d)


def test_rnn_gradient_norms_match_manual_bptt():
    """rnn_gradient_norms: standard-normal input from a generator seeded with `seed`
    (as documented), L = sum(y), norms of the hand-computed dL/dh_t."""
    rnn = SimpleRNN(2, 7, output_size=3, spectral_radius=1.2, seed=1).double()
    g = rnn_gradient_norms(rnn, 9, batch=5, seed=11)
    x = torch.randn(9, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    _, _, deltas = _manual_rnn(rnn, x)
    assert g.dtype == np.float64 and g.shape == (9,)
    np.testing.assert_allclose(g, [d.norm().item() for d in deltas], rtol=1e-10)
    assert all(p.grad is None for p in rnn.parameters())  # parameters' .grad untouched


@pytest.mark.parametrize("radius", [0.5, 0.9, 1.0, 1.5])
def test_linear_orthogonal_rnn_gradient_scales_as_radius_power(radius):
    """Closed form: linear phi, W_hh = r Q (Q orthogonal) -> ||dL/dh_t|| = r^(T-t) ||dL/dh_T||."""
    rnn = SimpleRNN(3, 10, activation="linear", spectral_radius=radius,
                    recurrent_init="orthogonal", seed=0).double()
    T = 15
    g = rnn_gradient_norms(rnn, T)
    # rtol: W_hh is stored in float32, so Q is orthogonal to ~1e-7 per step.
    np.testing.assert_allclose(g / g[-1], radius ** np.arange(T - 1, -1, -1.0), rtol=1e-5)
    if radius > 1:
        assert np.all(np.diff(g) < 0)  # larger far back in time: exploding
    if radius < 1:
        assert np.all(np.diff(g) > 0)  # smaller far back in time: vanishing


def test_linear_gaussian_rnn_gradient_grows_or_shrinks_with_radius():
    """Gaussian W_hh (non-normal): over long spans the norm still follows rho^(T-t)."""
    T = 60
    big = rnn_gradient_norms(SimpleRNN(2, 16, activation="linear", spectral_radius=1.5,
                                       seed=0).double(), T)
    small = rnn_gradient_norms(SimpleRNN(2, 16, activation="linear", spectral_radius=0.5,
                                         seed=0).double(), T)
    assert big[0] / big[-1] > 1.5 ** (T / 2)
    assert small[0] / small[-1] < 0.5 ** (T / 2)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(input_size=0), ValueError, "input_size must be an int >= 1, got 0"),
    (dict(hidden_size=0), ValueError, "hidden_size must be an int >= 1, got 0"),
    (dict(output_size=0), ValueError, "output_size must be an int >= 1, got 0"),
    (dict(hidden_size=2.0), TypeError, "hidden_size must be an int"),
    (dict(spectral_radius=0.0), ValueError, "spectral_radius must be a finite number > 0, got 0.0"),
    (dict(spectral_radius=-1.0), ValueError, "spectral_radius must be a finite number > 0"),
    (dict(recurrent_init="uniform"), ValueError, "recurrent_init must be one of"),
    (dict(activation="nope"), ValueError, "nope"),
])
def test_rnn_errors(kwargs, exc, match):
    args = dict(input_size=2, hidden_size=3) | kwargs
    with pytest.raises(exc, match=match):
        SimpleRNN(**args)


def test_rnn_forward_and_gradient_norm_errors():
    rnn = SimpleRNN(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 2\)"):
        rnn(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"x must have shape"):
        rnn(torch.randn(4, 1, 5))
    with pytest.raises(ValueError, match="seq_len must be an int >= 1, got 0"):
        rnn_gradient_norms(rnn, 0)
    with pytest.raises(ValueError, match="batch must be an int >= 1, got 0"):
        rnn_gradient_norms(rnn, 3, batch=0)
    with pytest.raises(TypeError, match="rnn must be a SimpleRNN"):
        rnn_gradient_norms(nn.RNN(2, 3), 3)


def test_rnn_deepcopy_after_a_forward_pass_with_grad():
    """copy.deepcopy works after a forward pass that filled hidden_states with non-leaf
    tensors (torch refuses to deepcopy those); the copy has equal parameters (torch.equal)
    and no hidden states, the original keeps its own."""
    import copy
    rnn = SimpleRNN(2, 4, seed=0)
    rnn(torch.randn(5, 3, 2)).sum().backward()
    twin = copy.deepcopy(rnn)
    assert twin.hidden_states == [] and len(rnn.hidden_states) == 5
    for a, b in zip(rnn.parameters(), twin.parameters()):
        assert torch.equal(a, b) and a is not b


def test_rnn_forward_checks_its_input():
    """Named errors instead of torch's dtype mismatch or numpy's missing .dim()."""
    rnn = SimpleRNN(2, 6, seed=0)
    with pytest.raises(TypeError, match=r"x must have the model's dtype float32, got a float64"):
        rnn(torch.randn(3, 4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch tensor, got a float64 array"):
        rnn(np.zeros((3, 4, 2)))
    with pytest.raises(TypeError, match="x must have a real floating-point dtype"):
        rnn(torch.zeros(3, 4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x must be finite data"):
        rnn(torch.full((3, 4, 2), float("nan")))
    assert rnn.double()(torch.randn(3, 4, 2, dtype=torch.float64)).dtype == torch.float64
    wrapped = BatchFirst(SimpleRNN(2, 6, seed=0))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 2\)"):
        wrapped(torch.randn(4, 3, 5))
    with pytest.raises(TypeError, match="x must have the model's dtype"):
        wrapped(torch.randn(4, 3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="rnn must be a torch.nn.Module"):
        BatchFirst(SimpleRNN)


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_largest_seeds_work(seed):
    """Seeds up to 2**64 - 1 reach torch.Generator.manual_seed (and the forked global RNG)."""
    a, b = mlp(3, 2, 4, 2, seed=seed), mlp(3, 2, 4, 2, seed=seed)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = mlp(3, 2, 4, 2, init=lambda w: w.normal_(), seed=seed)
    d = mlp(3, 2, 4, 2, init=lambda w: w.normal_(), seed=seed)
    assert all(torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters()))
    rnn = SimpleRNN(2, 3, seed=seed)
    assert torch.equal(rnn.W_hh, SimpleRNN(2, 3, seed=seed).W_hh)
    g = rnn_gradient_norms(rnn, 4, seed=seed)
    np.testing.assert_array_equal(g, rnn_gradient_norms(rnn, 4, seed=seed))
    with pytest.raises(ValueError, match="seed must be an int in"):
        mlp(3, 2, 4, 2, seed=2**64)
