"""Tests of companion.data.

References: the closed forms in each docstring recomputed in float64 (sum / sqrt(T),
first step, X w, the spiral's angle), the binomial law of the rare-feature mask
(5 standard errors), determinism (same seed -> identical, other seed -> different).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import data

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)

MAKERS = {
    "teacher_regression": lambda seed: data.teacher_regression(50, 4, 2, seed=seed, noise=0.1),
    "spirals": lambda seed: data.spirals(60, 3, seed=seed),
    "sequence_sum": lambda seed: data.sequence_sum(7, 5, seed=seed),
    "first_element": lambda seed: data.first_element(7, 5, seed=seed),
    "sparse_features": lambda seed: data.sparse_features(80, 6, rare_fraction=0.2, noise=0.1, seed=seed),
}


@pytest.mark.parametrize("name", MAKERS)
@SETTINGS
@given(seed=seeds, other=seeds)
def test_deterministic_given_seed(name, seed, other):
    """Same seed -> identical tensors; a different seed -> different x."""
    a, b = MAKERS[name](seed), MAKERS[name](seed)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    if other != seed:
        assert not torch.equal(MAKERS[name](other)[0], a[0])


def test_teacher_regression_shapes_and_structure():
    """float32 (n, d), (n, k); the teacher and the first rows of x do not depend on n, and
    the noise is an additive N(0, noise^2) term (std within 5 standard errors)."""
    x, y = data.teacher_regression(2000, 6, 3, seed=4)
    assert x.shape == (2000, 6) and y.shape == (2000, 3)
    assert x.dtype == y.dtype == torch.float32
    x_small, y_small = data.teacher_regression(10, 6, 3, seed=4)
    assert torch.equal(x_small, x[:10]) and torch.equal(y_small, y[:10])
    xn, yn = data.teacher_regression(2000, 6, 3, seed=4, noise=0.5)
    assert torch.equal(xn, x)
    eps = (yn - y).double()
    se = 0.5 / math.sqrt(2 * eps.numel())
    assert abs(eps.std().item() - 0.5) < 5 * se


def test_teacher_output_variance_is_about_one():
    """Docstring: Var y ~ 1 averaged over teachers. Per-teacher variances have std ~0.4,
    so the mean over 60 teachers has standard error ~0.05: 0.75..1.25 is ~5 SE."""
    ys = np.array([data.teacher_regression(2000, 16, seed=s)[1].var().item() for s in range(60)])
    assert 0.75 < ys.mean() < 1.25


@SETTINGS
@given(n=st.integers(3, 200), classes=st.integers(2, 6))
def test_spirals_layout(n, classes):
    """n points, classes as even as possible, radius in [0, 1]; with noise=0 the angle of
    each point is 4c + 4r (mod 2 pi) with r its radius (the docstring's closed form)."""
    if n < classes:
        return
    x, labels = data.spirals(n, classes, noise=0.0, seed=0)
    assert x.shape == (n, 2) and x.dtype == torch.float32 and labels.dtype == torch.int64
    counts = np.bincount(labels.numpy(), minlength=classes)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    xd = x.double().numpy()
    r = np.hypot(xd[:, 0], xd[:, 1])
    assert (r <= 1 + 1e-6).all()
    theta = 4.0 * labels.numpy() + 4.0 * r
    keep = r > 1e-3                                      # the angle of the origin is undefined
    diff = np.angle(np.exp(1j * (np.arctan2(xd[:, 0], xd[:, 1]) - theta)))[keep]
    np.testing.assert_allclose(diff, 0.0, atol=1e-4)


def test_sequence_targets():
    """sequence_sum: y = sum_t x_t / sqrt(T); first_element: y = x_1; both share x."""
    xs, ys = data.sequence_sum(9, 4, seed=2)
    xf, yf = data.first_element(9, 4, seed=2)
    assert xs.shape == (9, 4, 1) and ys.shape == yf.shape == (4, 1)
    assert torch.equal(xs, xf)
    x64 = xs.double()
    torch.testing.assert_close(ys.double(), x64.sum(0) / 3.0, rtol=1e-6, atol=1e-6)
    assert torch.equal(yf, xf[0])


@SETTINGS
@given(n=st.integers(1, 300), dim=st.integers(1, 12), frac=st.floats(0.05, 1.0), seed=seeds,
       data_=st.data())
def test_sparse_features_structure(n, dim, frac, seed, data_):
    """y = X w_true (noise 0, float64 recomputation); frequent columns dense, rare ones zero
    outside a mask; mask count = dim - n_rare."""
    n_rare = data_.draw(st.integers(0, dim))
    X, y, w, freq = data.sparse_features(n, dim, rare_fraction=frac, n_rare=n_rare, seed=seed)
    assert X.shape == (n, dim) and y.shape == (n, 1) and w.shape == (dim,) and freq.dtype == torch.bool
    assert int(freq.sum()) == dim - n_rare and freq[: dim - n_rare].all()
    assert (X[:, freq] != 0).all()
    torch.testing.assert_close(y.double()[:, 0], X.double() @ w.double(), rtol=1e-5, atol=1e-5)


def test_rare_fraction_is_binomial():
    """The share of nonzero entries in rare columns is rare_fraction within 5 standard errors."""
    n, n_rare, p = 5000, 10, 0.03
    X, _, _, freq = data.sparse_features(n, 20, rare_fraction=p, n_rare=n_rare, seed=0)
    share = (X[:, ~freq] != 0).double().mean().item()
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / (n * n_rare))
    assert int(data.sparse_features(10, 20, seed=0)[3].sum()) == 10   # default n_rare = dim // 2


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda: data.teacher_regression(0), "n must"),
    (lambda: data.teacher_regression(10, in_features=0), "in_features"),
    (lambda: data.teacher_regression(10, noise=-1.0), "noise"),
    (lambda: data.teacher_regression(10, seed=-3), "seed"),
    (lambda: data.spirals(2, 3), "n must be >= classes"),
    (lambda: data.spirals(10, 1), "classes"),
    (lambda: data.spirals(10, noise=float("inf")), "noise"),
    (lambda: data.sequence_sum(0, 3), "seq_len"),
    (lambda: data.first_element(3, 0), "batch"),
    (lambda: data.sparse_features(10, 4, rare_fraction=0.0), "rare_fraction"),
    (lambda: data.sparse_features(10, 4, rare_fraction=1.5), "rare_fraction"),
    (lambda: data.sparse_features(10, 4, n_rare=5), "n_rare"),
    (lambda: data.sparse_features(10, 0), "dim"),
    (lambda: data.sparse_features(10, 4, noise=-0.1), "noise"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: data.teacher_regression(10, out_features=1.5), "out_features must be an int"),
    (lambda: data.spirals(10, classes=True), "classes must be an int"),
    (lambda: data.sequence_sum("5", 3), "seq_len must be an int"),
    (lambda: data.sparse_features(10, 4, rare_fraction="0.1"), "rare_fraction must be a real"),
    (lambda: data.first_element(3, 2, seed=None), "seed must be an int"),
])
def test_wrong_types_raise_type_error(call, match):
    """A wrong type is a TypeError, a wrong value a ValueError."""
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_largest_seeds_work_and_are_deterministic(seed):
    a, b = data.teacher_regression(4, 3, seed=seed), data.teacher_regression(4, 3, seed=seed)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 18446744073709551615\]"):
        data.spirals(10, seed=2**64)
