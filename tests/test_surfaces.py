"""Tests of companion.surfaces.

References: torch autograd of each f (float64) for the hand-written gradients; a dense
grid for the minima; closed forms of gradient descent on a quadratic
(x_t = (1 - 2 eta a)^t x_0 per coordinate) and of heavy-ball momentum (the 2x2 linear
recurrence (x_t, v_t) = M^t (x_0, 0) per coordinate, computed with matrix_power).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import optim, surfaces

SETTINGS = settings(max_examples=25, deadline=None)
RAVINE = surfaces.get("ravine")


@pytest.mark.parametrize("name", surfaces.names())
@SETTINGS
@given(u=st.floats(0, 1), w=st.floats(0, 1))
def test_grad_matches_autograd(name, u, w):
    """grad(p) == torch.autograd.grad(f(p)) at points drawn over the plotting window."""
    s = surfaces.get(name)
    p = np.array([s.xlim[0] + u * (s.xlim[1] - s.xlim[0]), s.ylim[0] + w * (s.ylim[1] - s.ylim[0])])
    x = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(s.f(x[0], x[1]), x)
    got = s.grad(p)
    assert got.shape == (2,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in surfaces.names() if surfaces.get(n).minimum])
def test_minimum_has_zero_gradient_and_lowest_value_on_a_grid(name):
    """grad(minimum) = 0 and f(minimum) <= f everywhere on a 400 x 400 grid of the window."""
    s = surfaces.get(name)
    np.testing.assert_allclose(s.grad(s.minimum), 0.0, atol=1e-12)
    _, _, f = s.grid(400)
    assert s.loss(s.minimum) <= f.min() + 1e-12
    assert s.xlim[0] < s.minimum[0] < s.xlim[1] and s.ylim[0] < s.minimum[1] < s.ylim[1]


def test_saddle_has_no_minimum_and_an_indefinite_hessian():
    """x1^2 - x2^2: critical point at 0, Hessian eigenvalues (2, -2); start near x2 = 0."""
    s = surfaces.get("saddle")
    assert s.minimum is None and s.lambda_max == 2.0
    np.testing.assert_array_equal(np.linalg.eigvalsh(s.hessian), [-2.0, 2.0])
    np.testing.assert_array_equal(s.grad((0.0, 0.0)), [0.0, 0.0])
    assert abs(s.start[1]) < 1e-2 < abs(s.start[0])


def test_quadratics_hessian_matches_autograd():
    """hessian == torch.autograd.functional.hessian of f; ravine's lambda_max = 4."""
    assert RAVINE.lambda_max == 4.0 and RAVINE.start == (-5.0, -2.0)
    for s in (RAVINE, surfaces.get("scaled"), surfaces.quadratic(0.3, 7.0)):
        h = torch.autograd.functional.hessian(
            lambda x: s.f(x[0], x[1]), torch.tensor([0.7, -1.3], dtype=torch.float64))
        np.testing.assert_allclose(s.hessian, h.numpy(), rtol=1e-12)


def test_rotated_ravine_is_the_ravine_in_turned_coordinates():
    """rotated(p) == ravine(R^T p) for R the 45-degree rotation: same eigenvalues (0.2, 4),
    a Hessian with off-diagonal entries, gradients matching autograd, start turned too."""
    rot, rav = surfaces.get("rotated"), RAVINE
    c = s = np.sqrt(0.5)
    r = np.array([[c, -s], [s, c]])
    np.testing.assert_allclose(np.linalg.eigvalsh(rot.hessian), [0.2, 4.0], rtol=1e-12)
    assert abs(rot.hessian[0, 1]) > 1.0          # not axis-aligned
    np.testing.assert_allclose(rot.start, r @ np.array(rav.start), rtol=1e-12)
    rng = np.random.default_rng(0)
    for p in rng.standard_normal((5, 2)) * 3:
        q = r.T @ p
        assert rot.loss(p) == pytest.approx(rav.loss(q), rel=1e-12)
        np.testing.assert_allclose(rot.grad(p), r @ rav.grad(q), rtol=1e-10, atol=1e-12)
    h = torch.autograd.functional.hessian(
        lambda x: rot.f(x[0], x[1]), torch.tensor([0.7, -1.3], dtype=torch.float64))
    np.testing.assert_allclose(rot.hessian, h.numpy(), rtol=1e-12, atol=1e-12)
    # gradient descent sees only the eigenvalues: the same distances as on the ravine
    a = surfaces.run(rot, optim.sgd_update, steps=30, lr=0.3).points
    b = surfaces.run(rav, optim.sgd_update, steps=30, lr=0.3).points
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1), rtol=1e-10)
    # a per-coordinate method does not: Adam's first step is lr * sign(g) in each coordinate
    g = rot.grad(rot.start)
    p1 = surfaces.run(rot, optim.adam_update, steps=1, lr=0.1).points[1]
    np.testing.assert_allclose(p1 - rot.start, -0.1 * np.sign(g), rtol=1e-6)


def test_scaled_gradient_is_100x_larger_along_x1():
    """At equal distance from the minimum, |df/dx1| = 100 |df/dx2|."""
    s = surfaces.get("scaled")
    for r in (0.1, 1.0, -0.7):
        g1, g2 = s.grad((r, 0.0))[0], s.grad((0.0, r))[1]
        assert g1 == pytest.approx(100 * g2, rel=1e-12)


# ------------------------------------------------------- gradient descent on the ravine
@pytest.mark.parametrize("lr", [0.4, 0.6])
def test_gd_on_ravine_follows_the_closed_form(lr):
    """x_{i,t} = (1 - lr h_i)^t x_{i,0}, h = (0.2, 4): 0.4 converges, 0.6 blows up along x2."""
    traj = surfaces.run("ravine", optim.sgd_update, steps=20, lr=lr)
    t = np.arange(21)[:, None]
    expected = (1 - lr * np.array([0.2, 4.0])) ** t * np.array([-5.0, -2.0])
    np.testing.assert_allclose(traj.points, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(traj.losses, 0.1 * expected[:, 0] ** 2 + 2 * expected[:, 1] ** 2)
    assert traj.diverged_at is None
    x2 = np.abs(traj.points[:, 1])
    if lr < 2 / RAVINE.lambda_max:
        assert np.all(np.diff(traj.losses) < 0) and x2[-1] < 1e-3
    else:
        assert np.all(np.diff(x2) > 0) and x2[-1] > 1e3


def test_heavy_ball_momentum_on_ravine_follows_the_2x2_recurrence():
    """torch's momentum (v = b v + g, x -= lr v) per coordinate: (x, v)_t = M^t (x_0, 0) with
    M = [[1 - lr h, -lr b], [h, b]]; lr = 0.6 (divergent for plain GD) converges with b = 0.5."""
    lr, b = 0.6, 0.5
    traj = surfaces.run("ravine", optim.sgd_update, steps=20, lr=lr, momentum=b)
    for i, (h, x0) in enumerate(zip((0.2, 4.0), (-5.0, -2.0))):
        m = np.array([[1 - lr * h, -lr * b], [h, b]])
        assert max(abs(np.linalg.eigvals(m))) < 1  # spectral radius sqrt(b) here
        expected = [(np.linalg.matrix_power(m, t) @ [x0, 0.0])[0] for t in range(21)]
        np.testing.assert_allclose(traj.points[:, i], expected, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(traj.points[-1]) < 0.05 * np.linalg.norm(traj.points[0])


def test_gd_escapes_the_saddle_along_the_unstable_axis():
    """On x1^2 - x2^2: x1_t = (1 - 2 lr)^t x1_0 shrinks, x2_t = (1 + 2 lr)^t x2_0 grows."""
    s, lr = surfaces.get("saddle"), 0.1
    traj = surfaces.run(s, optim.sgd_update, steps=30, lr=lr)
    t = np.arange(31)
    np.testing.assert_allclose(traj.points[:, 0], (1 - 2 * lr) ** t * s.start[0], rtol=1e-12)
    np.testing.assert_allclose(traj.points[:, 1], (1 + 2 * lr) ** t * s.start[1], rtol=1e-12)


# ------------------------------------------------------------------------------- run
def test_run_marks_divergence_and_fills_the_rest_with_nan():
    """lr = 1 on the ravine: |x2_t| = 2 * 3^t, so |p_t| first exceeds 1e6 at t = 12."""
    traj = surfaces.run("ravine", optim.sgd_update, steps=40, lr=1.0)
    t = np.arange(41)
    closed = np.stack([(0.8 ** t) * -5.0, (-3.0) ** t * -2.0], axis=1)
    first = int(np.argmax(np.linalg.norm(closed, axis=1) > surfaces.DIVERGED_NORM))
    assert traj.diverged_at == first == 12
    np.testing.assert_allclose(traj.points[:first], closed[:first], rtol=1e-12)
    assert np.isnan(traj.points[first:]).all() and np.isnan(traj.losses[first:]).all()


def test_run_stops_on_non_finite_points():
    """An update that returns NaN at step 3 gives diverged_at = 3."""
    def nan_at_3(p, g, state):
        state = (state or 0) + 1
        return (p * np.nan if state == 3 else p - 0.1 * g), state
    traj = surfaces.run("beale", nan_at_3, steps=5)
    assert traj.diverged_at == 3 and np.isfinite(traj.points[:3]).all()


@pytest.mark.parametrize("update, hyper", [
    (optim.sgd_update, dict(lr=1e-3, momentum=0.9)), (optim.adagrad_update, dict(lr=0.5)),
    (optim.rmsprop_update, dict(lr=1e-2)), (optim.adam_update, dict(lr=0.05)),
    (optim.adamw_update, dict(lr=0.05, weight_decay=0.0)), (optim.nadam_update, dict(lr=0.05)),
    (optim.signsgd_update, dict(lr=1e-2)), (optim.lion_update, dict(lr=1e-2)),
])
def test_run_takes_every_pure_update_and_matches_a_hand_loop(update, hyper):
    """run(...) == the same update looped by hand from surface.start (on Beale, 100 steps)."""
    s = surfaces.get("beale")
    traj = surfaces.run(s, update, steps=100, **hyper)
    p, state = np.array(s.start), None
    for t in range(1, 101):
        p, state = update(p, s.grad(p), state, **hyper)
        np.testing.assert_array_equal(traj.points[t], p)
    assert traj.losses[-1] < traj.losses[0] and traj.diverged_at is None


def test_run_accepts_a_start_and_an_explicit_state():
    """start= overrides surface.start; a given state (Adagrad's accumulator) is used."""
    init = optim.adagrad_init(np.zeros(2), initial_accumulator_value=100.0)
    traj = surfaces.run(RAVINE, optim.adagrad_update, init, steps=1, start=(1.0, 1.0), lr=1.0)
    g = RAVINE.grad((1.0, 1.0))
    np.testing.assert_allclose(traj.points[1], 1.0 - g / (np.sqrt(100.0 + g ** 2) + 1e-10))


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"name must be one of \['ravine', 'scaled', .*got 'nope'"):
        surfaces.get("nope")
    assert set(surfaces.names()) == {"ravine", "scaled", "rosenbrock", "beale", "saddle", "rotated"}


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(steps=-1), ValueError, "steps must be an int >= 0, got -1"),
    (dict(steps=2.5), TypeError, "steps must be an int, got 2.5"),
    (dict(steps=3, start=(1.0, 2.0, 3.0)), ValueError, "start must be a point"),
])
def test_run_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        surfaces.run("ravine", optim.sgd_update, **kwargs)


def test_run_and_quadratic_type_errors():
    with pytest.raises(TypeError, match="surface must be a Surface"):
        surfaces.run(3, optim.sgd_update, steps=1)
    with pytest.raises(TypeError, match="update must be a callable"):
        surfaces.run("ravine", "sgd", steps=1)
    with pytest.raises(ValueError, match="a must be finite and non-zero, got 0.0"):
        surfaces.quadratic(0, 1)
    with pytest.raises(TypeError, match="b must be a real number"):
        surfaces.quadratic(1, "2")


# ------------------------------------------------------- bad input (issue 12), specific
def test_run_names_an_update_that_forgets_its_state():
    """A custom update returning only p used to end in an IndexError two steps later."""
    with pytest.raises(TypeError, match=r"update must return a pair \(p, state\)"):
        surfaces.run("ravine", lambda p, g, s, **kw: p - 0.1 * g, steps=5)
    with pytest.raises(ValueError, match=r"p a real point of shape \(2,\)"):
        surfaces.run("ravine", lambda p, g, s: (np.append(p, 0.0), s), steps=5)


def test_run_refuses_an_optimizer_class_by_name():
    """update=optim.Adam used to fail with "got multiple values for argument 'lr'"."""
    with pytest.raises(TypeError, match=r"got the class Adam .*optim\.adam_update"):
        surfaces.run("ravine", optim.Adam, steps=5, lr=0.1)


def test_run_checks_the_companion_update_once_even_for_zero_steps():
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        surfaces.run("ravine", optim.sgd_update, steps=0, lr=-1.0)
    with pytest.raises(TypeError, match="state must be None or the SGDState"):
        surfaces.run("ravine", optim.sgd_update, optim.adam_init(np.zeros(2)), steps=3, lr=0.1)


def test_a_bad_start_is_refused_where_it_enters():
    with pytest.raises(ValueError, match=r"start\[0\] must be a finite number, got nan"):
        surfaces.Surface("s", RAVINE.f, RAVINE.df, start=(float("nan"), 0.0), minimum=None,
                         xlim=(-1.0, 1.0), ylim=(-1.0, 1.0))
    with pytest.raises(ValueError, match="start must be a point"):
        surfaces.quadratic(1.0, 1.0, start=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"xlim must be a pair \(low, high\) with low < high"):
        surfaces.quadratic(1.0, 1.0, xlim=(1.0, -1.0))


def test_surface_methods_check_their_point_and_size():
    with pytest.raises(ValueError, match=r"p\[1\] must be a finite number, got inf"):
        RAVINE.grad((1.0, float("inf")))
    with pytest.raises(ValueError, match="p must be a point"):
        RAVINE.loss(np.ones(3))
    with pytest.raises(ValueError, match="n must be an int >= 2, got 1"):
        RAVINE.grid(1)
    np.testing.assert_array_equal(RAVINE.grad(np.array([1.0, 1.0])), RAVINE.grad((1, 1)))


def test_run_still_reports_divergence_not_an_error():
    """NaN gradients of a diverging run are stepped with; run reports the step."""
    nan = surfaces.Surface("nan", RAVINE.f, lambda x1, x2: (float("nan"), 0.0),
                           start=(1.0, 1.0), minimum=None, xlim=(-1.0, 1.0), ylim=(-1.0, 1.0))
    for update in (optim.sgd_update, optim.adam_update):
        traj = surfaces.run(nan, update, steps=5, lr=0.1)
        assert traj.diverged_at == 1 and np.isnan(traj.points[1:]).all()
