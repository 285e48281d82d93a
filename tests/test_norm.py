"""Tests of companion.norm and of ``mlp(norm=...)``.

References: torch's own layers (``torch.nn.BatchNorm1d/2d``, ``LayerNorm``, ``RMSNorm``,
``GroupNorm``) for outputs, gradients, running statistics over many steps, eval-mode
outputs and ``state_dict`` round trips; autograd (float64) for the hand-written backward
passes; a float64 RMS-norm reference written here (for torches without ``nn.RMSNorm``);
properties that must hold (the backward projections, invariances).
"""
from __future__ import annotations

import inspect
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import norm
from companion.nets import mlp

SETTINGS = settings(max_examples=20, deadline=None)
# float32: a few tens of ulps of the largest entry (gradients through a small group can
# reach ~10; a 3-value group of GroupNorm(4, 4) at batch 1 once differed by 2.7e-6);
# float64: 1e-12 as the issue asks.
TOL = {torch.float32: 4e-6, torch.float64: 1e-12}
HAS_RMSNORM = hasattr(torch.nn, "RMSNorm")


def _pair(ours, theirs, dtype):
    return ours.to(dtype), theirs.to(dtype)


def _assert_close(a, b, dtype, what, scale=None):
    scale = max(1.0, b.abs().max().item(), scale or 0.0)
    diff = (a - b).abs().max().item()
    assert diff <= TOL[dtype] * scale, f"{what}: max |diff| {diff:.3g} (largest entry {scale:.3g})"


def _same_random_params(ours, theirs, gen, dtype):
    """Give both layers the same random (non-trivial) gamma and beta."""
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
            q.copy_(p)


def _match_forward_backward(ours, theirs, x, gen, dtype, *, params=True):
    """Outputs, input gradients (and parameter gradients) of the two layers agree."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    _assert_close(ya, yb, dtype, "output")
    g = torch.randn(ya.shape, generator=gen, dtype=dtype)
    ya.backward(g), yb.backward(g)
    _assert_close(xa.grad, xb.grad, dtype, "input gradient")
    if params:
        for p, q in zip(ours.parameters(), theirs.parameters()):
            _assert_close(p.grad, q.grad, dtype, "parameter gradient", scale=g.abs().sum().item())


# ------------------------------------------------------------------- batch norm vs torch
@SETTINGS
@given(kind=st.sampled_from(["1d", "1d3", "2d"]), channels=st.integers(1, 5),
       batch=st.integers(3, 7), momentum=st.sampled_from([0.1, 0.5, 0.0, 1.0, None]),
       eps=st.sampled_from([1e-5, 1e-3, 0.1]), affine=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000))
def test_batch_norm_matches_torch_over_many_steps(kind, channels, batch, momentum, eps, affine,
                                                  dtype, seed):
    """Reference: torch.nn.BatchNorm1d/2d, trained side by side for 12 steps (outputs,
    >= 3 values per channel, see the layer-norm test;
    input and parameter gradients, running statistics), then in eval mode."""
    ours_cls, theirs_cls = ((norm.BatchNorm2d, torch.nn.BatchNorm2d) if kind == "2d"
                            else (norm.BatchNorm1d, torch.nn.BatchNorm1d))
    shape = {"1d": (batch, channels), "1d3": (batch, channels, 3), "2d": (batch, channels, 3, 2)}[kind]
    ours, theirs = _pair(ours_cls(channels, eps=eps, momentum=momentum, affine=affine),
                         theirs_cls(channels, eps=eps, momentum=momentum, affine=affine), dtype)
    gen = torch.Generator().manual_seed(seed)
    _same_random_params(ours, theirs, gen, dtype)
    for step in range(12):
        x = torch.randn(shape, generator=gen, dtype=dtype) * 2 + 0.5 * step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        _assert_close(ya, yb, dtype, f"output at step {step}")
        g = torch.randn(ya.shape, generator=gen, dtype=dtype)
        ours.zero_grad(), theirs.zero_grad()
        ya.backward(g)
        yb.backward(g)
        # x_hat = (x - mu) / sigma carries rounding of ulp(|x|) / sigma: a channel whose few
        # values lie close together (batch 3) amplifies it, in torch's float32 as in ours
        dims = [0] + list(range(2, x.dim()))
        cond = (x.abs().amax(dims) / (x.var(dims, unbiased=False) + eps).sqrt()).max().item()
        _assert_close(xa.grad, xb.grad, dtype, f"input gradient at step {step}",
                      scale=cond * yb.detach().abs().max().item() if dtype == torch.float32 else None)
        # d gamma = sum_i g_i x_hat_i: rounding grows with the sum of |terms| (<= sum |g| sqrt n)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            _assert_close(p.grad, q.grad, dtype, f"parameter gradient at step {step}",
                          scale=g.abs().sum().item())
    _assert_close(ours.running_mean, theirs.running_mean, dtype, "running_mean")
    _assert_close(ours.running_var, theirs.running_var, dtype, "running_var")
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 12
    ours.eval(), theirs.eval()
    x = torch.randn((1,) + shape[1:], generator=gen, dtype=dtype)      # a batch of one is fine
    _assert_close(ours(x), theirs(x), dtype, "eval output")


@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_without_running_stats_matches_torch_in_eval(track):
    """Reference: torch. track_running_stats=False uses batch statistics in eval mode too,
    and has no running buffers in its state dict."""
    ours, theirs = norm.BatchNorm1d(3, track_running_stats=track), torch.nn.BatchNorm1d(3, track_running_stats=track)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(6, 3) * 3
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda m: m.BatchNorm1d(4), lambda m: m.BatchNorm1d(4, affine=False),
    lambda m: m.BatchNorm2d(4, momentum=None), lambda m: m.LayerNorm((4, 3)),
    lambda m: m.LayerNorm(4, elementwise_affine=False), lambda m: m.GroupNorm(2, 4),
    lambda m: m.GroupNorm(2, 4, affine=False),
] + ([lambda m: m.RMSNorm(4)] if HAS_RMSNORM else []))
def test_state_dict_loads_both_ways(make):
    """Reference: torch's own layer of the same name. Same keys, same shapes, and
    load_state_dict works in both directions (strict)."""
    ours, theirs = make(norm), make(torch.nn)
    with torch.no_grad():
        for t in list(ours.parameters()) + [b for b in ours.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand_like(t) + 0.5)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), k
    ours.load_state_dict(make(torch.nn).state_dict())


def test_old_checkpoint_without_num_batches_tracked_loads():
    """Reference: torch's _NormBase, which fills in num_batches_tracked = 0 for version-1
    state dicts."""
    state = torch.nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    layer = norm.BatchNorm1d(3)
    layer.load_state_dict(state)
    assert int(layer.num_batches_tracked) == 0


def test_swapped_into_a_cnn_a_torch_state_dict_loads_and_gives_torch_outputs():
    """Reference: the same small CNN with torch's layers. Replacing every torch norm by
    ours, loading the torch model's state dict (after some training steps, so the running
    statistics are not trivial), gives the same outputs in train and eval mode."""
    torch.manual_seed(0)

    def cnn(m):
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), m.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), m.GroupNorm(4, 8), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 16), m.BatchNorm1d(16), torch.nn.ReLU(),
            m.LayerNorm(16), torch.nn.Linear(16, 3))

    theirs = cnn(torch.nn).double()
    opt = torch.optim.SGD(theirs.parameters(), lr=0.05)
    for _ in range(5):
        x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
        opt.zero_grad()
        theirs(x).pow(2).mean().backward()
        opt.step()
    ours = cnn(norm).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        assert torch.allclose(ours(x), theirs(x), atol=1e-12), mode
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.allclose(a.double(), b.double(), atol=1e-12), k


# ----------------------------------------------------------- layer, RMS and group norm
@SETTINGS
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       tail=st.lists(st.integers(3, 5), min_size=1, max_size=2), eps=st.sampled_from([1e-5, 0.1]),
       affine=st.booleans(), bias=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 10_000))
def test_layer_norm_matches_torch(lead, tail, eps, affine, bias, dtype, seed):
    """Reference: torch.nn.LayerNorm: outputs and gradients of input and parameters.

    At least 3 values are normalized together: with 1 or 2 the normalized values are
    constant (0, or +-1), the true input gradient is 0, and both libraries return
    rounding noise amplified by 1/sqrt(eps)."""
    ours, theirs = _pair(norm.LayerNorm(tail, eps=eps, elementwise_affine=affine, bias=bias),
                         torch.nn.LayerNorm(tail, eps=eps, elementwise_affine=affine, bias=bias), dtype)
    gen = torch.Generator().manual_seed(seed)
    _same_random_params(ours, theirs, gen, dtype)
    x = torch.randn(lead + tail, generator=gen, dtype=dtype) * 3 + 1
    _match_forward_backward(ours, theirs, x, gen, dtype)


def _rms_reference(x, shape, gamma, eps):
    """float64 RMS norm written out: x / sqrt(mean(x^2) + eps) * gamma."""
    x = x.double()
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    out = x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + eps)
    return out if gamma is None else out * gamma.double()


@SETTINGS
@given(lead=st.integers(1, 5), tail=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       eps=st.sampled_from([None, 1e-6, 0.1]), affine=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000))
def test_rms_norm_matches_a_float64_reference(lead, tail, eps, affine, dtype, seed):
    """Reference: a float64 formula written in this test (on every torch; the comparison
    with torch.nn.RMSNorm is the next test, skipped on torch < 2.4)."""
    gen = torch.Generator().manual_seed(seed)
    ours = norm.RMSNorm(tail, eps=eps, elementwise_affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            ours.weight.copy_(torch.randn(ours.weight.shape, generator=gen, dtype=dtype))
    x = torch.randn([lead] + tail, generator=gen, dtype=dtype) * 2
    y = ours(x)
    eps_value = torch.finfo(dtype).eps if eps is None else eps
    _assert_close(y.double(), _rms_reference(x, tuple(tail), ours.weight, eps_value),
                  dtype, "vs float64 reference")


@pytest.mark.skipif(not HAS_RMSNORM, reason="this torch (< 2.4) has no torch.nn.RMSNorm; "
                    "test_rms_norm_matches_a_float64_reference checks ours against a float64 formula")
@SETTINGS
@given(lead=st.integers(1, 5), tail=st.lists(st.integers(3, 5), min_size=1, max_size=2),
       eps=st.sampled_from([None, 1e-6, 0.1]), affine=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 10_000))
def test_rms_norm_matches_torch(lead, tail, eps, affine, dtype, seed):
    """Reference: torch.nn.RMSNorm (torch >= 2.4): outputs and input gradients."""
    gen = torch.Generator().manual_seed(seed)
    ours = norm.RMSNorm(tail, eps=eps, elementwise_affine=affine).to(dtype)
    theirs = torch.nn.RMSNorm(tail, eps=eps, elementwise_affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            ours.weight.copy_(torch.randn(ours.weight.shape, generator=gen, dtype=dtype))
            theirs.weight.copy_(ours.weight)
    x = torch.randn([lead] + tail, generator=gen, dtype=dtype) * 2
    _match_forward_backward(ours, theirs, x, gen, dtype)


@SETTINGS
@given(groups_and_channels=st.sampled_from([(1, 4), (2, 4), (4, 4), (3, 6), (2, 8)]),
       positions=st.lists(st.integers(1, 4), min_size=0, max_size=2), batch=st.integers(1, 4),
       affine=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 10_000))
def test_group_norm_matches_torch(groups_and_channels, positions, batch, affine, dtype, seed):
    """Reference: torch.nn.GroupNorm: outputs and input gradients, 2- to 4-D inputs."""
    G, C = groups_and_channels
    if C // G * int(np.prod(positions or [1])) < 3:
        positions = positions + [3]     # >= 3 values per group (see the layer-norm test)
    ours, theirs = _pair(norm.GroupNorm(G, C, affine=affine), torch.nn.GroupNorm(G, C, affine=affine), dtype)
    gen = torch.Generator().manual_seed(seed)
    _same_random_params(ours, theirs, gen, dtype)
    x = torch.randn([batch, C] + positions, generator=gen, dtype=dtype) * 2 - 1
    _match_forward_backward(ours, theirs, x, gen, dtype)


# ---------------------------------------------------------------- pure functions, numpy
def test_numpy_and_torch_give_the_same_numbers():
    """Reference: the same function on a torch tensor (itself checked against torch's
    layers above); the pure functions return new running statistics, inputs untouched."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    running = norm.RunningStats(np.zeros(3), np.ones(3), 0)
    y, new = norm.batch_norm_train(x, gamma, beta, running, momentum=0.2)
    yt, newt = norm.batch_norm_train(torch.tensor(x), torch.tensor(gamma), torch.tensor(beta),
                                     norm.RunningStats(torch.zeros(3, dtype=torch.float64),
                                                       torch.ones(3, dtype=torch.float64), 0), momentum=0.2)
    assert np.allclose(y, yt.numpy(), atol=1e-14) and np.allclose(new.var, newt.var.numpy(), atol=1e-14)
    assert np.array_equal(running.mean, np.zeros(3)) and new.count == 1       # not mutated
    for fn in (lambda a: norm.layer_norm(a, (3, 4)), lambda a: norm.rms_norm(a, 4),
               lambda a: norm.group_norm(a, 3)):
        assert np.allclose(fn(x), fn(torch.tensor(x)).numpy(), atol=1e-14)
    ye = norm.batch_norm_eval(x, new.mean, new.var, gamma, beta)
    assert np.allclose(ye, norm.batch_norm_eval(torch.tensor(x), newt.mean, newt.var,
                                                torch.tensor(gamma), torch.tensor(beta)).numpy())


def test_running_variance_is_unbiased_and_momentum_is_torchs():
    """Reference: the closed form. From (0, 1), one step with momentum m gives
    m * mean and (1 - m) + m * var(ddof=1) -- the unbiased variance, n / (n - 1) times
    the biased one used to normalize."""
    x = np.array([[1.0], [2.0], [4.0], [9.0]])
    _, new = norm.batch_norm_train(x, running=norm.RunningStats(np.zeros(1), np.ones(1)), momentum=0.1)
    assert new.mean[0] == pytest.approx(0.1 * x.mean())
    assert new.var[0] == pytest.approx(0.9 + 0.1 * x.var(ddof=1))
    y, _ = norm.batch_norm_train(x, eps=0.0)
    assert y.std() == pytest.approx(1.0) and y.mean() == pytest.approx(0.0, abs=1e-15)  # biased


@SETTINGS
@given(shape=st.sampled_from([(5, 3), (4, 2, 3), (3, 2, 2, 2)]), affine=st.booleans(),
       seed=st.integers(0, 10_000))
def test_hand_written_batch_norm_backward_matches_autograd(shape, affine, seed):
    """Reference: autograd through batch_norm_train, float64, to 1e-10."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=shape) * 3 + 1, requires_grad=True)
    C = shape[1]
    gamma = torch.tensor(rng.normal(size=C), requires_grad=True) if affine else None
    beta = torch.tensor(rng.normal(size=C), requires_grad=True) if affine else None
    g = torch.tensor(rng.normal(size=shape))
    y, _ = norm.batch_norm_train(x, gamma, beta)
    y.backward(g)
    dx, dgamma, dbeta = norm.batch_norm_backward(g, x.detach(), None if gamma is None else gamma.detach())
    assert torch.allclose(dx, x.grad, atol=1e-10, rtol=0)
    if affine:
        assert torch.allclose(dgamma, gamma.grad, atol=1e-10, rtol=0)
        assert torch.allclose(dbeta, beta.grad, atol=1e-10, rtol=0)
    # the two projections: with eps = 0 the gradient is orthogonal to the per-channel mean
    # direction and to x_hat (a property of the formula, stated in the chapter)
    axes = (0,) + tuple(range(2, len(shape)))
    x_hat = norm.batch_norm_train(x.detach(), eps=0.0)[0]
    dx = norm.batch_norm_backward(g, x.detach(), None if gamma is None else gamma.detach(), eps=0.0)[0]
    assert torch.allclose(dx.sum(dim=axes), torch.zeros(C, dtype=torch.float64), atol=1e-10)
    assert torch.allclose((dx * x_hat).sum(dim=axes), torch.zeros(C, dtype=torch.float64), atol=1e-10)


@SETTINGS
@given(lead=st.integers(1, 4), tail=st.lists(st.integers(2, 4), min_size=1, max_size=2),
       affine=st.booleans(), seed=st.integers(0, 10_000))
def test_hand_written_layer_norm_backward_matches_autograd(lead, tail, affine, seed):
    """Reference: autograd through layer_norm, float64, to 1e-10."""
    rng = np.random.default_rng(seed)
    shape = [lead] + tail
    x = torch.tensor(rng.normal(size=shape), requires_grad=True)
    gamma = torch.tensor(rng.normal(size=tail), requires_grad=True) if affine else None
    beta = torch.tensor(rng.normal(size=tail), requires_grad=True) if affine else None
    g = torch.tensor(rng.normal(size=shape))
    norm.layer_norm(x, tail, gamma, beta).backward(g)
    dx, dgamma, dbeta = norm.layer_norm_backward(g, x.detach(), tail,
                                                 None if gamma is None else gamma.detach())
    assert torch.allclose(dx, x.grad, atol=1e-10, rtol=0)
    if affine:
        assert torch.allclose(dgamma, gamma.grad, atol=1e-10, rtol=0)
        assert torch.allclose(dbeta, beta.grad, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------ invariances
def test_scale_invariance_of_a_linear_layer_followed_by_batch_norm():
    """Property (Ioffe & Szegedy; van Laarhoven 2017): BN(cWx) = BN(Wx) (up to eps), so the
    loss at cW equals the loss at W and its gradient with respect to W scales by 1/c."""
    torch.manual_seed(0)
    x, t = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 4, dtype=torch.float64)
    W = torch.randn(4, 5, dtype=torch.float64)
    losses, grads = [], []
    for c in (1.0, 10.0):
        Wc = (c * W).requires_grad_()
        y, _ = norm.batch_norm_train(x @ Wc.T, eps=0.0)
        loss = ((y - t) ** 2).mean()
        loss.backward()
        losses.append(loss.item()), grads.append(Wc.grad)
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    assert torch.allclose(grads[1], grads[0] / 10.0, atol=1e-14)


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, error, message", [
    (lambda: norm.BatchNorm1d(3).train()(torch.randn(1, 3)), ValueError, "more than 1 value per channel"),
    (lambda: norm.BatchNorm1d(3)(torch.randn(4, 5)), ValueError, r"expects 3 channels.*\(4, 5\)"),
    (lambda: norm.BatchNorm1d(3)(torch.randn(4, 3, 2, 2)), ValueError, r"2D or 3D.*\(4, 3, 2, 2\)"),
    (lambda: norm.BatchNorm2d(3)(torch.randn(4, 3)), ValueError, r"4D input x, got shape \(4, 3\)"),
    (lambda: norm.BatchNorm1d(3)(np.ones((4, 3))), TypeError, "torch tensor"),
    (lambda: norm.BatchNorm1d(3, eps=-1e-5), ValueError, "eps must be a finite number >= 0, got -1e-05"),
    (lambda: norm.BatchNorm1d(3, momentum=1.5), ValueError, r"momentum must be a finite number in \[0, 1\], got 1.5"),
    (lambda: norm.BatchNorm1d(3, momentum="0.1"), TypeError, "momentum"),
    (lambda: norm.BatchNorm1d(0), ValueError, "num_features must be an int >= 1, got 0"),
    (lambda: norm.BatchNorm1d(2.0), TypeError, "num_features must be an int"),
    (lambda: norm.GroupNorm(3, 8), ValueError, r"num_channels \(8\) must be divisible by num_groups \(3\)"),
    (lambda: norm.GroupNorm(2, 4)(torch.randn(2, 6, 3)), ValueError, r"\(N, 4, \*\).*\(2, 6, 3\)"),
    (lambda: norm.LayerNorm(4)(torch.randn(2, 5)), ValueError, r"normalized_shape \(4,\).*\(2, 5\)"),
    (lambda: norm.LayerNorm("4"), TypeError, "normalized_shape"),
    (lambda: norm.RMSNorm(4, eps=-1.0), ValueError, "eps must be a finite number >= 0, got -1.0"),
    (lambda: norm.layer_norm(np.ones((2, 3), dtype=int), 3), TypeError, "floating-point dtype"),
    (lambda: norm.batch_norm_train(np.ones((4, 3)), np.ones(2)), ValueError, r"gamma must have shape \(3,\), got \(2,\)"),
    (lambda: norm.batch_norm_train([[1.0, 2.0]]), TypeError, "numpy array or a torch tensor"),
    (lambda: norm.batch_norm_backward(np.ones((4, 2)), np.ones((4, 3))), ValueError, r"grad_y must have the shape"),
    (lambda: mlp(4, 1, width=8, depth=2, norm="instance"), ValueError, r"norm must be None, one of \('batch'"),
    # torch raises RuntimeError "mixed dtype" for these; we name x and both dtypes
    (lambda: norm.BatchNorm1d(3)(torch.randn(4, 3, dtype=torch.float64)), TypeError,
     r"x must have the module's dtype float32, got a float64 tensor"),
    (lambda: norm.LayerNorm(3)(torch.randn(4, 3, dtype=torch.float64)), TypeError,
     r"x must have the module's dtype float32"),
    (lambda: norm.batch_norm_train(torch.randn(4, 3), np.ones(3)), TypeError,
     r"gamma must be a torch tensor like x, got a float64 array"),
    (lambda: norm.batch_norm_train(np.ones((4, 3)), running=norm.RunningStats(np.zeros(3), np.ones(2))),
     ValueError, r"running.var must have shape \(3,\), got \(2,\)"),
    (lambda: norm.batch_norm_eval(np.ones((4, 3)), None, np.ones(3)), TypeError,
     r"running_mean must be a numpy array or a torch tensor, got None"),
    (lambda: norm.layer_norm(np.ones((2, 3)), [3, 0]), ValueError, r"normalized_shape\[1\] must be an int >= 1"),
    (lambda: norm.BatchNorm1d(3, dtype=torch.int64), TypeError, "dtype must be a floating-point torch.dtype"),
    (lambda: norm.BatchNorm1d(3, device="gpu"), ValueError, "device must name a torch device"),
    (lambda: norm.invariances(k=5), ValueError, "k must be an even int >= 4"),
])
def test_bad_input_gives_a_named_error(call, error, message):
    """Reference: the error messages documented in the docstrings (and, for a batch of one,
    torch's own wording)."""
    with pytest.raises(error, match=message):
        call()


def test_torch_raises_the_same_for_a_batch_of_one():
    """Reference: torch's BatchNorm1d raises ValueError on one value per channel too; ours
    says the same thing (the wording the chapter quotes)."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.BatchNorm1d(3).train()(torch.randn(1, 3))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        norm.BatchNorm1d(3).train()(torch.randn(1, 3))


# ---------------------------------------------------------------------- mlp(norm=...)
@pytest.mark.parametrize("name, cls", [("batch", norm.BatchNorm1d), ("layer", norm.LayerNorm),
                                       ("rms", norm.RMSNorm), ("group", norm.GroupNorm)])
def test_mlp_inserts_the_norm_between_linear_and_activation(name, cls):
    """Reference: the documented layout fc{l}, norm{l}, act{l}; the Linear weights are the
    same as without a norm for the same seed (norm layers draw nothing)."""
    net = mlp(5, 2, width=8, depth=3, activation="relu", norm=name, seed=0)
    plain = mlp(5, 2, width=8, depth=3, activation="relu", seed=0)
    names = [n for n, _ in net.named_children()]
    assert names == ["fc1", "norm1", "act1", "fc2", "norm2", "act2", "fc3", "norm3", "act3", "out"]
    assert all(isinstance(getattr(net, f"norm{l}"), cls) for l in (1, 2, 3))
    for l in (1, 2, 3):
        assert torch.equal(getattr(net, f"fc{l}").weight, getattr(plain, f"fc{l}").weight)
    assert net(torch.randn(4, 5)).shape == (4, 2)
    from companion import diagnostics
    with diagnostics.record(net) as rec:       # the norms are layers that record labels
        net(torch.randn(4, 5)).sum().backward()
    assert {"norm1", "norm2", "norm3"} <= set(rec.output_grad_norms)


def test_mlp_norm_accepts_torch_layers_and_defaults_stay_unchanged():
    """Reference: torch.nn.BatchNorm1d passed as the factory; norm=None is the old network."""
    net = mlp(5, 2, width=8, depth=2, norm=torch.nn.BatchNorm1d, seed=0)
    assert isinstance(net.norm1, torch.nn.BatchNorm1d)
    assert [n for n, _ in mlp(5, 2, width=8, depth=2, seed=0).named_children()] == \
        ["fc1", "act1", "fc2", "act2", "out"]
    with pytest.raises(TypeError, match="must return an nn.Module"):
        mlp(5, 2, width=8, depth=2, norm=lambda w: w)


def test_batch_norm_makes_the_mlp_output_independent_of_the_weight_scale():
    """Property: with batch norm after every hidden Linear (no bias), multiplying all hidden
    weights by c leaves the network's training-mode output unchanged (up to eps)."""
    x = torch.randn(64, 5, dtype=torch.float64)
    outs = []
    for scale in (0.5, 4.0):
        net = mlp(5, 1, width=16, depth=4, activation="tanh", weight_scale=1.0, bias=False,
                  norm="batch", seed=3).double()
        with torch.no_grad():
            for l in range(1, 5):
                getattr(net, f"fc{l}").weight.mul_(scale)
            for m in net.modules():
                if isinstance(m, norm.BatchNorm1d):
                    m.eps = 1e-300      # exact to float64 (torch refuses eps = 0 in training)
        outs.append(net(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-10)


# ------------------------------------------------------ the chapter's measured claims
def _backward_factor(norm_name, activation, depth, width, batch, seed):
    """The chapter's measurement: geometric mean over the middle 60 % of the layers of
    ||delta_l||^2 / ||delta_{l+1}||^2 at initialization (bias-free MLP, squared error)."""
    from companion import diagnostics

    gen = torch.Generator().manual_seed(1000 + seed)
    x, y = torch.randn(batch, width, generator=gen), torch.randn(batch, 1, generator=gen)
    net = mlp(width, 1, width=width, depth=depth, activation=activation,
              weight_scale=np.sqrt(2) if activation == "relu" else 1.0, bias=False,
              norm=norm_name, seed=seed)
    with diagnostics.record(net, activation_stats=False) as rec:
        torch.nn.functional.mse_loss(net(x), y).backward()
    s = np.array([rec.output_grad_norms[f"fc{l}"] for l in range(1, depth + 1)])
    r = (s[:-1] / s[1:]) ** 2
    return float(np.exp(np.log(r[depth // 5: depth - 1 - depth // 5]).mean()))


def test_batch_norm_gradient_explosion_matches_mean_field_theory():
    """Reference: Yang et al. (2019): with batch norm, ReLU, no skips, the squared backward
    signal grows by pi/(pi-1) ~ 1.467 per layer (large width and batch).

    Tolerance 0.03: over 5 seeds at width 256, batch 128, depth 50 a single seed's factor
    has sd ~0.01, so the mean of 3 seeds has sd ~0.006 (0.03 is 5 sd); the finite-size
    drift is +0.12 at width 64 / batch 16 but under 0.015 here (the chapter shows both).
    Controls: without a norm (He's weights) and with layer norm, ReLU stays at 1 +- 0.05."""
    theory = np.pi / (np.pi - 1)
    bn = np.mean([_backward_factor("batch", "relu", 30, 256, 128, s) for s in range(3)])
    assert abs(bn - theory) < 0.03, (bn, theory)
    for control in (None, "layer"):
        assert abs(np.mean([_backward_factor(control, "relu", 30, 256, 128, s) for s in range(2)]) - 1) < 0.05


def test_layer_norm_backward_factor_is_mean_square_slope_over_mean_square():
    """Reference: the chapter's derivation, E[f'(u)^2] / E[f(u)^2] for u ~ N(0, 1), computed
    here by Gauss-Hermite quadrature; measured for tanh with layer norm (tolerance as above)."""
    u, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    theory = float((1 - np.tanh(u) ** 2) ** 2 @ w / (np.tanh(u) ** 2 @ w))
    measured = np.mean([_backward_factor("layer", "tanh", 30, 256, 128, s) for s in range(2)])
    assert abs(measured - theory) < 0.03, (measured, theory)


def test_invariance_table_is_ba_et_al_table_1():
    """Reference: Ba, Kiros & Hinton (2016), Table 1 (batch and layer norm); RMS norm: no
    re-centring invariance (Zhang & Sennrich 2019); group norm: per example, like layer norm."""
    table = norm.invariances()
    order = list(norm.TRANSFORMATIONS)   # matrix scale, matrix centre, vector scale, data scale, data centre, case scale
    expected = {"batch": [True, False, True, True, True, False],
                "layer": [True, True, False, True, False, True],
                "rms": [True, False, False, True, False, True],
                "group": [True, True, False, True, False, True]}
    assert {n: [table[n][t] for t in order] for n in table} == expected


# ------------------------------------------- conformance found with torch's own test inputs
def _empty_cases():
    """(ours, theirs, empty input) for every module, 2- to 4-D, an empty batch or an empty
    spatial axis (the last shard of a dataset on one process can be empty)."""
    return [
        (lambda: norm.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3), (0, 3)),
        (lambda: norm.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3), (0, 3, 5)),
        (lambda: norm.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3), (2, 3, 0)),
        (lambda: norm.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (0, 3, 4, 4)),
        (lambda: norm.BatchNorm2d(3, momentum=None), lambda: torch.nn.BatchNorm2d(3, momentum=None),
         (2, 3, 0, 4)),
        (lambda: norm.LayerNorm(3), lambda: torch.nn.LayerNorm(3), (0, 3)),
        (lambda: norm.LayerNorm([2, 3]), lambda: torch.nn.LayerNorm([2, 3]), (0, 5, 2, 3)),
        (lambda: norm.RMSNorm(3), lambda: torch.nn.RMSNorm(3), (0, 3)),
        (lambda: norm.GroupNorm(1, 4), lambda: torch.nn.GroupNorm(1, 4), (0, 4)),
        (lambda: norm.GroupNorm(2, 4), lambda: torch.nn.GroupNorm(2, 4), (2, 4, 0)),
    ]


@pytest.mark.parametrize("make_ours, make_theirs, shape", _empty_cases())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_an_empty_batch_gives_what_torch_gives(make_ours, make_theirs, shape, mode):
    """Reference: torch's modules on the same empty input: an empty output of the input's
    shape; batch norm leaves its running statistics as they were but counts the batch
    (num_batches_tracked + 1); the parameters' gradients are zeros, not None (where torch's
    are NaN, see below, ours are the zeros of a sum over nothing)."""
    ours, theirs = make_ours(), make_theirs()
    theirs.load_state_dict(ours.state_dict())
    for m in (ours, theirs):
        getattr(m, mode)()
        if getattr(m, "running_mean", None) is not None:
            with torch.no_grad():
                m.running_mean.fill_(2.0), m.running_var.fill_(3.0)
    xa, xb = torch.empty(shape, requires_grad=True), torch.empty(shape, requires_grad=True)
    ya, yb = ours(xa), theirs(xb)
    assert ya.shape == yb.shape == torch.Size(shape)
    ya.sum().backward(), yb.sum().backward()
    assert xa.grad.shape == xb.grad.shape
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad is not None and q.grad is not None, name
        # torch's GroupNorm kernel gives NaN here for an empty spatial axis (it divides by
        # the empty group's size); a sum over nothing is 0, which is what ours gives
        want = torch.where(q.grad.isnan(), torch.zeros_like(q.grad), q.grad)
        assert torch.equal(p.grad, want), name
    for (name, a), b in zip(ours.named_buffers(), theirs.buffers()):
        assert torch.equal(a, b), f"{name}: ours {a}, torch's {b}"


def test_an_empty_batch_then_a_full_one_matches_torch():
    """Reference: torch.nn.BatchNorm1d with the cumulative average (momentum=None), where
    the counted empty batch changes the next batch's weight 1/t."""
    ours, theirs = norm.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
    for batch in (x[:3], x[:0], x[3:]):
        ours(batch), theirs(batch)
    assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-6)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3


def test_pure_functions_accept_an_empty_batch_for_numpy_too():
    """Property: the pure functions give an empty output of the input's shape, and the
    hand-written backward gives zero gradients for gamma and beta (a sum over nothing)."""
    x = np.ones((0, 3))
    y, new = norm.batch_norm_train(x, running=norm.RunningStats(np.full(3, 2.0), np.full(3, 3.0), 4))
    assert y.shape == (0, 3) and new.count == 5
    assert np.array_equal(new.mean, np.full(3, 2.0)) and np.array_equal(new.var, np.full(3, 3.0))
    assert norm.layer_norm(x, 3).shape == norm.rms_norm(x, 3).shape == (0, 3)
    assert norm.group_norm(np.ones((2, 4, 0)), 2).shape == (2, 4, 0)
    gx, gg, gb = norm.batch_norm_backward(x, x)
    assert gx.shape == (0, 3) and np.array_equal(gg, np.zeros(3)) and np.array_equal(gb, np.zeros(3))


@pytest.mark.parametrize("track, mode, raises", [(True, "train", True), (True, "eval", False),
                                                 (False, "train", True), (False, "eval", True)])
def test_eps_zero_is_refused_where_torch_refuses_it(track, mode, raises):
    """Reference: torch.nn.BatchNorm1d(eps=0) raises "batch_norm eps must be positive during
    training" wherever batch statistics are used (training, and eval without running
    statistics), and runs in eval mode with them."""
    x = torch.randn(4, 3)
    for make in (norm.BatchNorm1d, torch.nn.BatchNorm1d):
        m = make(3, eps=0.0, track_running_stats=track)
        getattr(m, mode)()
        if raises:
            with pytest.raises(ValueError, match="batch_norm eps must be positive during training"):
                m(x)
        else:
            assert m(x).shape == (4, 3)


@pytest.mark.skipif("bias" not in inspect.signature(torch.nn.BatchNorm1d).parameters,
                    reason="torch's batch and group norm take bias= from torch 2.13")
@pytest.mark.parametrize("ours_cls, theirs_cls, args, shape", [
    (norm.BatchNorm1d, torch.nn.BatchNorm1d, (4,), (8, 4)),
    (norm.BatchNorm2d, torch.nn.BatchNorm2d, (4,), (8, 4, 3, 3)),
    (norm.GroupNorm, torch.nn.GroupNorm, (2, 4), (8, 4, 3)),
])
def test_bias_false_matches_torch(ours_cls, theirs_cls, args, shape):
    """Reference: torch's keyword-only bias=False: the same state_dict keys, repr and
    outputs (gamma kept, beta gone)."""
    ours, theirs = ours_cls(*args, bias=False), theirs_cls(*args, bias=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0, generator=gen)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(shape, generator=gen)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def _trained_bn(bn, layer, gen, shape):
    """``bn`` after a few training batches of ``layer``'s output, random gamma and beta."""
    for _ in range(3):
        with torch.no_grad():
            bn(layer(torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1))
    if bn.weight is not None:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0, generator=gen), bn.bias.normal_(generator=gen)
    return bn.eval()


@pytest.mark.parametrize("layer, shape", [
    (lambda: torch.nn.Linear(5, 4), (16, 5)),
    (lambda: torch.nn.Linear(5, 4, bias=False), (16, 5)),
    (lambda: torch.nn.Conv1d(3, 4, 3), (8, 3, 7)),
    (lambda: torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), (8, 3, 6, 6)),
])
@pytest.mark.parametrize("ours_bn, affine", [(False, True), (True, True), (True, False)])
def test_folding_batch_norm_is_exact_and_is_torchs_fusion(layer, shape, ours_bn, affine):
    """References: bn(layer(x)) in eval mode, computed unfolded (the fold must agree to
    float64 rounding), and torch.nn.utils.fusion.fuse_linear_bn_eval / fuse_conv_bn_eval
    (the same weights and bias)."""
    from torch.nn.utils import fusion

    gen = torch.Generator().manual_seed(1)
    lay = layer().double().eval()
    C = 4
    conv = not isinstance(lay, torch.nn.Linear)
    dims = len(shape) - 2
    torch_bn = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d}[dims]
    ours_cls = norm.BatchNorm2d if dims == 2 else norm.BatchNorm1d
    bn = (ours_cls if ours_bn else torch_bn)(C, affine=affine).double()
    bn = _trained_bn(bn, lay, gen, shape)
    folded = norm.fold_batch_norm(lay, bn)
    assert type(folded) is type(lay) and folded is not lay
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(x), bn(lay(x)), atol=1e-12, rtol=0)
        if affine:            # torch's fusion needs gamma and beta
            ref_bn = torch_bn(C).double()
            ref_bn.load_state_dict(bn.state_dict())
            ref = (fusion.fuse_conv_bn_eval(lay, ref_bn.eval()) if conv
                   else fusion.fuse_linear_bn_eval(lay, ref_bn.eval()))
            assert torch.allclose(folded.weight, ref.weight, atol=1e-12, rtol=0)
            assert torch.allclose(folded.bias, ref.bias, atol=1e-12, rtol=0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: norm.fold_batch_norm(torch.nn.ReLU(), torch.nn.BatchNorm1d(3).eval()), TypeError,
     "layer must be an nn.Linear or nn.Conv1d/2d/3d, got ReLU"),
    (lambda: norm.fold_batch_norm(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3)), TypeError,
     "bn must be a batch-norm module"),
    (lambda: norm.fold_batch_norm(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)), ValueError,
     r"bn must be in eval mode \(call model.eval\(\) first\)"),
    (lambda: norm.fold_batch_norm(torch.nn.Linear(2, 3),
                                  torch.nn.BatchNorm1d(3, track_running_stats=False).eval()),
     ValueError, "bn must track running statistics"),
    (lambda: norm.fold_batch_norm(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(3).eval()),
     ValueError, "bn normalizes 3 channels but layer produces 4"),
])
def test_folding_bad_input_gives_a_named_error(call, error, message):
    """Reference: the errors documented in fold_batch_norm's docstring."""
    with pytest.raises(error, match=message):
        call()
