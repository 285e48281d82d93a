"""Tests of companion.init.

References: torch.nn.init itself (same seed => bit-identical tensor and the same RNG
state afterwards), its calculate_gain and fan rule, the sampling distribution of the
sample mean and variance (tolerances derived from the number of draws), and the
closed form W W^T = gain^2 I for orthogonal matrices.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.init as tinit
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import init

SETTINGS = settings(max_examples=30, deadline=None)
SHAPES = [(20, 30), (30, 20), (1, 7), (16, 3, 5, 5), (8, 4, 3), (4, 2, 3, 3, 3)]
KAIMING_ARGS = [
    {},  # torch's defaults: leaky_relu, a=0, fan_in
    {"nonlinearity": "relu"},
    {"nonlinearity": "relu", "mode": "fan_out"},
    {"nonlinearity": "leaky_relu", "a": 0.2, "mode": "fan_out"},
    {"nonlinearity": "tanh"},
    {"nonlinearity": "sigmoid"},
    {"nonlinearity": "selu"},
    {"nonlinearity": "linear"},
    {"nonlinearity": "conv2d", "mode": "fan_out"},
]
CASES = (
    [("xavier_uniform_", kw) for kw in ({}, {"gain": 5 / 3})]
    + [("xavier_normal_", kw) for kw in ({}, {"gain": math.sqrt(2.0)})]
    + [("kaiming_uniform_", kw) for kw in KAIMING_ARGS]
    + [("kaiming_normal_", kw) for kw in KAIMING_ARGS]
    + [("orthogonal_", kw) for kw in ({}, {"gain": 2.0})]
    + [("normal_", {"mean": 0.5, "std": 0.1})]
)


def _same_as_torch(ours, theirs, shape, dtype=torch.float32, seed=0, **kwargs):
    """Reference: torch's function from the same global seed; also the RNG state after."""
    torch.manual_seed(seed)
    expected = theirs(torch.empty(shape, dtype=dtype), **kwargs)
    after_expected = torch.rand(3)
    torch.manual_seed(seed)
    got = ours(torch.empty(shape, dtype=dtype), **kwargs)
    assert torch.equal(got, expected)
    assert torch.equal(torch.rand(3), after_expected)  # same number of draws


# ------------------------------------------------------------------ bitwise vs torch
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn, kwargs", CASES)
def test_same_seed_same_tensor_as_torch(fn, kwargs, shape):
    _same_as_torch(getattr(init, fn), getattr(tinit, fn), shape, **kwargs)


@pytest.mark.parametrize("fn, kwargs", CASES)
def test_same_generator_same_tensor_as_torch_float64(fn, kwargs):
    """Reference: torch's function with an explicit torch.Generator, float64."""
    for shape in ((12, 40), (40, 12), (6, 3, 3, 3)):
        expected = getattr(tinit, fn)(torch.empty(shape, dtype=torch.float64),
                                      generator=torch.Generator().manual_seed(7), **kwargs)
        got = getattr(init, fn)(torch.empty(shape, dtype=torch.float64),
                                generator=torch.Generator().manual_seed(7), **kwargs)
        assert torch.equal(got, expected)


@SETTINGS
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple),
       seed=st.integers(0, 2**31), case=st.sampled_from(CASES))
def test_same_tensor_as_torch_for_random_shapes(shape, seed, case):
    fn, kwargs = case
    _same_as_torch(getattr(init, fn), getattr(tinit, fn), shape, seed=seed, **kwargs)


@pytest.mark.parametrize("shape", SHAPES)
def test_lecun_normal_is_kaiming_normal_linear(shape):
    """Reference: torch.nn.init.kaiming_normal_(nonlinearity='linear'), std 1/sqrt(fan_in)."""
    _same_as_torch(init.lecun_normal_,
                   lambda t: tinit.kaiming_normal_(t, nonlinearity="linear"), shape)


def test_in_place_without_grad_on_a_parameter():
    """Like torch: fills a leaf that requires grad, returns the same object, no graph."""
    w = torch.nn.Parameter(torch.empty(5, 4))
    for fn in (init.xavier_uniform_, init.kaiming_normal_, init.orthogonal_, init.zeros_):
        out = fn(w)
        assert out is w and out.grad_fn is None
    a = np.empty((5, 4))
    assert init.xavier_normal_(a, generator=np.random.default_rng(0)) is a


def test_zeros_and_constant_match_torch():
    for shape in ((3,), (4, 5), (2, 3, 4)):
        np.testing.assert_array_equal(init.zeros_(torch.ones(shape)),
                                      tinit.zeros_(torch.ones(shape)))
        assert torch.equal(init.constant_(torch.empty(shape), 0.3),
                           tinit.constant_(torch.empty(shape), 0.3))
        np.testing.assert_array_equal(init.zeros_(np.ones(shape)), np.zeros(shape))
        np.testing.assert_array_equal(init.constant_(np.empty(shape), 0.3),
                                      np.full(shape, 0.3))


def test_empty_tensors_are_left_alone_like_torch():
    for fn in ("xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
               "orthogonal_"):
        _same_as_torch(getattr(init, fn), getattr(tinit, fn), (0, 5))
    assert init.lecun_normal_(torch.empty(4, 0)).shape == (4, 0)


# ---------------------------------------------------------------- gain and fans
@pytest.mark.parametrize("nonlinearity", init.NONLINEARITIES)
def test_calculate_gain_matches_torch(nonlinearity):
    assert init.calculate_gain(nonlinearity) == tinit.calculate_gain(nonlinearity)


@pytest.mark.parametrize("param", [0, 0.2, 1, 3.5, None])
def test_leaky_relu_gain_matches_torch(param):
    assert init.calculate_gain("leaky_relu", param) == tinit.calculate_gain("leaky_relu", param)


@pytest.mark.parametrize("shape", SHAPES + [(3, 2, 0)])
def test_fans_match_torch(shape):
    expected = tinit._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.calculate_fan_in_and_fan_out(torch.empty(shape)) == expected
    assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == expected


def test_scale_formulas_match_their_closed_forms():
    """The book's equations, evaluated independently."""
    assert init.xavier_std(100, 300, 2.0) == pytest.approx(2.0 * math.sqrt(2 / 400))
    assert init.kaiming_std(50, math.sqrt(2)) == pytest.approx(math.sqrt(2 / 50))
    assert init.lecun_std(64) == pytest.approx(1 / 8)
    # U(-b, b) has variance b^2 / 3
    assert init.uniform_bound(0.3) ** 2 / 3 == pytest.approx(0.09)


# ------------------------------------------------------- numpy fills: distributions
def _check_variance(a: np.ndarray, var: float, *, kurtosis: float, mean: float = 0.0) -> None:
    """Sample mean / variance within 5 standard errors of the target.

    se(mean) = sqrt(var / n); se(sample var) = var * sqrt((kurtosis - 1) / n), i.e.
    var * sqrt(2 / (n - 1)) for a normal (kurtosis 3), var * sqrt(0.8 / n) for a
    uniform (kurtosis 1.8).
    """
    x = a.astype(np.float64).ravel()
    n = x.size
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var(ddof=1) - var) < 5 * var * math.sqrt((kurtosis - 1) / (n - 1))


NUMPY_SHAPES = [(400, 300), (64, 32, 3, 3)]


@pytest.mark.parametrize("shape", NUMPY_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_xavier_and_lecun_variances(shape, dtype):
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.empty(shape))
    rng = np.random.default_rng(1)
    var = 4.0 * 2.0 / (fan_in + fan_out)  # gain 2
    a = init.xavier_normal_(np.empty(shape, dtype), gain=2.0, generator=rng)
    assert a.dtype == dtype
    _check_variance(a, var, kurtosis=3.0)
    a = init.xavier_uniform_(np.empty(shape, dtype), gain=2.0, generator=rng)
    _check_variance(a, var, kurtosis=1.8)
    assert np.abs(a).max() <= math.sqrt(3 * var) * (1 + 1e-6)
    _check_variance(init.lecun_normal_(np.empty(shape, dtype), generator=rng),
                    1.0 / fan_in, kurtosis=3.0)


@pytest.mark.parametrize("shape", NUMPY_SHAPES)
@pytest.mark.parametrize("kwargs", KAIMING_ARGS)
def test_numpy_kaiming_variances(shape, kwargs):
    mode = kwargs.get("mode", "fan_in")
    fan = dict(zip(("fan_in", "fan_out"), init.calculate_fan_in_and_fan_out(np.empty(shape))))
    gain = tinit.calculate_gain(kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0))
    var = gain**2 / fan[mode]
    rng = np.random.default_rng(2)
    _check_variance(init.kaiming_normal_(np.empty(shape), generator=rng, **kwargs), var,
                    kurtosis=3.0)
    _check_variance(init.kaiming_uniform_(np.empty(shape), generator=rng, **kwargs), var,
                    kurtosis=1.8)


def test_numpy_normal_mean_and_variance():
    a = init.normal_(np.empty((500, 200)), mean=-0.5, std=0.3,
                     generator=np.random.default_rng(3))
    _check_variance(a, 0.09, kurtosis=3.0, mean=-0.5)


def test_numpy_fills_are_seeded_and_default_rng_works():
    a = init.xavier_normal_(np.empty((5, 6)), generator=np.random.default_rng(4))
    b = init.xavier_normal_(np.empty((5, 6)), generator=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(init.kaiming_uniform_(np.empty((5, 6)))))


# ----------------------------------------------------------------- orthogonality
@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (30, 30), (16, 4, 3, 3), (4, 16, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(shape, gain, kind):
    """Closed form: W W^T = g^2 I if rows <= cols, else W^T W = g^2 I."""
    if kind == "torch":
        w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=gain,
                             generator=torch.Generator().manual_seed(0)).numpy()
    else:
        w = init.orthogonal_(np.empty(shape), gain=gain, generator=np.random.default_rng(0))
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5)


def test_numpy_orthogonal_is_haar_like():
    """Property of Haar-distributed Q (sign-corrected QR): E[Q_ij] = 0 for every entry
    (se of a mean of reps entries with variance 1/n: sqrt(1 / (n reps)))."""
    n, reps = 8, 400
    rng = np.random.default_rng(5)
    qs = np.stack([init.orthogonal_(np.empty((n, n)), generator=rng) for _ in range(reps)])
    # without the sign correction Q_11 is biased (LAPACK's QR gives mean ~ -0.29 here)
    assert np.abs(qs.mean(axis=0)).max() < 5 * math.sqrt(1 / n / reps)


# --------------------------------------------------------------------- registry
def test_get_initializer_kaiming_defaults_to_relu():
    """Reference: torch.nn.init.kaiming_*_(nonlinearity='relu')."""
    for name in ("kaiming_normal", "kaiming_uniform"):
        fn = init.get_initializer(name)
        _same_as_torch(fn, lambda t, name=name: getattr(tinit, name + "_")(
            t, nonlinearity="relu"), (30, 20))
        _same_as_torch(lambda t: fn(t, nonlinearity="tanh", mode="fan_out"),
                       lambda t, name=name: getattr(tinit, name + "_")(
                           t, nonlinearity="tanh", mode="fan_out"), (30, 20))


@pytest.mark.parametrize("name", sorted(init.INITIALIZERS))
def test_every_registry_entry_fills_in_place_and_takes_a_generator(name):
    w = torch.full((6, 4), float("nan"))
    out = init.get_initializer(name)(w, generator=torch.Generator().manual_seed(0))
    assert out is w and torch.all(torch.isfinite(w))
    a = np.full((6, 4), np.nan)
    init.get_initializer(name)(a, generator=np.random.default_rng(0))
    assert np.all(np.isfinite(a))


def test_registry_names():
    assert set(init.INITIALIZERS) == {"xavier_normal", "xavier_uniform", "kaiming_normal",
                                      "kaiming_uniform", "lecun_normal", "orthogonal", "zeros"}
    with pytest.raises(TypeError):
        init.INITIALIZERS["mine"] = init.zeros_  # read-only


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                                "kaiming_normal_", "lecun_normal_", "orthogonal_"])
@pytest.mark.parametrize("shape", [(5,), ()])
def test_fewer_than_two_dims_raises(fn, shape):
    with pytest.raises(ValueError, match=r"tensor must have at least 2 dimensions.*"
                                         + re.escape(str(shape))):
        getattr(init, fn)(torch.empty(shape))
    with pytest.raises(ValueError, match="tensor must have at least 2 dimensions"):
        getattr(init, fn)(np.empty(shape))


def test_fan_of_a_vector_raises():
    with pytest.raises(ValueError, match=r"tensor .* got shape \(3,\)"):
        init.calculate_fan_in_and_fan_out(torch.empty(3))


@pytest.mark.parametrize("fn", [init.kaiming_uniform_, init.kaiming_normal_])
def test_bad_mode_and_nonlinearity_raise(fn):
    expected = r"mode must be one of \['fan_in', 'fan_out'\], got 'fan_avg'"
    with pytest.raises(ValueError, match=expected):
        fn(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \[.*'relu'.*\], got 'gelu'"):
        fn(torch.empty(3, 4), nonlinearity="gelu")
    with pytest.raises(TypeError, match="nonlinearity must be one of"):
        fn(torch.empty(3, 4), nonlinearity=torch.nn.ReLU())
    with pytest.raises(TypeError, match="a must be a real number"):
        fn(torch.empty(3, 4), a="0.1")


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        init.calculate_gain("swish")
    with pytest.raises(TypeError, match="param"):
        init.calculate_gain("leaky_relu", True)
    with pytest.raises(ValueError, match="param"):
        init.calculate_gain("leaky_relu", float("nan"))


@pytest.mark.parametrize("fn", [init.xavier_uniform_, init.xavier_normal_, init.orthogonal_])
def test_negative_gain_raises(fn):
    with pytest.raises(ValueError, match=r"gain must be a finite number >= 0, got -1"):
        fn(torch.empty(3, 4), gain=-1.0)
    with pytest.raises(ValueError, match="gain"):
        fn(np.empty((3, 4)), gain=float("inf"))


def test_normal_errors():
    with pytest.raises(ValueError, match=r"std must be a finite number >= 0, got -0.1"):
        init.normal_(torch.empty(3), std=-0.1)
    with pytest.raises(ValueError, match="mean must be a finite number"):
        init.normal_(torch.empty(3), mean=float("nan"))


def test_type_errors():
    with pytest.raises(TypeError, match=r"tensor must be a numpy array or a torch tensor, got .* \(list\)"):
        init.xavier_normal_([[0.0, 0.0]])
    with pytest.raises(TypeError, match="tensor must have a real floating-point dtype"):
        init.kaiming_normal_(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="generator must be a torch.Generator .*for a torch tensor"):
        init.xavier_normal_(torch.empty(3, 4), generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="generator must be a numpy.random.Generator .*for a numpy array"):
        init.orthogonal_(np.empty((3, 4)), generator=torch.Generator())
    with pytest.raises(TypeError, match="val must be a real number"):
        init.constant_(torch.empty(3), "1")


def test_unknown_initializer_raises():
    expected = r"initializer name must be one of \[.*'xavier_normal'.*\], got 'he'"
    with pytest.raises(ValueError, match=expected):
        init.get_initializer("he")
    with pytest.raises(TypeError, match="initializer name must be a str"):
        init.get_initializer(None)


def test_scale_formulas_check_their_arguments():
    """Formerly ZeroDivisionError, a math domain error and silently wrong numbers."""
    with pytest.raises(ValueError, match="fan must be an int >= 1, got 0"):
        init.kaiming_std(0, 1.41)
    with pytest.raises(ValueError, match="fan_in must be an int >= 1, got -1"):
        init.lecun_std(-1)
    with pytest.raises(ValueError, match="gain must be a finite number >= 0, got -1"):
        init.xavier_std(8, 16, gain=-1)
    with pytest.raises(ValueError, match="fan_in must be an int >= 1, got -8"):
        init.xavier_std(-8, 16)
    with pytest.raises(TypeError, match="fan_out must be an int"):
        init.xavier_std(8, 16.0)
    with pytest.raises(ValueError, match="std must be a finite number >= 0"):
        init.uniform_bound(-0.1)
    assert init.xavier_std(8, 16, gain=0) == 0.0  # gain 0 is allowed, as in xavier_*_


def test_fan_of_a_non_array_and_gain_param_checks():
    with pytest.raises(TypeError, match="tensor must be a numpy array or a torch tensor"):
        init.calculate_fan_in_and_fan_out((3, 4))
    with pytest.raises(TypeError, match="param"):
        init.calculate_gain("relu", "0.1")   # checked for every name, used by leaky_relu
