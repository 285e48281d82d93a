"""Tests of companion.clip.

References: torch.nn.utils' own clip_grad_norm_ / clip_grad_value_ / get_total_norm /
clip_grads_with_norm_ (same returned norm, same gradients, bit for bit, on hypothesis-drawn
shapes, norm types, max norms, dtypes and foreach paths, inf and NaN included);
torch.linalg.vector_norm for the unit-wise norms; a per-unit float64 loop over Python
floats, written here from Brock et al. (2021), for AGC; and properties (pure functions do
not mutate, numpy == torch, pure == in place, a training loop with ours == with torch's).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import utils as tu

import companion.clip as cc
from companion import data
from companion.nets import mlp

SETTINGS = settings(max_examples=25, deadline=None)
NORM_TYPES = [1.0, 2.0, 3.5, math.inf]
shapes_st = st.lists(st.lists(st.integers(1, 5), max_size=3).map(tuple), min_size=1, max_size=4)


def _twin_params(shapes, dtype, seed, scale=1.0, grad_none=()):
    """Two lists of parameters (ours, torch's) with equal values and equal gradients;
    the parameters at the indices ``grad_none`` get no gradient."""
    gen = torch.Generator().manual_seed(seed)
    a, b = [], []
    for i, s in enumerate(shapes):
        p = torch.randn(s, generator=gen, dtype=dtype)
        g = torch.randn(s, generator=gen, dtype=dtype) * scale
        for lst in (a, b):
            q = p.clone().requires_grad_()
            q.grad = None if i in grad_none else g.clone()
            lst.append(q)
    return a, b


def assert_same_grads(ours, ref):
    """Bit-identical gradients (NaN where torch has NaN), or both None."""
    for p, q in zip(ours, ref):
        if q.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------- in place == torch.nn.utils
@SETTINGS
@given(shapes=shapes_st, norm_type=st.sampled_from(NORM_TYPES),
       max_norm=st.floats(1e-3, 10.0), scale=st.sampled_from([1e-3, 1.0, 100.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       foreach=st.sampled_from([None, True, False]), seed=st.integers(0, 2**16))
def test_clip_grad_norm_matches_torch(shapes, norm_type, max_norm, scale, dtype, foreach, seed):
    """Reference: torch.nn.utils.clip_grad_norm_ on a copy; same norm and grads, exactly."""
    ours, ref = _twin_params(shapes, dtype, seed, scale)
    n_ours = cc.clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    n_ref = tu.clip_grad_norm_(ref, max_norm, norm_type, foreach=foreach)
    torch.testing.assert_close(n_ours, n_ref, rtol=0, atol=0)
    assert_same_grads(ours, ref)


@SETTINGS
@given(shapes=shapes_st, norm_type=st.sampled_from(NORM_TYPES), max_norm=st.floats(1e-3, 10.0),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       foreach=st.sampled_from([None, True, False]), seed=st.integers(0, 2**16))
def test_two_step_api_matches_torch(shapes, norm_type, max_norm, dtype, foreach, seed):
    """Reference: torch's get_total_norm then clip_grads_with_norm_ (the split that sharded
    training uses); both of ours agree exactly."""
    ours, ref = _twin_params(shapes, dtype, seed, scale=10.0)
    n_ours = cc.get_total_norm([p.grad for p in ours], norm_type, foreach=foreach)
    n_ref = tu.get_total_norm([p.grad for p in ref], norm_type, foreach=foreach)
    torch.testing.assert_close(n_ours, n_ref, rtol=0, atol=0)
    assert cc.clip_grads_with_norm_(ours, max_norm, n_ours, foreach=foreach) is None
    tu.clip_grads_with_norm_(ref, max_norm, n_ref, foreach=foreach)
    assert_same_grads(ours, ref)


@SETTINGS
@given(shapes=shapes_st, clip_value=st.floats(1e-3, 3.0),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       foreach=st.sampled_from([None, True, False]), seed=st.integers(0, 2**16))
def test_clip_grad_value_matches_torch(shapes, clip_value, dtype, foreach, seed):
    """Reference: torch.nn.utils.clip_grad_value_; returns None, same grads exactly."""
    ours, ref = _twin_params(shapes, dtype, seed)
    assert cc.clip_grad_value_(ours, clip_value, foreach=foreach) is None
    tu.clip_grad_value_(ref, clip_value, foreach=foreach)
    assert_same_grads(ours, ref)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("foreach", [True, False])
def test_nonfinite_gradients_like_torch(bad, norm_type, foreach):
    """Reference: torch on the same inf/NaN gradient: same total (inf or NaN) and the same
    NaN placement (inf * 0 = NaN, 0 elsewhere for inf; all NaN for NaN); clip_grad_value_
    likewise. error_if_nonfinite=True raises RuntimeError in both."""
    ours, ref = _twin_params([(3, 4), (5,)], torch.float32, 0)
    for lst in (ours, ref):
        lst[0].grad[1, 2] = bad
    torch.testing.assert_close(cc.clip_grad_norm_(ours, 1.0, norm_type, foreach=foreach),
                               tu.clip_grad_norm_(ref, 1.0, norm_type, foreach=foreach),
                               rtol=0, atol=0, equal_nan=True)
    assert_same_grads(ours, ref)
    ours, ref = _twin_params([(3, 4)], torch.float64, 1)
    for lst in (ours, ref):
        lst[0].grad[0, 0] = bad
    cc.clip_grad_value_(ours, 0.5, foreach=foreach)
    tu.clip_grad_value_(ref, 0.5, foreach=foreach)
    assert_same_grads(ours, ref)
    for lst in (ours, ref):
        lst[0].grad[2, 3] = bad
    with pytest.raises(RuntimeError):
        tu.clip_grad_norm_(ref, 1.0, norm_type, error_if_nonfinite=True, foreach=foreach)
    with pytest.raises(RuntimeError, match=r"error_if_nonfinite=True"):
        cc.clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=True, foreach=foreach)


def test_empty_single_tensor_and_missing_grads():
    """References: torch's results for an empty list (tensor(0.), an empty generator warns),
    a single tensor as `parameters`, and parameters whose .grad is None (skipped, left None)."""
    assert torch.equal(cc.clip_grad_norm_([], 1.0), tu.clip_grad_norm_([], 1.0))
    assert torch.equal(cc.get_total_norm([]), torch.tensor(0.0))
    with pytest.warns(UserWarning, match="empty generator"):
        cc.clip_grad_norm_((p for p in []), 1.0)
    ours, ref = _twin_params([(4, 3)], torch.float64, 2, scale=5.0)
    torch.testing.assert_close(cc.clip_grad_norm_(ours[0], 1.0), tu.clip_grad_norm_(ref[0], 1.0),
                               rtol=0, atol=0)
    assert_same_grads(ours, ref)
    cc.clip_grad_value_(ours[0], 0.1)
    tu.clip_grad_value_(ref[0], 0.1)
    assert_same_grads(ours, ref)
    ours, ref = _twin_params([(3,), (2, 2), (4,)], torch.float64, 3, scale=5.0, grad_none={1})
    torch.testing.assert_close(cc.clip_grad_norm_(ours, 1.0), tu.clip_grad_norm_(ref, 1.0),
                               rtol=0, atol=0)
    assert_same_grads(ours, ref)
    cc.adaptive_clip_grad_(ours)  # a None grad is skipped here too
    assert ours[1].grad is None


def test_mixed_dtypes_like_torch():
    """Reference: torch on float32 and float64 parameters together (two foreach groups;
    the result is on the first tensor's device, in the dtype torch.stack promotes to)."""
    ours, ref = _twin_params([(3, 4), (5,)], torch.float32, 4, scale=3.0)
    o64, r64 = _twin_params([(2, 6)], torch.float64, 5, scale=3.0)
    ours, ref = ours[:1] + o64 + ours[1:], ref[:1] + r64 + ref[1:]
    for foreach in (None, False):
        torch.testing.assert_close(cc.clip_grad_norm_(ours, 1.0, foreach=foreach),
                                   tu.clip_grad_norm_(ref, 1.0, foreach=foreach), rtol=0, atol=0)
        assert_same_grads(ours, ref)


def test_foreach_true_on_unsupported_device_raises_like_torch():
    """Reference: torch raises RuntimeError for foreach=True on a 'meta' tensor; so do we."""
    p = torch.zeros(3, device="meta", requires_grad=True)
    p.grad = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="foreach=True"):
        tu.clip_grad_norm_([p], 1.0, foreach=True)
    with pytest.raises(RuntimeError, match="foreach=True was passed.*meta"):
        cc.clip_grad_norm_([p], 1.0, foreach=True)


def test_drop_in_training_loop():
    """Reference: the same Adam loop with torch.nn.utils' clipping (value, then norm, then
    the two-step form); swapping in companion.clip's functions gives identical weights."""
    x, y = data.teacher_regression(64, 5, seed=0)
    nets = [mlp(5, 1, width=16, depth=2, seed=0) for _ in range(2)]
    for net, lib in zip(nets, (tu, cc)):
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(15):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            lib.clip_grad_value_(net.parameters(), 0.5)
            lib.clip_grad_norm_(net.parameters(), max_norm=0.3)
            total = lib.get_total_norm([p.grad for p in net.parameters()], 3.5)
            lib.clip_grads_with_norm_(net.parameters(), 0.2, total)
            opt.step()
    for p, q in zip(*(net.parameters() for net in nets)):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------------- AGC
def _agc_reference(w: torch.Tensor, g: torch.Tensor, clip_factor: float, eps: float):
    """Brock et al.'s rule unit by unit in Python floats: per row i (whole tensor if <= 1-D),
    m = max(||W_i||, eps) * clip_factor; G_i *= m / max(||G_i||, 1e-6) if ||G_i|| > m.
    Returns the clipped gradient (float64) and the number of clipped units."""
    w64, out = w.double(), g.double().clone()
    units = [...] if w.ndim <= 1 else range(w.shape[0])
    n_clipped = 0
    for i in units:
        wn = math.sqrt(sum(v * v for v in w64[i].flatten().tolist()))
        gn = math.sqrt(sum(v * v for v in out[i].flatten().tolist()))
        m = max(wn, eps) * clip_factor
        if gn > m:
            out[i] = out[i] * (m / max(gn, 1e-6))
            n_clipped += 1
    return out, n_clipped


@pytest.mark.parametrize("shape", [(6,), (5, 4), (4, 3, 3, 3)])
@pytest.mark.parametrize("clip_factor, eps", [(0.01, 1e-3), (0.1, 1e-3), (0.05, 0.5)])
def test_adaptive_clip_matches_per_unit_loop(shape, clip_factor, eps):
    """Reference: _agc_reference. Row gradients span 4 decades so that some units are
    clipped and some not; a 2-D weight has an all-zero row (its limit is eps * clip_factor).
    Checked: adaptive_clip_grad_ (float64, in place) and adaptive_clip (torch and numpy)."""
    gen = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    if w.ndim == 2:
        w[1] = 0.0
    rows = torch.logspace(-4, 0, shape[0], dtype=torch.float64).reshape(-1, *[1] * (w.ndim - 1))
    g = torch.randn(shape, generator=gen, dtype=torch.float64) * (rows if w.ndim > 1 else 0.01)
    expected, n_clipped = _agc_reference(w, g, clip_factor, eps)
    if w.ndim > 1:
        assert 0 < n_clipped < shape[0]
    p = w.clone().requires_grad_()
    p.grad = g.clone()
    cc.adaptive_clip_grad_([p], clip_factor=clip_factor, eps=eps)
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(cc.adaptive_clip([g], [w], clip_factor, eps)[0], expected,
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cc.adaptive_clip([g.numpy()], [w.numpy()], clip_factor, eps)[0],
                               expected.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_unitwise_norm(shape, norm_type):
    """Reference: torch.linalg.vector_norm over dims 1.. (keepdim), whole tensor for 1-D;
    numpy and torch inputs."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dims = None if x.ndim <= 1 else tuple(range(1, x.ndim))
    expected = torch.linalg.vector_norm(x, norm_type, dim=dims, keepdim=dims is not None)
    torch.testing.assert_close(cc.unitwise_norm(x, norm_type), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(cc.unitwise_norm(x.numpy(), norm_type), expected.numpy(),
                               rtol=1e-12)


# ------------------------------------------------------------------- pure functions
@SETTINGS
@given(shapes=shapes_st, norm_type=st.sampled_from(NORM_TYPES), max_norm=st.floats(1e-2, 10.0),
       scale=st.sampled_from([1e-3, 1.0, 100.0]), seed=st.integers(0, 2**16))
def test_pure_equals_in_place_numpy_equals_torch(shapes, norm_type, max_norm, scale, seed):
    """Reference: the in-place functions (themselves equal to torch's). Pure results on
    numpy and torch float64 inputs agree with them to 1e-12, and leave the inputs alone."""
    params, _ = _twin_params(shapes, torch.float64, seed, scale)
    grads_t = [p.grad.clone() for p in params]
    grads_n = [g.numpy().copy() for g in grads_t]
    clipped_t, total_t = cc.clip_by_global_norm(grads_t, max_norm, norm_type)
    clipped_n, total_n = cc.clip_by_global_norm(grads_n, max_norm, norm_type)
    valued_n = cc.clip_by_value(grads_n, max_norm)
    valued_t = cc.clip_by_value(grads_t, max_norm)
    total_ref = cc.clip_grad_norm_(params, max_norm, norm_type)
    torch.testing.assert_close(total_t, total_ref, rtol=1e-12, atol=0)
    assert isinstance(total_n, np.floating)
    assert total_n == pytest.approx(total_ref.item(), rel=1e-12)
    assert float(cc.global_norm(grads_n, norm_type)) == float(total_n)
    for ct, cn, p in zip(clipped_t, clipped_n, params):
        torch.testing.assert_close(ct, p.grad, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(cn, p.grad.numpy(), rtol=1e-12, atol=1e-300)
    for g, p in zip(grads_t, params):  # inputs untouched: their norm is still total_ref
        p.grad = g.clone()
    assert torch.equal(cc.get_total_norm(grads_t, norm_type), total_ref)
    cc.clip_grad_value_(params, max_norm)
    for vt, vn, p in zip(valued_t, valued_n, params):
        assert torch.equal(vt, p.grad) and np.array_equal(vn, p.grad.numpy())


def test_pure_nonfinite_and_edge_cases():
    """References: torch's in-place results for an inf gradient (NaN where inf, 0 elsewhere);
    the closed forms ||()|| = 0 and ||(3, 4)||_2 = 5, ||(3, -4)||_inf = 4, ||(3, 4)||_1 = 7."""
    g = np.array([1.0, np.inf, -2.0])
    with np.errstate(invalid="ignore"):
        clipped, total = cc.clip_by_global_norm([g], 1.0)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    p.grad = torch.from_numpy(g.copy())
    cc.clip_grad_norm_(p, 1.0)
    np.testing.assert_array_equal(clipped[0], p.grad.numpy())
    assert total == np.inf and float(cc.global_norm([])) == 0.0
    v = [np.array([3.0]), np.array([-4.0])]
    assert [float(cc.global_norm(v, q)) for q in (2, math.inf, 1, "inf")] == [5.0, 4.0, 7.0, 4.0]
    assert float(cc.global_norm(torch.tensor([3.0, -4.0]))) == 5.0  # a single tensor
    assert float(cc.global_norm([np.zeros(0), np.array([2.0])], math.inf)) == 2.0


# ------------------------------------------------------------------------------ errors
def _p():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    return [p]


G = [np.ones(3)]


@pytest.mark.parametrize("call, exc, message", [
    (lambda: cc.clip_grad_norm_(_p(), -1.0), ValueError, "max_norm must be a finite number > 0, got -1.0"),
    (lambda: cc.clip_grad_norm_(_p(), 0), ValueError, "max_norm must be a finite number > 0, got 0.0"),
    (lambda: cc.clip_grad_norm_(_p(), math.inf), ValueError, "max_norm must be a finite number > 0, got inf"),
    (lambda: cc.clip_grad_norm_(_p(), math.nan), ValueError, "max_norm must be a finite number > 0, got nan"),
    (lambda: cc.clip_grad_norm_(_p(), "1"), TypeError,
     "max_norm must be a real number, got '1'"),
    (lambda: cc.clip_grad_norm_(_p(), True), TypeError,
     "max_norm must be a real number, got True (bool)"),
    (lambda: cc.clip_grad_norm_(_p(), 1.0, 0), ValueError,
     "norm_type must be a number > 0 or inf, got 0.0"),
    (lambda: cc.clip_grad_norm_(_p(), 1.0, -2.0), ValueError,
     "norm_type must be a number > 0 or inf, got -2.0"),
    (lambda: cc.get_total_norm([torch.ones(2)], "two"), ValueError,
     "norm_type must be a number > 0 or inf (or the string 'inf'), got 'two'"),
    (lambda: cc.global_norm(G, math.nan), ValueError,
     "norm_type must be a number > 0 or inf, got nan"),
    (lambda: cc.clip_grad_norm_([1.0], 1.0), TypeError,
     "parameters[0] must be a torch tensor, got 1.0 (float)"),
    (lambda: cc.get_total_norm([torch.ones(1), np.ones(2)]), TypeError,
     "tensors[1] must be a torch tensor, got a float64 array of shape (2,)"),
    (lambda: cc.clip_grad_norm_(_p(), 1.0, foreach="yes"), TypeError,
     "foreach must be None, True or False, got 'yes'"),
    (lambda: cc.clip_grads_with_norm_(_p(), 1.0, "big"), TypeError,
     "total_norm must be a tensor or a number, got 'big'"),
    (lambda: cc.clip_grads_with_norm_(_p(), -3, torch.tensor(1.0)), ValueError,
     "max_norm must be a finite number > 0, got -3.0"),
    (lambda: cc.clip_grad_value_(_p(), 0.0), ValueError, "clip_value must be a finite number > 0, got 0.0"),
    (lambda: cc.clip_grad_value_(_p(), None), TypeError,
     "clip_value must be a real number, got None"),
    (lambda: cc.adaptive_clip_grad_(_p(), clip_factor=-0.1), ValueError,
     "clip_factor must be a finite number > 0, got -0.1"),
    (lambda: cc.adaptive_clip_grad_(_p(), eps=-1e-3), ValueError,
     "eps must be a finite number >= 0, got -0.001"),
    (lambda: cc.adaptive_clip_grad_(_p(), eps="0"), TypeError,
     "eps must be a real number, got '0'"),
    (lambda: cc.adaptive_clip_grad_(_p(), norm_type=-1), ValueError,
     "norm_type must be a number > 0 or inf, got -1.0"),
    (lambda: cc.clip_by_value(G, -1), ValueError, "clip_value must be a finite number > 0, got -1.0"),
    (lambda: cc.clip_by_global_norm(G, 0.0), ValueError, "max_norm must be a finite number > 0, got 0.0"),
    (lambda: cc.adaptive_clip(G, G, clip_factor=math.inf), ValueError,
     "clip_factor must be a finite number > 0, got inf"),
    (lambda: cc.adaptive_clip(G, G, eps=math.inf), ValueError, "eps must be a finite number >= 0, got inf"),
    (lambda: cc.adaptive_clip(G, G + G), ValueError,
     "grads and params must have the same length, got 1 and 2"),
    (lambda: cc.unitwise_norm(G[0], 0.0), ValueError,
     "norm_type must be a number > 0 or inf, got 0.0"),
])
def test_error_messages(call, exc, message):
    """Each bad argument raises the named error; the message names the argument and value
    (where torch accepts max_norm <= 0, we refuse it: see the module docstring)."""
    with pytest.raises(exc, match=re.escape(message)):
        call()


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_norm=None), "max_norm"),
    (dict(max_norm=[1.0]), "max_norm"),
    (dict(max_norm=torch.ones(2)), "max_norm"),
    (dict(norm_type=None), "norm_type"),
    (dict(norm_type="two"), "norm_type"),
    (dict(norm_type=[2.0]), "norm_type"),
    (dict(parameters=None), "parameters"),
    (dict(parameters=3), "parameters"),
    (dict(parameters=torch.nn.Linear), "parameters"),
])
def test_where_torch_raises_a_clear_error_we_raise_the_same_type_naming_the_argument(kwargs, name):
    """Reference: torch.nn.utils.clip_grad_norm_ on the same bad value (torch 2.13: a
    TypeError for None, a list or a class, a ValueError for 'two' or a two-element
    tensor); ours raises the same type, from companion.clip, naming the argument."""
    args = dict(parameters=_p(), max_norm=1.0) | kwargs
    with pytest.raises((TypeError, ValueError)) as theirs:
        tu.clip_grad_norm_(**args)
    args = dict(parameters=_p(), max_norm=1.0) | kwargs
    with pytest.raises(theirs.type, match=rf"^{name}\b") as ours:
        cc.clip_grad_norm_(**args)
    assert ours.traceback[-1].path.name in ("clip.py", "_check.py")


def test_the_string_inf_is_a_norm_type_as_in_torch():
    """Reference: torch's float(norm_type) reads "inf"; the max-norm is the same."""
    ours, ref = _twin_params([(3, 4), (5,)], torch.float64, 7, scale=3.0)
    torch.testing.assert_close(cc.clip_grad_norm_(ours, 1.0, "inf"),
                               tu.clip_grad_norm_(ref, 1.0, "inf"), rtol=0, atol=0)
    assert_same_grads(ours, ref)
    with pytest.raises(ValueError, match="norm_type must be a number > 0 or inf"):
        cc.clip_grad_norm_(ours, 1.0, "2")          # torch reads it; we take numbers only


def test_a_module_for_parameters_is_named():
    with pytest.raises(TypeError, match=r"model\.parameters\(\)\), got the module Linear"):
        cc.clip_grad_norm_(torch.nn.Linear(2, 2), 1.0)


def test_clip_grad_value_of_nothing_returns_none():
    """torch 2.13 raises an internal RuntimeError for an empty list; there is nothing to
    clip, so we return None as clip_grad_norm_([]) returns its zero norm."""
    assert cc.clip_grad_value_([], 1.0) is None


def test_adaptive_clip_refuses_broadcasting_shapes():
    """A (1, 3) gradient for a (2, 3) weight would broadcast silently: refused."""
    with pytest.raises(ValueError, match=r"grads\[0\] must have the shape of params\[0\], \(2, 3\)"):
        cc.adaptive_clip([np.ones((1, 3))], [np.ones((2, 3))])


def test_descent_steps_checks_the_first_gradient():
    with pytest.raises(ValueError, match=r"grad must return an array of x0's shape \(2,\)"):
        cc.descent_steps(lambda x: np.ones(3), np.ones(2), lr=0.1)
    with pytest.raises(TypeError, match="grad must be a callable grad\\(x\\), got the class float"):
        cc.descent_steps(float, 1.0, lr=0.1)


def test_error_if_nonfinite_message_names_the_norm():
    """The RuntimeError says which norm order and which value (inf) triggered it."""
    p = _p()
    p[0].grad[0] = math.inf
    with pytest.raises(RuntimeError, match=r"total norm of order 2\.0 of the gradients is inf"):
        cc.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    assert p[0].grad[0] == math.inf  # nothing was clipped


def test_errors_raised_before_any_gradient_changes():
    """A bad argument leaves the gradients untouched (checks run first)."""
    p = _p()
    for call in (lambda: cc.clip_grad_norm_(p, -1.0), lambda: cc.clip_grad_norm_(p, 1.0, 0)):
        with pytest.raises(ValueError):
            call()
        assert torch.equal(p[0].grad, torch.ones(3))


# -------------------------------------------------------------- (clipped) gradient descent
def _quartic_grad(x):
    return 2 * x + 4 * x ** 3                                   # f(x) = x^2 + x^4


@pytest.mark.parametrize("a, lr", [(1.0, 0.1), (2.0, 0.3), (0.5, 1.5), (3.0, 0.6)])
def test_descent_steps_on_a_quadratic_matches_the_closed_form(a, lr):
    """Reference: on f = a x^2 / 2 gradient descent gives f'(x_t) = a x0 (1 - lr a)^t, so
    the first t with |f'| <= tol is ceil(log(tol / (a |x0|)) / log|1 - lr a|)."""
    x0, tol = 3.0, 1e-6
    expected = math.ceil(math.log(tol / (a * x0)) / math.log(abs(1 - lr * a)))
    got = cc.descent_steps(lambda x: a * x, x0, lr=lr, tol=tol)
    assert abs(got - expected) <= 1                              # rounding at the boundary
    # 1-D arrays: the same iteration, coordinate by coordinate
    assert cc.descent_steps(lambda x: a * x, np.array([x0]), lr=lr, tol=tol) == got


def test_clipped_descent_moves_lr_times_max_norm_per_step_while_clipped():
    """Reference: while |f'| > tau every clipped step has length exactly lr * tau, so one
    more unit of distance from the minimum costs 1 / (lr tau) more steps (f = x^2 + x^4)."""
    lr, tau = 0.25, 1.0
    far = [cc.descent_steps(_quartic_grad, x0, lr=lr, max_norm=tau) for x0 in (48.5, 96.5)]
    assert (far[1] - far[0]) / 48 == pytest.approx(1 / (lr * tau), rel=0.01)
    # a threshold that never binds is plain gradient descent
    assert (cc.descent_steps(_quartic_grad, 0.3, lr=lr, max_norm=1e9)
            == cc.descent_steps(_quartic_grad, 0.3, lr=lr))


def test_zhang_et_al_steps_grow_like_x0_squared_unclipped_and_like_x0_clipped():
    """Reference: Zhang, He, Sra & Jadbabaie (2020), the x^2 + x^4 example: gradient descent
    with the step safe at the start, 1 / f''(x0), needs Theta(x0^2) steps; clipped descent
    with a fixed step Theta(x0). The log-log slopes (the ones the clipping chapter glues)
    must be 2 and, between the two largest starts, close to 1 (a constant number of steps
    near the minimum keeps the fitted slope of the clipped runs below 1 at small x0)."""
    x0s = [12, 24, 48, 96]
    gd = [cc.descent_steps(_quartic_grad, x, lr=1 / (2 + 12 * x * x), max_steps=10 ** 7)
          for x in x0s]
    clipped = [cc.descent_steps(_quartic_grad, x, lr=0.25, max_norm=1.0) for x in x0s]
    slope_gd = np.polyfit(np.log(x0s), np.log(gd), 1)[0]
    local_clipped = math.log(clipped[-1] / clipped[-2]) / math.log(2)
    assert slope_gd == pytest.approx(2.0, abs=0.02)
    assert 0.9 <= local_clipped <= 1.0
    assert gd[-1] > 1000 * clipped[-1]


def test_descent_steps_reports_divergence_and_the_step_limit_as_none():
    """lr a > 2 on a quadratic diverges (|1 - lr a| > 1): the iterates overflow to inf."""
    assert cc.descent_steps(lambda x: x, 1.0, lr=2.5) is None
    assert cc.descent_steps(lambda x: x, 1.0, lr=0.001, max_steps=10) is None
    assert cc.descent_steps(lambda x: x, 1e-9, lr=0.1) == 0     # already below tol


@pytest.mark.parametrize("call, exc, message", [
    (lambda: cc.descent_steps(_quartic_grad, 1.0, lr=0.0), ValueError, "lr must be a finite number > 0, got 0.0"),
    (lambda: cc.descent_steps(_quartic_grad, 1.0, lr=0.1, max_norm=-1), ValueError,
     "max_norm must be a finite number > 0, got -1.0"),
    (lambda: cc.descent_steps(_quartic_grad, 1.0, lr=0.1, tol=0), ValueError,
     "tol must be a finite number > 0, got 0.0"),
    (lambda: cc.descent_steps(_quartic_grad, 1.0, lr=0.1, max_steps=0), ValueError,
     "max_steps must be an int >= 1, got 0"),
    (lambda: cc.descent_steps(_quartic_grad, 1.0, lr=0.1, max_steps=2.5), TypeError,
     "max_steps must be an int, got 2.5 (float)"),
    (lambda: cc.descent_steps("x^2", 1.0, lr=0.1), TypeError,
     "grad must be a callable grad(x), got 'x^2'"),
    (lambda: cc.descent_steps(_quartic_grad, np.ones((2, 2)), lr=0.1), ValueError,
     "x0 must be a number or a 1-D array, got shape (2, 2)"),
])
def test_descent_steps_error_messages(call, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        call()


@pytest.mark.parametrize("foreach", [np.True_, np.False_])
def test_foreach_takes_numpy_bools_as_torch_does(foreach):
    """torch.nn.utils.clip_grad_norm_ reads np.True_ as true; so does the companion (one
    check, _check.optional_flag, shared with the optimizers), with torch's numbers. Other
    truthy values (1, "yes"), which torch also takes, are refused by name."""
    ours, ref = _twin_params([(3, 4), (5,)], torch.float64, seed=0, scale=10.0)
    n_ours = cc.clip_grad_norm_(ours, 1.0, foreach=foreach)
    n_ref = tu.clip_grad_norm_(ref, 1.0, foreach=foreach)
    torch.testing.assert_close(n_ours, n_ref)
    assert_same_grads(ours, ref)
    with pytest.raises(TypeError, match="foreach must be None, True or False, got 1"):
        cc.clip_grad_norm_(ours, 1.0, foreach=1)
