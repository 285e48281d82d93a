"""Tests of companion.residual.

References: torch.autograd (the stream's retained gradients, the Jacobian of the block
chain), explicit hand compositions of the blocks' ``branch`` (plain, residual and
dropped blocks), torch.nn.init.calculate_gain and the sampling distribution of a
Gaussian's sample mean and std (tolerances derived from the number of weights), closed
forms of the chain rule where a layer is zero (the ReZero gate's first gradient, Fixup's
first gradient), and the second-moment laws of the module docstring, checked as
expectations over independently seeded networks (tolerances from the seeds' spread).
path_gradients: autograd's gradient at x_0, and the sum over the subsets of branches of
products of explicit Jacobians. TokenTransformer: torch.nn.init's formulas. The skip
connections chapter's headlines are asserted on its own (or smaller) settings at the end.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _gaussian import check_gaussian, std_tol

from companion.diagnostics import record
from companion import data, train
from companion.residual import (BRANCH_SCALES, Gate, ResidualBlock, ResidualMLP,
                                TokenTransformer, fixup_init_, path_gradients,
                                stochastic_depth, train_stacked)

SETTINGS = settings(max_examples=25, deadline=None)
NORMS = [None, "batch", "layer", "rms", "group", nn.BatchNorm1d]


def _inputs(n: int, d: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _compose(net: ResidualMLP, u: torch.Tensor, drop=()) -> tuple[torch.Tensor, list]:
    """Reference: the network written out from its parts,
    x_0 = inp(u); x_l = [x_{l-1} +] alpha * block_l.branch(x_{l-1}) (x_l = x_{l-1} for a
    dropped block); y = out(act(norm(x_L)))."""
    h = net.inp(u)
    stream = [h]
    for l, block in enumerate(net.blocks, start=1):
        if l not in drop:
            alpha = block.gate.alpha if block.alpha is None else block.alpha
            f = alpha * block.branch(h)
            h = h + f if net.skip else f
        stream.append(h)
    h = net.norm(h) if hasattr(net, "norm") else h
    return net.out(net.act(h)), stream


def _chain(net: ResidualMLP):
    """The block chain x_0 -> x_L as a function (for autograd.functional.jacobian)."""
    def f(h):
        for block in net.blocks:
            h = block(h)
        return h
    return f


# ------------------------------------------------------------------ shapes and names
@SETTINGS
@given(depth=st.integers(1, 5), width=st.integers(1, 9), n_in=st.integers(1, 5),
       n_out=st.integers(1, 4), batch=st.integers(2, 6),
       norm=st.sampled_from([None, "batch", "layer"]),
       branch_scale=st.sampled_from([1.0, 0.5, "rezero"]))
def test_names_shapes_stream_grads(depth, width, n_in, n_out, batch, norm, branch_scale):
    """Children inp, block1..block{depth}, [norm], act, out; each block's children in the
    order they run; y is (B, out); stream holds depth + 1 (B, width) tensors, equal to
    stream_at(x, l), whose .grad equals torch.autograd.grad of the same loss (reference:
    autograd)."""
    net = ResidualMLP(n_in, n_out, width, depth, norm=norm, branch_scale=branch_scale,
                      seed=0).double()
    head = (["norm"] if norm else []) + ["act", "out"]
    assert [n for n, _ in net.named_children()] == (
        ["inp"] + [f"block{l}" for l in range(1, depth + 1)] + head)
    inner = ((["norm1"] if norm else []) + ["act1", "fc1"] + (["norm2"] if norm else [])
             + ["act2", "fc2"] + (["gate"] if branch_scale == "rezero" else []))
    for block in net.blocks:
        assert isinstance(block, ResidualBlock)
        assert [n for n, _ in block.named_children()] == inner
    u = _inputs(batch, n_in, dtype=torch.float64)
    y = net(u)
    assert y.shape == (batch, n_out)
    assert len(net.stream) == depth + 1
    assert all(s.shape == (batch, width) for s in net.stream)
    loss = (y.sin() * torch.arange(1.0, n_out + 1, dtype=torch.float64)).sum()
    loss.backward(retain_graph=True)
    # read .grad before autograd.grad: that call fires the retain_grad hooks too, and
    # would add its result to .grad
    got = [s.grad.clone() for s in net.stream]
    expected = torch.autograd.grad(loss, net.stream)
    for l, (s, g, g_ref) in enumerate(zip(net.stream, got, expected)):
        torch.testing.assert_close(g, g_ref)
        assert torch.equal(s.detach(), net.stream_at(u, l).detach())


@pytest.mark.parametrize("norm", [None, "layer"])
@pytest.mark.parametrize("activation, cls", [("relu", "ReLU"), ("tanh", "Tanh")])
@pytest.mark.parametrize("branch_scale", [1.0, "rezero"])
def test_record_labels_layers_by_block(norm, activation, cls, branch_scale):
    """companion.diagnostics.record names every layer and activation by its block, in the
    order they run (reference: the naming contract of ResidualMLP's docstring; a Gate
    owns a parameter, so record counts it as a layer, after fc2)."""
    depth = 3
    net = ResidualMLP(3, 2, 6, depth, norm=norm, activation=activation,
                      branch_scale=branch_scale, seed=0)
    with record(net) as rec:
        net(_inputs(5, 3)).pow(2).mean().backward()
    n1, n2 = (["norm1"], ["norm2"]) if norm else ([], [])
    gate = ["gate"] if branch_scale == "rezero" else []
    blocks = [f"block{l}.{n}" for l in range(1, depth + 1)
              for n in n1 + ["fc1"] + n2 + ["fc2"] + gate]
    assert rec.layer_names == ["inp"] + blocks + (["norm"] if norm else []) + ["out"]
    assert rec.activation_labels == [f"block{l}.act{i} (after {cls})"
                                     for l in range(1, depth + 1) for i in (1, 2)
                                     ] + [f"act (after {cls})"]
    assert set(rec.output_grad_norms) == set(rec.layer_names)


# ------------------------------------------------------------- plain/residual pairing
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("branch_scale", [1.0, 0.5, 0.25])
def test_plain_and_residual_share_parameters_and_differ_by_the_skip(norm, branch_scale):
    """Same seed, skip True vs False: identical state_dict (keys and bits); the outputs
    differ; and each forward equals its hand composition (reference: _compose):
    x_l = x_{l-1} + alpha F(x_{l-1}) with the skip, alpha F(x_{l-1}) without."""
    kw = dict(norm=norm, branch_scale=branch_scale, seed=3)
    res, plain = ResidualMLP(4, 3, 16, 4, **kw), ResidualMLP(4, 3, 16, 4, skip=False, **kw)
    sa, sb = res.state_dict(), plain.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert res.skip and not plain.skip and all(not b.skip for b in plain.blocks)
    u = _inputs(8, 4)
    with torch.no_grad():
        y_res, y_plain = res(u), plain(u)
        assert not torch.allclose(y_res, y_plain)
        for net, y in ((res, y_res), (plain, y_plain)):
            y_ref, stream_ref = _compose(net, u)
            torch.testing.assert_close(y, y_ref)
            for s, s_ref in zip(net.stream, stream_ref):
                torch.testing.assert_close(s, s_ref)


def test_same_seed_same_linear_weights_for_every_norm_and_branch_scale():
    """Norm layers and gates draw nothing, so the Linear layers of a seeded build do not
    depend on norm or branch_scale (documented under ``seed``)."""
    def linears(**kw):
        net = ResidualMLP(5, 2, 12, 3, seed=11, **kw)
        return {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Linear)}

    ref = linears()
    for kw in (dict(norm="batch"), dict(norm="group"), dict(branch_scale="rezero"),
               dict(branch_scale=0.1, skip=False)):
        other = linears(**kw)
        assert list(other) == list(ref)
        assert all(torch.equal(other[n], ref[n]) for n in ref)


# ------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("init", ["kaiming_normal", "xavier_uniform", "orthogonal",
                                  lambda w: w.normal_(0.0, 0.1)])
def test_seed_reproducible_and_global_rng_untouched(init):
    """Same seed -> identical state_dict; another seed -> different weights; the global
    RNG state (torch.get_rng_state) is the same before and after a seeded build, also
    with a callable init (which draws from a forked, seeded global RNG)."""
    state = torch.get_rng_state()
    a = ResidualMLP(4, 3, 10, 3, init=init, norm="batch", seed=5)
    b = ResidualMLP(4, 3, 10, 3, init=init, norm="batch", seed=5)
    assert torch.equal(state, torch.get_rng_state())
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = ResidualMLP(4, 3, 10, 3, init=init, norm="batch", seed=6)
    for name in ("inp.weight", "block1.fc1.weight", "block3.fc2.weight", "out.weight"):
        assert not torch.equal(sa[name], c.state_dict()[name])
    assert not torch.equal(a.block1.fc1.weight, a.block2.fc1.weight)  # not copies


def test_callable_init_is_used():
    """A callable init fills every branch Linear (here with a constant); stem and head
    keep N(0, 1/fan_in)."""
    net = ResidualMLP(4, 3, 10, 2, init=lambda w: w.fill_(0.25), seed=0)
    for block in net.blocks:
        assert bool((block.fc1.weight == 0.25).all()) and bool((block.fc2.weight == 0.25).all())
    assert not bool((net.inp.weight == 0.25).any())


@pytest.mark.parametrize("init", ["kaiming_normal", lambda w: w.normal_(0.0, 0.1)])
def test_seed_none_draws_from_global_rng(init):
    """seed=None: the global RNG moves, two builds differ, torch.manual_seed repeats one."""
    state = torch.get_rng_state()
    a = ResidualMLP(4, 3, 10, 2, init=init)
    assert not torch.equal(state, torch.get_rng_state())
    b = ResidualMLP(4, 3, 10, 2, init=init)
    assert not torch.equal(a.block1.fc1.weight, b.block1.fc1.weight)
    torch.manual_seed(123)
    c = ResidualMLP(4, 3, 10, 2, init=init)
    torch.manual_seed(123)
    d = ResidualMLP(4, 3, 10, 2, init=init)
    sc, sd = c.state_dict(), d.state_dict()
    assert all(torch.equal(sc[k], sd[k]) for k in sc)


# ----------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("activation, nonlinearity",
                         [("relu", "relu"), ("tanh", "tanh"), ("gelu", "relu")])
def test_branch_weights_are_he_and_stem_head_are_lecun(activation, nonlinearity):
    """Branch fc1/fc2 ~ N(0, gain^2 / width) with gain = calculate_gain(activation)
    (relu: 2/width; tanh: 5/3; an activation torch does not know: relu's); stem and head
    ~ N(0, 1/fan_in); every bias 0. Tolerances: 5 standard errors of the sample mean
    and std of the layer's weights (see check_gaussian)."""
    width, n_in, n_out = 256, 400, 100
    net = ResidualMLP(n_in, n_out, width, 2, activation=activation, seed=2)
    gain = nn.init.calculate_gain(nonlinearity)
    assert gain == pytest.approx({"relu": math.sqrt(2), "tanh": 5 / 3}[nonlinearity])
    for block in net.blocks:
        check_gaussian(block.fc1.weight, gain / math.sqrt(width))
        check_gaussian(block.fc2.weight, gain / math.sqrt(width))
    check_gaussian(net.inp.weight, 1 / math.sqrt(n_in))
    check_gaussian(net.out.weight, 1 / math.sqrt(width))
    for m in net.modules():
        if isinstance(m, nn.Linear):
            assert torch.count_nonzero(m.bias) == 0


def test_named_init_changes_only_the_branches():
    """init="xavier_normal": branch std sqrt(2 / (width + width)) (Glorot & Bengio);
    the stem and head are still N(0, 1/fan_in)."""
    width, n_in, n_out = 256, 300, 100
    net = ResidualMLP(n_in, n_out, width, 1, init="xavier_normal", seed=4)
    check_gaussian(net.block1.fc1.weight, math.sqrt(2 / (2 * width)))
    check_gaussian(net.block1.fc2.weight, math.sqrt(2 / (2 * width)))
    check_gaussian(net.inp.weight, 1 / math.sqrt(n_in))
    check_gaussian(net.out.weight, 1 / math.sqrt(width))


# -------------------------------------------------------------------- rezero/skipinit
@pytest.mark.parametrize("name", BRANCH_SCALES)
@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_gate_starts_at_zero_and_blocks_are_the_identity(name, norm):
    """Every block has a Gate whose alpha is a learnable 0-dim parameter at 0; the
    Jacobian of the block chain x_0 -> x_L (torch.autograd.functional.jacobian) is
    exactly the identity, and stream_at(u, depth) is exactly the stem's output."""
    width, depth = 6, 4
    net = ResidualMLP(3, 2, width, depth, branch_scale=name, norm=norm, seed=0).double()
    names = dict(net.named_parameters())
    for l, block in enumerate(net.blocks, start=1):
        assert isinstance(block.gate, Gate) and block.alpha is None
        assert names[f"block{l}.gate.alpha"] is block.gate.alpha
        assert block.gate.alpha.requires_grad and block.gate.alpha.shape == ()
        assert block.gate.alpha.item() == 0.0
    u = _inputs(5, 3, dtype=torch.float64)
    x0 = net.inp(u).detach()
    # one input row for the Jacobian; batch norm needs a batch, so it gets all 5 rows
    x = x0 if norm == "batch" else x0[:1]
    jac = torch.autograd.functional.jacobian(_chain(net), x)
    n = x.numel()
    assert torch.equal(jac.reshape(n, n), torch.eye(n, dtype=torch.float64))
    assert torch.equal(net.stream_at(u, depth), net.inp(u))


def test_gate_first_gradient_is_the_closed_form_and_the_gate_learns():
    """At alpha = 0 every x_l = x_0, so dL/dx_l = dL/dx_L = g and the chain rule gives
    dL/dalpha_l = <F_l(x_0), g> (summed over the batch), while every branch weight gets
    exactly 0 (its signal is multiplied by alpha = 0). One SGD step then moves each
    alpha to -lr * that value, which is nonzero."""
    net = ResidualMLP(3, 2, 8, 3, branch_scale="rezero", seed=1).double()
    u = _inputs(16, 3, dtype=torch.float64)
    target = _inputs(16, 2, seed=1, dtype=torch.float64)
    loss = (net(u) - target).pow(2).mean()
    assert loss.item() > 0
    loss.backward()
    x0, g = net.stream[0].detach(), net.stream[-1].grad
    for block in net.blocks:
        expected = (block.branch(x0) * g).sum().detach()
        torch.testing.assert_close(block.gate.alpha.grad, expected)
        assert expected.item() != 0
        assert torch.count_nonzero(block.fc1.weight.grad) == 0
        assert torch.count_nonzero(block.fc2.weight.grad) == 0
    lr = 0.1
    with torch.no_grad():  # one plain SGD step, p <- p - lr * grad, written out (the first
        for p in net.parameters():  # torch.optim optimizer costs ~1 s of lazy imports)
            p -= lr * p.grad
    for block in net.blocks:
        alpha = block.gate.alpha.detach()
        torch.testing.assert_close(alpha, -lr * block.gate.alpha.grad)
        assert alpha.item() != 0.0


def test_gate_needs_skip():
    with pytest.raises(ValueError, match="branch_scale='rezero' needs skip=True"):
        ResidualMLP(3, 2, 4, 2, branch_scale="rezero", skip=False)
    with pytest.raises(ValueError, match="branch_scale='skipinit' needs skip=True"):
        ResidualMLP(3, 2, 4, 2, branch_scale="skipinit", skip=False)


# ------------------------------------------------------------------------------ Fixup
@pytest.mark.parametrize("depth", [1, 4, 9])
@pytest.mark.parametrize("norm", [None, "layer"])
def test_fixup_zeroes_last_layers_and_scales_first_layers(depth, norm):
    """Fixup with m = 2 layers per branch: fc2 and out zero, fc1 times
    L^(-1/(2m-2)) = depth ** -0.5 bit for bit, every branch and head bias 0 (set to 0.5
    first), the stem's weight untouched. Consequences (closed form):
    every block is the identity, so every stream tensor equals x_0, and the output is
    exactly 0."""
    before = ResidualMLP(3, 2, 8, depth, norm=norm, seed=7)
    net = ResidualMLP(3, 2, 8, depth, norm=norm, seed=7)
    branch_and_head = [m for b in net.blocks for m in (b.fc1, b.fc2)] + [net.out]
    with torch.no_grad():  # biases start at 0: make them nonzero so zeroing is visible
        for m in branch_and_head:
            m.bias.fill_(0.5)
    assert fixup_init_(net) is net
    for b0, block in zip(before.blocks, net.blocks):
        assert torch.equal(block.fc1.weight, b0.fc1.weight * depth ** -0.5)
        assert torch.count_nonzero(block.fc1.weight) == block.fc1.weight.numel()
        assert torch.count_nonzero(block.fc2.weight) == 0
    assert torch.count_nonzero(net.out.weight) == 0
    assert all(torch.count_nonzero(m.bias) == 0 for m in branch_and_head)
    assert torch.equal(net.inp.weight, before.inp.weight)
    u = _inputs(6, 3)
    with torch.no_grad():
        y = net(u)
    assert torch.equal(y, torch.zeros(6, 2))
    assert all(torch.equal(s, net.stream[0]) for s in net.stream)


def test_fixup_sets_every_bias_to_zero():
    """fixup_init_'s docstring, step 3: "every bias is set to 0" -- the stem's too."""
    net = ResidualMLP(3, 2, 8, 4, seed=0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.bias.fill_(0.5)
    fixup_init_(net)
    assert all(torch.count_nonzero(m.bias) == 0 for m in net.modules() if isinstance(m, nn.Linear))


def test_fixup_first_gradient_reaches_only_the_head():
    """With out.weight = 0 the backward signal into the head's input is
    out.weight^T dL/dy = 0, so every stream gradient and every branch weight's gradient
    is exactly 0; out.weight.grad = (dL/dy)^T act(x_L), with y = 0 and
    L = mean((y - t)^2): dL/dy = -2 t / (B * out_features) (closed form), nonzero."""
    net = fixup_init_(ResidualMLP(3, 2, 8, 4, seed=0)).double()
    u = _inputs(10, 3, dtype=torch.float64)
    t = _inputs(10, 2, seed=1, dtype=torch.float64)
    (net(u) - t).pow(2).mean().backward()
    dy = -2 * t / t.numel()
    torch.testing.assert_close(net.out.weight.grad, dy.T @ net.act(net.stream[-1]).detach())
    torch.testing.assert_close(net.out.bias.grad, dy.sum(0))
    assert torch.count_nonzero(net.out.weight.grad) > 0
    for block in net.blocks:
        assert torch.count_nonzero(block.fc1.weight.grad) == 0
        assert torch.count_nonzero(block.fc2.weight.grad) == 0
    assert all(torch.count_nonzero(s.grad) == 0 for s in net.stream)


@pytest.mark.parametrize("model, exc, match", [
    (nn.Linear(2, 2), TypeError, "model must be a ResidualMLP, got Linear"),
    (ResidualMLP(2, 1, 4, 2, skip=False, seed=0), ValueError, "needs a network with skip=True"),
    (ResidualMLP(2, 1, 4, 2, branch_scale="rezero", seed=0), ValueError,
     "needs a numeric branch_scale, got 'rezero'"),
    (ResidualMLP(2, 1, 4, 2, branch_scale="skipinit", seed=0), ValueError,
     "needs a numeric branch_scale, got 'skipinit'"),
])
def test_fixup_errors(model, exc, match):
    with pytest.raises(exc, match=match):
        fixup_init_(model)


# ----------------------------------------------------------------------- variance laws
# The laws of the module docstring, E[x_l^2] of the stream at initialisation, as
# expectations over networks: each seed gives one network and one standard-normal batch,
# m_l = mean of stream[l]^2 over batch and units (float64). The law is required of the
# arithmetic mean over N_SEEDS seeds (an unbiased estimate of the expectation; a
# geometric mean would be biased low by Jensen) within K standard errors of that mean,
# the standard error estimated from the seeds' spread (t with 23 degrees of freedom:
# P(|t| > 5) ~ 4e-5 per comparison; the ratios are skewed, hence K = 5, not 4).
# Measured on 2000 seeds at these sizes: the per-network relative sd of the ratio at
# l = 8 is 28% (alpha = 1) and 10% (alpha = 0.5), the sd of m_8 - m_0 is 0.23 (batch
# norm); the mean over all 2000 is within 1.5% (alpha = 1), 0.3% (alpha = 0.5) and
# 0.2% (batch) of the law at every l, so width 256 shows no finite-width bias against
# tolerances of K SE ~ 28%, 10% and 3% of the law at l = 8. Resampling groups of 24
# from those 2000, the whole check (all l) failed in 0.03-0.04% of 20000 groups.
WIDTH, DEPTH, BATCH, N_IN, N_SEEDS, K = 256, 8, 512, 64, 24, 5.0
BASE_SEED = 100
FLOOR = 1e-3  # relative floor on the tolerance, in case the seeds' spread is tiny


@pytest.fixture
def one_thread():
    """The law tests run 72 forward passes of 512 x 256 matmuls: on one thread they
    take ~0.6 s each, on two a little less when the machine is idle but many times more
    when another process holds a core (measured 0.4 s -> 5 s per test with one busy
    loop beside). Restores the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mean_squares(norm, branch_scale, seeds=range(BASE_SEED, BASE_SEED + N_SEEDS)):
    """(len(seeds), DEPTH + 1) float64: m_l = E[x_l^2] over batch and units, one row
    per independently seeded network and input batch (forward only, no grad)."""
    rows = []
    for seed in seeds:
        net = ResidualMLP(N_IN, 1, WIDTH, DEPTH, norm=norm, branch_scale=branch_scale,
                          seed=seed)
        u = _inputs(BATCH, N_IN, seed=10**6 + seed)
        with torch.no_grad():
            net(u)
        rows.append(torch.stack([s.double().pow(2).mean() for s in net.stream]))
    return torch.stack(rows)


def _check_law(samples: torch.Tensor, law: torch.Tensor) -> None:
    """Mean over seeds (rows) equals law at every l within K standard errors."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert bool((se[1:] > 0).all())  # the seeds do give different networks
    tol = torch.maximum(K * se, FLOOR * law.abs())
    bad = (mean - law).abs() > tol
    assert not bool(bad.any()), (
        f"law {law.tolist()}\nmean {mean.tolist()}\ntol {tol.tolist()}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_second_moment_grows_as_one_plus_alpha_squared_to_the_l(alpha):
    """No normalization, He ReLU branches: the cross term E[x F] vanishes (fc2 has mean
    0) and E[F^2] = 2 E[relu(x)^2] = E[x^2] for a symmetric x (exactly for x_0, at
    large width for every x_l), so E[x_l^2] / E[x_0^2] = (1 + alpha^2)^l (2^l at
    alpha = 1)."""
    m = _mean_squares(None, alpha)
    _check_law(m / m[:, :1], (1 + alpha ** 2) ** torch.arange(DEPTH + 1.0, dtype=torch.float64))


@pytest.mark.usefixtures("one_thread")
def test_second_moment_with_batch_norm_grows_linearly():
    """Batch norm (training mode, companion.norm.BatchNorm1d) at the branch's entry and
    middle: E[F^2] = 1 whatever x is (flipping the sign of a row of fc1 flips that unit's
    normalized value, so E[relu(N(h))^2] = 1/2 exactly, up to BatchNorm's eps), and the
    cross term vanishes, so E[x_l^2] = E[x_0^2] + l."""
    m = _mean_squares("batch", 1.0)
    _check_law(m - m[:, :1], torch.arange(DEPTH + 1.0, dtype=torch.float64))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", BRANCH_SCALES)
def test_second_moment_with_a_zero_gate_is_constant(name):
    """alpha = 0: x_l = x_0 + 0 * F = x_0, so E[x_l^2] == E[x_0^2] exactly."""
    m = _mean_squares(None, name, seeds=range(2))
    assert bool((m == m[:, :1]).all())


# ------------------------------------------------------------------------------- drop
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("drop", [{3}, [1, 5], (2, 3, 4), range(1, 6), frozenset()])
def test_drop_replaces_blocks_by_the_identity(skip, drop):
    """net(x, drop=D) equals the hand composition with x_l = x_{l-1} for l in D
    (reference: _compose); a dropped block's stream entry is its input."""
    net = ResidualMLP(3, 2, 8, 5, branch_scale=0.7, skip=skip, seed=2)
    u = _inputs(6, 3)
    with torch.no_grad():
        y = net(u, drop=drop)
        y_ref, stream_ref = _compose(net, u, drop=set(drop))
        torch.testing.assert_close(y, y_ref)
        for l, (s, s_ref) in enumerate(zip(net.stream, stream_ref)):
            torch.testing.assert_close(s, s_ref)
            if l in drop:
                assert torch.equal(s, net.stream[l - 1])
        if drop:
            assert not torch.allclose(y, net(u))


@pytest.mark.parametrize("drop, exc, match", [
    ({0}, ValueError, r"drop must hold block numbers in \[1, 4\], got 0"),
    ({5}, ValueError, r"drop must hold block numbers in \[1, 4\], got 5"),
    ([-1], ValueError, r"got -1"),
    ({True}, ValueError, r"drop must hold block numbers in \[1, 4\], got True"),
    ([2.0], ValueError, r"got 2.0"),
    ("3", TypeError, "drop must be a collection of block numbers, got '3'"),
    (True, TypeError, "drop must be a collection of block numbers, got True"),
    (3, TypeError, "drop must be a collection of block numbers, got 3"),
])
def test_drop_errors(drop, exc, match):
    net = ResidualMLP(3, 2, 4, 4, seed=0)
    with pytest.raises(exc, match=match):
        net(_inputs(2, 3), drop=drop)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(in_features=0), ValueError, "in_features must be an int >= 1, got 0"),
    (dict(out_features=-1), ValueError, "out_features must be an int >= 1, got -1"),
    (dict(width=2.5), TypeError, r"width must be an int, got 2.5 \(float\)"),
    (dict(depth=True), TypeError, r"depth must be an int, got True \(bool\)"),
    (dict(depth=0), ValueError, "depth must be an int >= 1, got 0"),
    (dict(branch_scale=-1), ValueError, "branch_scale must be a finite number >= 0, got -1.0"),
    (dict(branch_scale=float("nan")), ValueError, "branch_scale must be a finite number >= 0, got nan"),
    (dict(branch_scale=math.inf), ValueError, "branch_scale must be a finite number >= 0, got inf"),
    (dict(branch_scale="half"), ValueError,
     r"branch_scale must be a number >= 0 or one of \('rezero', 'skipinit'\), got 'half'"),
    (dict(branch_scale=None), TypeError, r"branch_scale must be a number .*got None \(NoneType\)"),
    (dict(branch_scale=True), TypeError, r"branch_scale must be a number .*got True \(bool\)"),
    (dict(skip="yes"), TypeError, "skip must be True or False, got 'yes'"),
    (dict(skip=1), TypeError, "skip must be True or False, got 1"),
    (dict(norm="weird"), ValueError, "norm must be None, one of .* got 'weird'"),
    (dict(activation="nope"), ValueError, "activation.* must be one of .* got 'nope'"),
    (dict(activation=None), TypeError, "activation.* must be a"),
    (dict(init=None), TypeError, r"init must be an initializer name or a callable f\(weight\), got None"),
    (dict(init=3), TypeError, r"init must be an initializer name or a callable f\(weight\), got 3"),
    (dict(init="nope"), ValueError, "init must be one of .* got 'nope'"),
    (dict(seed=-1), ValueError, r"seed must be an int in \[0, 18446744073709551615\], got -1"),
    (dict(seed=1.5), TypeError, "seed must be an int, got 1.5"),
])
def test_constructor_errors(kwargs, exc, match):
    """Each bad argument raises the documented error naming the argument and the value."""
    args = dict(in_features=3, out_features=2, width=4, depth=2) | kwargs
    with pytest.raises(exc, match=match):
        ResidualMLP(**args)


def test_forward_rejects_a_numpy_array():
    net = ResidualMLP(3, 1, 4, 2, seed=0)
    with pytest.raises(TypeError, match=r"x must be a torch tensor, got a float32 array of shape \(2, 3\)"):
        net(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("shape", [(5, 4), (5,), (2, 5, 3), (5, 2)])
def test_forward_wrong_input_shape(shape):
    net = ResidualMLP(3, 2, 4, 2, seed=0)
    match = r"x must have shape \(B, 3\), got " + re.escape(str(shape))
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


@pytest.mark.parametrize("l, exc, match", [
    (-1, ValueError, r"l must be an int in \[0, 3\], got -1"),
    (4, ValueError, r"l must be an int in \[0, 3\], got 4"),
    (True, TypeError, "l must be an int, got True"),
    (1.0, TypeError, "l must be an int, got 1.0"),
])
def test_stream_at_errors(l, exc, match):
    net = ResidualMLP(3, 2, 4, 3, seed=0)
    with pytest.raises(exc, match=match):
        net.stream_at(_inputs(2, 3), l)


@pytest.mark.parametrize("skip", [True, False])
def test_deepcopy_after_a_forward_pass_with_grad(skip):
    """copy.deepcopy (e.g. ``best = copy.deepcopy(net)`` in a training loop) works after a
    forward pass that filled ``stream`` with non-leaf tensors; the copy has the same
    parameters (reference: torch.equal) and an empty stream, the original keeps its own."""
    import copy
    net = ResidualMLP(3, 2, 8, 3, skip=skip, seed=0)
    net(_inputs(4, 3)).sum().backward()
    twin = copy.deepcopy(net)
    assert twin.stream == [] and len(net.stream) == 4
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b) and a is not b


# --------------------------------------------------------------------- path_gradients
def _stem_to_output(net, u):
    """x_0 as a leaf, and the network's output computed from it (reference forward)."""
    x0 = net.inp(u).detach().requires_grad_(True)
    h = x0
    for block in net.blocks:
        h = block(h)
    h = net.norm(h) if hasattr(net, "norm") else h
    return x0, net.out(net.act(h))


@pytest.mark.parametrize("kwargs", [{}, {"norm": nn.BatchNorm1d}, {"branch_scale": 0.3},
                                    {"norm": "layer", "activation": "tanh"}])
def test_path_gradients_sum_to_the_gradient_at_x0(kwargs):
    """Reference: torch.autograd.grad of the same loss with respect to x_0; u[0], the
    path through no branch, is dL/dx_L itself (the identity path)."""
    net = ResidualMLP(3, 2, 6, 5, seed=0, **kwargs).double().eval()
    u_in = _inputs(7, 3, dtype=torch.float64)
    loss = lambda y: (y ** 3).sum()                   # noqa: E731
    u = path_gradients(net, u_in, loss=loss)
    assert u.shape == (6, 7, 6)
    x0, y = _stem_to_output(net, u_in)
    (g,) = torch.autograd.grad(loss(y), x0)
    torch.testing.assert_close(u.sum(0), g, rtol=1e-10, atol=1e-12)
    net(u_in)
    top = net.stream[-1].detach().requires_grad_(True)
    y_top = net.out(net.act(net.norm(top) if hasattr(net, "norm") else top))
    (g_top,) = torch.autograd.grad(loss(y_top), top)
    torch.testing.assert_close(u[0], g_top, rtol=1e-12, atol=1e-14)


def test_path_gradients_equal_the_sum_over_subsets_of_branches():
    """Reference: with linear branches (activation "linear", no norm) each block's
    Jacobian is the constant matrix J_l = alpha W2 W1, and u_k = sum over the k-subsets
    l_1 < ... < l_k of J_{l_1}^T ... J_{l_k}^T g, enumerated with itertools (2^L terms)."""
    L = 5
    net = ResidualMLP(2, 1, 4, L, activation="linear", branch_scale=0.7, seed=3).double()
    u_in = _inputs(3, 2, dtype=torch.float64)
    u = path_gradients(net, u_in)
    J = [0.7 * b.fc2.weight.detach() @ b.fc1.weight.detach() for b in net.blocks]
    g = net.out.weight.detach().expand(3, -1)          # d sum(y) / d x_L, y = W_out x_L
    for k in range(L + 1):
        expected = torch.zeros_like(g)
        for subset in itertools.combinations(range(L), k):
            v = g
            for l in reversed(subset):                  # J_{l_k}^T first, from the top
                v = v @ J[l]
            expected = expected + v
        torch.testing.assert_close(u[k], expected, rtol=1e-10, atol=1e-12)


def test_path_gradients_errors():
    net = ResidualMLP(2, 1, 4, 3, seed=0)
    x = _inputs(3, 2)
    with pytest.raises(TypeError, match="model must be a ResidualMLP, got Linear"):
        path_gradients(nn.Linear(2, 1), x)
    with pytest.raises(ValueError, match="needs skip=True"):
        path_gradients(ResidualMLP(2, 1, 4, 3, seed=0, skip=False), x)
    with pytest.raises(TypeError, match=r"loss must be None or a callable loss\(output\), got 3"):
        path_gradients(net, x, loss=3)
    with pytest.raises(ValueError, match=r"loss must return a scalar \(one-element\) tensor, got a \w+ tensor of shape \(3, 1\)"):
        path_gradients(net, x, loss=lambda y: y)


# ------------------------------------------------------------------- TokenTransformer
@pytest.mark.parametrize("norm_first", [False, True])
def test_token_transformer_is_torch_layers_with_xavier_weights(norm_first):
    """The layers are torch's own nn.TransformerEncoderLayer with norm_first as asked;
    a final LayerNorm only for pre-LN. init="xavier": every Linear weight of the layers
    is U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (torch.nn.init.xavier_uniform_'s
    bound: max |w| <= a, and the sample std within 5 standard errors of a / sqrt(3));
    init="torch" keeps nn.Linear's bound 1/sqrt(fan_in)."""
    model = TokenTransformer(16, 8, d_model=32, nhead=4, dim_feedforward=64, num_layers=3,
                             norm_first=norm_first, seed=0)
    assert [n for n, _ in model.named_children()] == (
        ["embed", "layers", "norm", "head"] if norm_first else ["embed", "layers", "head"])
    assert all(type(l) is nn.TransformerEncoderLayer and l.norm_first is norm_first
               for l in model.layers)
    tokens = torch.randint(0, 16, (5, 8), generator=torch.Generator().manual_seed(0))
    assert model(tokens).shape == (5, 8, 16)
    for layer in model.layers:
        for lin in (layer.linear1, layer.linear2, layer.self_attn.out_proj):
            w = lin.weight.detach().double()
            bound = math.sqrt(6 / sum(w.shape))
            assert w.abs().max() <= bound
            assert abs(w.std().item() - bound / math.sqrt(3)) < std_tol(w.numel(), bound / math.sqrt(3))
    default = TokenTransformer(16, 8, num_layers=1, init="torch", seed=0)
    w = default.layers[0].linear2.weight.detach()
    assert w.abs().max() <= 1 / math.sqrt(w.shape[1])
    assert w.abs().max() < math.sqrt(6 / sum(w.shape)) * 0.8   # clearly not Xavier's bound


def test_token_transformer_seed_and_errors():
    """Same seed, same parameters; the global RNG is untouched (torch.get_rng_state)."""
    state = torch.get_rng_state()
    a, b = (TokenTransformer(16, 8, num_layers=2, seed=5) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="d_model must be divisible by nhead, got 30 and 4"):
        TokenTransformer(16, 8, d_model=30)
    with pytest.raises(ValueError, match=r"init must be one of \['xavier', 'torch'\], got 'he'"):
        TokenTransformer(16, 8, init="he")
    with pytest.raises(TypeError, match="norm_first must be True or False, got 1"):
        TokenTransformer(16, 8, norm_first=1)
    with pytest.raises(TypeError, match=r"tokens must have an integer dtype, got a float32 tensor"):
        a(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"tokens must be an integer tensor of shape \(B, 8\)"):
        a(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must hold token ids in \[0, 15\] \(vocab_size=16\), "
                                         r"got values from 0 to 16"):
        a(torch.zeros(2, 8, dtype=torch.long).index_fill_(1, torch.tensor([3]), 16))


# ------------------------------------------------- the skip connections chapter's headlines
SPIRALS = data.spirals(300, 3, seed=0)


def _fit(depth, skip):
    """100 full-batch steps of SGD with momentum 0.9 at lr 0.05 on three spirals (torch's
    BatchNorm1d, width 32); returns the net in eval mode with its running statistics
    recomputed on the training set (torch.optim.swa_utils.update_bn), so that eval mode
    measures the network that was trained."""
    x, y = SPIRALS
    net = ResidualMLP(2, 3, width=32, depth=depth, norm=nn.BatchNorm1d, skip=skip, seed=0)
    train.train(net, x, y, steps=100, lr=0.05, loss="cross_entropy", optimizer="momentum")
    torch.optim.swa_utils.update_bn([x], net)
    return net.eval()


def _error(net, drop=()):
    x, y = SPIRALS
    with torch.no_grad():
        return (net(x, drop=drop).argmax(1) != y).double().mean().item()


@pytest.mark.usefixtures("one_thread")
def test_headline_degradation_and_deleting_blocks():
    """He et al.'s degradation, as the chapter measures it: width 16, 150 full-batch
    momentum steps, three seeds at lr 0.03; every plain 16-block run ends with a
    training error (training mode) above 0.1 and above every residual run, and the
    plain 4-block runs fit. Veit et al.: deleting any one block of a trained 8-block
    plain net gives >= 30 % error; deleting one of blocks 3..8 of the residual net
    leaves it below 10 % (statistics recomputed by update_bn on the intact net). The
    trained 16-block residual net's gradient comes mostly from short paths."""
    x, y = SPIRALS

    def errors(depth, skip):
        models = [ResidualMLP(2, 3, width=16, depth=depth, norm=nn.BatchNorm1d, skip=skip,
                              seed=s) for s in range(3)]
        return models, train_stacked(models, x, y, steps=150, lr=0.03).errors
    (_, plain16), (res_models, res16), (_, plain4) = (errors(16, False), errors(16, True),
                                                      errors(4, False))
    assert plain16.min() > max(0.1, res16.max()) and plain4.max() < 0.05
    plain8, res8 = _fit(8, False), _fit(8, True)
    assert min(_error(plain8, drop={l}) for l in range(1, 9)) > 0.3
    assert max(_error(res8, drop={l}) for l in range(3, 9)) < 0.1
    res = res_models[0]
    torch.optim.swa_utils.update_bn([x], res)
    share = path_gradients(res.eval(), x).flatten(1).norm(dim=1)
    mean_length = (torch.arange(17) * share / share.sum()).sum().item()
    assert mean_length < 6                      # shorter than the paths' mean, 16 / 2


@pytest.mark.usefixtures("one_thread")
def test_headline_eval_mode_with_stale_statistics_is_another_network():
    """The chapter's train/eval gap: a plain 16-block net trained at lr 0.05 misclassifies
    about 10 % in training mode, at least twice as much in eval mode with the running
    statistics of training, and in eval mode after update_bn about what training mode
    does."""
    x, y = SPIRALS
    net = ResidualMLP(2, 3, width=32, depth=16, norm=nn.BatchNorm1d, skip=False, seed=0)
    train.train(net, x, y, steps=100, lr=0.05, loss="cross_entropy", optimizer="momentum")
    stale = _error(net.eval())
    trained = _error(net.train())
    torch.optim.swa_utils.update_bn([x], net)
    recalibrated = _error(net.eval())
    assert stale > 2 * trained and abs(recalibrated - trained) < 0.03


def _input_gradient_autocorrelation(depth, skip, seed):
    """Lag-1 autocorrelation of dy/dx over 256 inputs on [-2, 2] (Balduzzi et al.),
    batch norm with the sweep's statistics, frozen."""
    xs = torch.linspace(-2, 2, 256).reshape(-1, 1)
    net = ResidualMLP(1, 1, width=128, depth=depth, norm=nn.BatchNorm1d, skip=skip,
                      seed=seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None
    with torch.no_grad():
        net(xs)
    net.eval()
    x = xs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    g = g.flatten().double() - g.mean()
    return ((g[:-1] * g[1:]).sum() / (g * g).sum()).item()


@pytest.mark.usefixtures("one_thread")
def test_headline_shattered_gradients():
    """One block: both nets' input gradients are smooth (lag-1 autocorrelation > 0.9).
    Eight blocks: the plain net's is white noise (|mean| < 0.25), the residual net's
    still correlated (> 0.35); mean of 4 networks."""
    for skip in (False, True):
        assert np.mean([_input_gradient_autocorrelation(1, skip, s) for s in range(4)]) > 0.9
    plain = np.mean([_input_gradient_autocorrelation(8, False, s) for s in range(4)])
    res = np.mean([_input_gradient_autocorrelation(8, True, s) for s in range(4)])
    assert abs(plain) < 0.25 and res > 0.35


def _shift_task(n, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 16, (n, 8), generator=g)
    return tokens, tokens.roll(1, dims=1)


def _token_loss(logits, target):
    return nn.functional.cross_entropy(logits.reshape(-1, 16), target.reshape(-1))


@pytest.mark.usefixtures("one_thread")
def test_headline_post_ln_gradients_grow_towards_the_output():
    """Xiong et al.: at initialization (Xavier, 12 layers, mean of 3 models) the post-LN
    feed-forward gradient is larger at the last layer than at the first, the pre-LN one
    is not, and at the last layer post-LN exceeds pre-LN by more than 2x."""
    def grads(norm_first):
        rows = []
        for seed in range(3):
            model = TokenTransformer(16, 8, num_layers=12, norm_first=norm_first, seed=seed)
            tokens, target = _shift_task(64, seed)
            _token_loss(model(tokens), target).backward()
            rows.append([l.linear2.weight.grad.norm().item() for l in model.layers])
        return np.mean(rows, axis=0)
    post, pre = grads(False), grads(True)
    assert post[-1] > 1.2 * post[0] and pre[-1] <= pre[0]
    assert post[-1] > 2 * pre[-1]


@pytest.mark.usefixtures("one_thread")
def test_headline_post_ln_needs_warmup():
    """The chapter's warm-up experiment: 6 layers, Adam (0.9, 0.98) at lr 1e-2, 150
    minibatches of 16. Post-LN without warm-up stays near chance (log 16 = 2.77),
    post-LN with 100 warm-up steps and pre-LN without warm-up learn the task."""
    x, y = _shift_task(150 * 16, seed=1)

    def final(norm_first, warmup):
        model = TokenTransformer(16, 8, num_layers=6, norm_first=norm_first, seed=0)
        h = train.train(model, x, y, steps=150, lr=1e-2, loss=_token_loss,
                        optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.98)),
                        batch_size=16,
                        schedule=(lambda t: min(1.0, (t + 1) / warmup)) if warmup else None)
        return float(np.mean(h.losses[-10:]))
    assert final(False, 0) > 2.5
    assert final(False, 100) < 0.5 and final(True, 0) < 0.5


def test_inputs_are_checked_where_they_enter():
    """torch would raise RuntimeError deep inside nn.Linear for a float64 batch of a
    float32 model; path_gradients (a measurement) refuses NaN data; a block's factories
    may be module classes, and what they build is checked."""
    net = ResidualMLP(3, 2, 4, 2, seed=0)
    with pytest.raises(TypeError, match=r"x must have the model's dtype float32, got a float64"):
        net(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x_L must have shape \(B, 4\), got \(2, 3\)"):
        net.head(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\)"):
        net.block1(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x must be finite data"):
        path_gradients(net, torch.full((2, 3), math.nan))
    with pytest.raises(TypeError, match="f must have the model's dtype float32"):
        ResidualMLP(3, 2, 4, 2, branch_scale="rezero", seed=0).block1.gate(torch.zeros(2, dtype=torch.float64))
    block = ResidualBlock(4, make_act=nn.ReLU, make_norm=nn.LayerNorm,
                          make_linear=lambda: nn.Linear(4, 4), branch_scale=0.5, skip=True)
    assert block(torch.zeros(2, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"make_linear must return a 4 x 4 nn.Linear \(width=4\)"):
        ResidualBlock(4, make_act=nn.ReLU, make_norm=None, make_linear=lambda: nn.Linear(4, 5),
                      branch_scale=1.0, skip=True)


# ------------------------------------------------------------- train_stacked, stochastic_depth
STACK_CASES = [
    (dict(norm=nn.BatchNorm1d, skip=False), "momentum"),
    (dict(norm=nn.BatchNorm1d, skip=True), "adam"),
    (dict(branch_scale="rezero"), "adam"),
    (dict(branch_scale=0.3), "sgd"),
    (dict(), "momentum"),
]


@pytest.mark.parametrize("kwargs, optimizer", STACK_CASES)
def test_train_stacked_is_train_train_per_model_in_float64(kwargs, optimizer):
    """Reference: companion.train.train with torch.optim (SGD, SGD momentum 0.9, Adam)
    on each model alone, in float64: the same losses at every step, the same final
    parameters, and the same training-mode error."""
    x, y = SPIRALS
    lrs = [0.01, 0.03]
    models = [ResidualMLP(2, 3, width=8, depth=3, seed=s, **kwargs).double() for s in (0, 1)]
    run = train_stacked(models, x.double(), y, steps=15, lr=lrs, optimizer=optimizer)
    for i, lr in enumerate(lrs):
        alone = ResidualMLP(2, 3, width=8, depth=3, seed=i, **kwargs).double()
        h = train.train(alone, x.double(), y, steps=15, lr=lr, loss="cross_entropy",
                        optimizer=optimizer)
        np.testing.assert_allclose(run.losses[:, i], h.losses, rtol=1e-10, atol=1e-12)
        for p, q in zip(alone.parameters(), models[i].parameters()):
            torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-8)
        with torch.no_grad():
            err = (alone.train()(x.double()).argmax(1) != y).double().mean().item()
        assert run.errors[i] == err
    assert run.step_errors.shape == run.losses.shape == (15, 2)
    assert (run.diverged_at == -1).all()


def test_train_stacked_normalized_gradients_are_unit_norm_steps():
    """Reference: train.train with a clip callable that divides each gradient by its norm
    (no batch norm, so no bias has a zero gradient)."""
    x, y = SPIRALS
    models = [ResidualMLP(2, 3, width=8, depth=3, seed=s).double() for s in (0, 1)]
    run = train_stacked(models, x.double(), y, steps=10, lr=0.01, normalize_grads=True)

    def unit(params):
        for p in params:
            p.grad /= p.grad.norm()
    for i in (0, 1):
        alone = ResidualMLP(2, 3, width=8, depth=3, seed=i).double()
        h = train.train(alone, x.double(), y, steps=10, lr=0.01, loss="cross_entropy",
                        optimizer="momentum", clip=unit)
        np.testing.assert_allclose(run.losses[:, i], h.losses, rtol=1e-10)


def test_train_stacked_models_are_independent_and_a_divergence_stays_in_its_column():
    """A model that diverges (a huge rate) is frozen and reported; its neighbour trains as
    it would alone."""
    x, y = SPIRALS
    models = [ResidualMLP(2, 3, width=8, depth=4, seed=0) for _ in range(2)]
    run = train_stacked(models, x, y, steps=20, lr=[1e6, 0.01], optimizer="sgd")
    alone = train_stacked([ResidualMLP(2, 3, width=8, depth=4, seed=0)], x, y, steps=20,
                          lr=0.01, optimizer="sgd")
    assert run.diverged_at[0] >= 1 and run.diverged_at[1] == -1
    assert np.isnan(run.errors[0]) and np.isnan(run.losses[-1, 0])
    np.testing.assert_array_equal(run.losses[:, 1], alone.losses[:, 0])


def test_train_stacked_leaves_running_statistics_for_update_bn():
    """Batch norm trains with full-batch statistics and the running estimates are left
    untouched; after update_bn, eval mode gives the training-mode error."""
    x, y = SPIRALS
    model = ResidualMLP(2, 3, width=8, depth=2, norm=nn.BatchNorm1d, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    run = train_stacked([model], x, y, steps=30, lr=0.05)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)
    torch.optim.swa_utils.update_bn([x], model)
    assert abs(_error(model.eval()) - run.errors[0]) <= 2 / 300


@pytest.mark.parametrize("models, kwargs, exc, match", [
    ([], {}, TypeError, "models must be a non-empty list"),
    ([nn.Linear(2, 3)], {}, TypeError, "models"),
    ([ResidualMLP(2, 3, 4, 2, seed=0), ResidualMLP(2, 3, 4, 3, seed=0)], {}, ValueError,
     "same architecture"),
    ([ResidualMLP(2, 3, 4, 2, norm="layer", seed=0)], {}, ValueError, "BatchNorm1d"),
    ([ResidualMLP(2, 3, 4, 2, seed=0)], dict(lr=[0.1, 0.2]), ValueError, "one per model"),
    ([ResidualMLP(2, 3, 4, 2, seed=0)], dict(lr=-1.0), ValueError, "lr"),
    ([ResidualMLP(2, 3, 4, 2, seed=0)], dict(optimizer="rmsprop"), ValueError, "optimizer"),
    ([ResidualMLP(2, 3, 4, 2, seed=0)], dict(steps=0), ValueError, "steps"),
    ([ResidualMLP(2, 3, 4, 2, seed=0)], dict(normalize_grads=1), TypeError, "normalize_grads"),
])
def test_train_stacked_errors(models, kwargs, exc, match):
    x, y = SPIRALS
    args = dict(steps=2, lr=0.1) | kwargs
    with pytest.raises(exc, match=match):
        train_stacked(models, x, y, **args)


def test_train_stacked_checks_data():
    x, y = SPIRALS
    model = ResidualMLP(2, 3, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"y must have one label per example \(300\)"):
        train_stacked([model], x, y[:10], steps=1, lr=0.1)
    with pytest.raises(TypeError, match="x must have the model's dtype"):
        train_stacked([model], x.double(), y, steps=1, lr=0.1)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_keeps_the_expectation(mode):
    """Reference: the rule of torchvision.ops.stochastic_depth, out = input * b / (1 - p),
    b ~ Bernoulli(1 - p) per row or per batch; its mean over draws is the input (to 5
    standard errors), in eval mode it is the input, p = 0 is the identity and p = 1
    zero."""
    f = _inputs(4, 3, seed=0)
    g = torch.Generator().manual_seed(0)
    p, n = 0.3, 4000
    draws = torch.stack([stochastic_depth(f, p, mode, generator=g) for _ in range(n)])
    kept = draws.ne(0).any(-1).double()                       # (n, 4) rows kept
    if mode == "batch":
        assert (kept == kept[:, :1]).all()                   # one draw for the batch
    mask = draws.ne(0).any(-1)                                # a kept row is f / (1 - p)
    torch.testing.assert_close(draws[mask], (f / (1 - p)).expand(n, 4, 3)[mask])
    assert (draws[~mask] == 0).all()
    se = f.abs() * math.sqrt(p / (1 - p) / n)
    assert ((draws.mean(0) - f).abs() <= 5 * se + 1e-7).all()
    assert abs(kept.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / kept.numel())
    assert torch.equal(stochastic_depth(f, p, mode, training=False), f)
    assert torch.equal(stochastic_depth(f, 0.0, mode), f)
    assert torch.equal(stochastic_depth(f, 1.0, mode), torch.zeros_like(f))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(input=[1.0]), TypeError, "input"),
    (dict(p=1.5), ValueError, "p must be"),
    (dict(p=-0.1), ValueError, "p must be"),
    (dict(mode="rows"), ValueError, "mode"),
    (dict(training=1), TypeError, "training"),
])
def test_stochastic_depth_errors(kwargs, exc, match):
    args = dict(input=_inputs(2, 3), p=0.5, mode="row", training=True) | kwargs
    with pytest.raises(exc, match=match):
        stochastic_depth(**args)
