"""The measurable claims of the optimizers chapter (book/optimizers.ipynb), each checked
against an independent reference: a closed form, numpy's eigenvalues, a Monte Carlo
estimate with its own error bar, or a property (a tuned method beats an untuned one).
Nothing here runs the notebook; every test is small and seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import data, optim, surfaces

RAVINE = (0.2, 4.0)                     # the ravine's Hessian eigenvalues, kappa = 20


# ------------------------------------------------------------------ momentum's rate
def iteration_matrix_rate(lr, mu, curvatures):
    """Reference: the largest |eigenvalue| of the 2x2 heavy-ball matrices, by numpy."""
    return max(np.abs(np.linalg.eigvals(np.array([[1 + mu - lr * lam, -mu], [1.0, 0.0]]))).max()
               for lam in curvatures)


@pytest.mark.parametrize("mu", [0.0, 0.2, 0.4026, 0.6, 0.9])
@pytest.mark.parametrize("lr", [0.05, 0.3, 0.6678, 0.9, 1.2])
def test_heavy_ball_rate_is_the_spectral_radius(lr, mu):
    """surfaces.heavy_ball_rate (closed form) equals numpy's spectral radius of M_lambda."""
    assert surfaces.heavy_ball_rate(lr, mu, RAVINE) == pytest.approx(
        iteration_matrix_rate(lr, mu, RAVINE), rel=1e-6, abs=1e-7)


def nesterov_matrix_rate(lr, mu, curvatures):
    """Reference: the largest |eigenvalue| of torch's Nesterov step written as a 2x2 map on
    (x, v): v' = mu v + lam x, x' = x - lr (lam x + mu v'), built column by column."""
    rates = []
    for lam in curvatures:
        def step(x, v):
            v = mu * v + lam * x
            return x - lr * (lam * x + mu * v), v
        m = np.array([step(1.0, 0.0), step(0.0, 1.0)]).T
        rates.append(np.abs(np.linalg.eigvals(m)).max())
    return max(rates)


@pytest.mark.parametrize("mu", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("lr", [0.05, 0.1, 0.3, 0.4, 0.6])
def test_nesterov_rate_is_the_spectral_radius(lr, mu):
    """surfaces.nesterov_rate (closed form) equals numpy's spectral radius of the map."""
    assert surfaces.nesterov_rate(lr, mu, RAVINE) == pytest.approx(
        nesterov_matrix_rate(lr, mu, RAVINE), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("mu", [0.25, 0.5, 0.9])
def test_nesterov_stability_limit_against_sgd_update(mu):
    """eta lam_max < 2(1+mu)/(1+2mu): the companion's sgd_update(nesterov=True) on the ravine
    converges 2 % below the limit and diverges 2 % above it; heavy ball at the same eta
    (limit 2(1+mu)/lam_max) converges on both sides; the rate crosses 1 at the limit."""
    limit = 2 * (1 + mu) / (1 + 2 * mu) / max(RAVINE)
    assert surfaces.nesterov_rate(limit, mu, RAVINE) == pytest.approx(1.0, abs=1e-9)
    for lr, diverges in ((0.98 * limit, False), (1.02 * limit, True)):
        run = surfaces.run("ravine", optim.sgd_update, steps=3000, lr=lr, momentum=mu,
                           nesterov=True)
        assert (run.diverged_at is not None) == diverges, (lr, mu)
        heavy = surfaces.run("ravine", optim.sgd_update, steps=3000, lr=lr, momentum=mu)
        assert heavy.diverged_at is None and heavy.losses[-1] < 1e-6


def measured_rate(lr, mu, curvatures, T=400):
    """(max over the last 10 |x_t| / |x_0|)^(1/T), with the companion's sgd_update."""
    lam = np.array(curvatures)
    x, state, norms = np.ones(len(lam)), None, []
    for _ in range(T):
        x, state = optim.sgd_update(x, lam * x, state, lr=lr, momentum=mu)
        norms.append(np.linalg.norm(x))
    return (max(norms[-10:]) / np.sqrt(len(lam))) ** (1 / T)


@pytest.mark.parametrize("lr,mu", [(0.1, 0.0), (0.4, 0.0), (0.1, 0.5), (0.3, 0.3),
                                   (0.6, 0.6), (0.6, 0.3), (0.2, 0.9), (0.5, 0.7)])
def test_measured_rate_matches_the_iteration_matrix(lr, mu):
    """The chapter's heat map: the measured rate of sgd_update with momentum on the
    ravine equals the spectral radius of the iteration matrices (numpy eigenvalues)."""
    theory = iteration_matrix_rate(lr, mu, RAVINE)
    assert theory < 0.99
    assert measured_rate(lr, mu, RAVINE) == pytest.approx(theory, abs=0.02)


def test_polyak_optimum_and_gradient_descent_rate():
    """Closed forms: Polyak's (eta*, mu*) gives (sqrt k - 1)/(sqrt k + 1); GD's best,
    at eta = 2/(l_min + l_max), is (k - 1)/(k + 1); and no point of a fine (eta, mu)
    grid beats Polyak's rate (the spectral radius by numpy)."""
    lo, hi = RAVINE
    kappa = hi / lo
    eta = (2 / (np.sqrt(hi) + np.sqrt(lo))) ** 2
    mu = ((np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)) ** 2
    best = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    assert surfaces.heavy_ball_rate(eta, mu, RAVINE) == pytest.approx(best, rel=1e-6)
    assert surfaces.heavy_ball_rate(2 / (lo + hi), 0.0, RAVINE) == pytest.approx(
        (kappa - 1) / (kappa + 1), rel=1e-12)
    grid = [iteration_matrix_rate(e, m, RAVINE) for e in np.linspace(0.05, 1.0, 40)
            for m in np.linspace(0.0, 0.95, 40)]
    assert min(grid) >= best - 1e-3


# --------------------------------------------------------------------- noise floor
def noisy_sgd(lr, schedule=None, *, copies=2000, steps=1500, sigma=1.0, seed=0, momentum=0.0):
    """f of every copy at each step: the companion's SGD class on the noisy diagonal
    quadratic, copies side by side in one parameter."""
    lam = torch.tensor(RAVINE, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    p = torch.zeros(copies, 2, dtype=torch.float64, requires_grad=True)
    opt = optim.SGD([p], lr=lr, momentum=momentum)
    sched = None if schedule is None else schedule(opt)
    per_copy = []
    for _ in range(steps):
        with torch.no_grad():
            per_copy.append((0.5 * lam * p * p).sum(1).clone())
            p.grad = lam * p + sigma * torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
        if sched is not None:
            sched.step()
    return torch.stack(per_copy).numpy()            # (steps, copies)


def test_constant_lr_floor_matches_the_closed_form():
    """Monte Carlo reference: the stationary mean loss of constant-lr SGD equals
    sgd_noise_floor's eta sigma^2 / (2 (2 - eta lambda)) summed, within 4 standard errors
    (batch means over 40 groups of copies)."""
    lr = 0.1
    f = noisy_sgd(lr)[-1000:]                        # the slow coordinate mixes in ~250
    groups = f.mean(0).reshape(40, -1).mean(1)       # 40 independent group means
    mean, se = groups.mean(), groups.std(ddof=1) / np.sqrt(len(groups))
    theory = surfaces.sgd_noise_floor(lr, list(RAVINE), 1.0)
    # the exact stationary variance, the recursion's fixed point, is the same number
    s = [lr ** 2 / (1 - (1 - lr * lam) ** 2) for lam in RAVINE]
    assert theory == pytest.approx(sum(0.5 * lam * v for lam, v in zip(RAVINE, s)), rel=1e-12)
    assert abs(mean - theory) < 4 * se, (mean, theory, se)


def test_momentum_floor_matches_the_ar2_closed_form():
    """Monte Carlo reference for sgd_noise_floor(..., momentum=0.9), the stationary
    variance of the AR(2) recursion: the companion's SGD with momentum 0.9 on the noisy
    quadratic, within 4 standard errors; and about 1/(1 - mu) = 10 times the floor
    without momentum (closed form)."""
    lr, mu = 0.1, 0.9
    f = noisy_sgd(lr, momentum=mu, copies=2000, steps=1500)[-1000:]
    groups = f.mean(0).reshape(40, -1).mean(1)
    mean, se = groups.mean(), groups.std(ddof=1) / np.sqrt(len(groups))
    theory = surfaces.sgd_noise_floor(lr, list(RAVINE), 1.0, momentum=mu)
    assert abs(mean - theory) < 4 * se, (mean, theory, se)
    ratio = theory / surfaces.sgd_noise_floor(lr, list(RAVINE), 1.0)
    assert 8 < ratio < 12
    assert surfaces.sgd_noise_floor(lr, list(RAVINE), 1.0, momentum=0.0) == \
        surfaces.sgd_noise_floor(lr, list(RAVINE), 1.0)


def test_noise_floor_is_proportional_to_lr_for_small_lr():
    """Closed form: for eta lambda << 1 the floor is d eta sigma^2 / 4."""
    assert surfaces.sgd_noise_floor(1e-4, [1.0, 2.0, 3.0], 2.0) == pytest.approx(
        3 * 1e-4 * 4 / 4, rel=1e-3)


@pytest.mark.parametrize("schedule", [
    lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=300, gamma=0.3),
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t / 100)),
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1500)])
def test_a_decaying_schedule_goes_below_the_floor(schedule):
    """Property: with torch's schedulers on the companion's SGD, the final mean loss is
    below half the constant-lr closed-form floor."""
    f = noisy_sgd(0.1, schedule, copies=1000)
    assert f[-100:].mean() < 0.5 * surfaces.sgd_noise_floor(0.1, list(RAVINE), 1.0)


# --------------------------------------------------------------- AdamW and the ridge
def two_scale_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 2)) * np.array([10.0, 0.1])
    return X, X @ np.array([1.0, 1.0])


def decayed(update, steps, **hyper):
    X, y = two_scale_problem()
    w, state = np.zeros(2), None
    for _ in range(steps):
        w, state = update(w, X.T @ (X @ w - y) / len(y), state, **hyper)
    return w, state


def test_adam_l2_and_gd_l2_reach_the_ridge_solution_adamw_does_not():
    """Closed-form reference: the ridge solution (H + lam I)^-1 X^T y / n. GD + L2 and
    Adam + L2 end there; AdamW ends far from it on the small-scale coordinate."""
    X, y = two_scale_problem()
    wd, n = 0.1, len(y)
    H = X.T @ X / n
    ridge = np.linalg.solve(H + wd * np.eye(2), X.T @ y / n)
    lr_gd = 1.9 / np.linalg.eigvalsh(H + wd * np.eye(2)).max()
    w_gd, _ = decayed(optim.sgd_update, 10000, lr=lr_gd, weight_decay=wd)
    w_adam, _ = decayed(optim.adam_update, 3000, lr=0.01, weight_decay=wd)
    w_adamw, _ = decayed(optim.adamw_update, 3000, lr=0.01, weight_decay=wd)
    np.testing.assert_allclose(w_gd, ridge, atol=1e-6)
    np.testing.assert_allclose(w_adam, ridge, atol=1e-6)
    assert abs(w_adamw[1] - ridge[1]) > 0.5


def test_adamw_equilibrium_balances_the_decay():
    """Fixed-point property: after many AdamW steps, m_hat / (sqrt(v_hat) + eps) equals
    -lambda w (the decay cancels the normalised step), and w keeps creeping towards the
    unregularised solution (1, 1) as v_hat forgets."""
    wd = 0.1
    w_short, _ = decayed(optim.adamw_update, 3000, lr=0.01, weight_decay=wd)
    w, s = decayed(optim.adamw_update, 12000, lr=0.01, weight_decay=wd)
    m_hat = s.m / (1 - 0.9 ** s.step)
    v_hat = s.v / (1 - 0.999 ** s.step)
    np.testing.assert_allclose(m_hat / (np.sqrt(v_hat) + 1e-8), -wd * w, rtol=0.05)
    assert np.all(np.abs(1 - w) < np.abs(1 - w_short))


# ----------------------------------------------------------------------- the races
def test_tuned_adagrad_does_not_stall_on_rosenbrock():
    """Property behind the corrected race: AdaGrad at lr 0.5 (the old hand-tuned value)
    stalls on Rosenbrock, but some lr of the chapter's grid 10^-3.5 .. 10^0.5 ends two
    orders of magnitude lower and below tuned gradient descent."""
    grid = 10 ** np.arange(-3.5, 0.51, 0.25)

    def final(update, lr):
        run = surfaces.run("rosenbrock", update, steps=300, lr=lr)
        return np.inf if run.diverged_at is not None else run.losses[-1]

    old = final(optim.adagrad_update, 0.5)
    tuned = min(final(optim.adagrad_update, lr) for lr in grid)
    sgd = min(final(optim.sgd_update, lr) for lr in grid)
    assert old > 1 and tuned < old / 100 and tuned < sgd


def test_adagrad_helps_rare_features_in_the_stochastic_setting():
    """Property (Duchi et al.): one example per step, 40 frequent and 10 rare features;
    each method tuned on the same lr grid by total error: AdaGrad's rare-weight error is
    at least twice smaller than SGD's."""
    X, y, w_true, freq = data.sparse_features(1000, 50, n_rare=10, rare_fraction=0.02,
                                              noise=0.1, seed=1)
    X, y, w_true = (a.double().numpy() for a in (X, y.ravel(), w_true))
    rare = ~freq.numpy()
    stream = np.random.default_rng(0).integers(0, 1000, size=2000)

    def run(update, lr):
        w, state = np.zeros(50), None
        with np.errstate(over="ignore", invalid="ignore"):
            for i in stream:
                w, state = update(w, X[i] * (X[i] @ w - y[i]), state, lr=lr)
        e = w - w_true
        total = np.sqrt(np.mean(e ** 2)) if np.all(np.isfinite(e)) else np.inf
        return total, np.sqrt(np.mean(e[rare] ** 2))

    grid = 10.0 ** np.arange(-3, 0.6, 0.5)
    sgd = min((run(optim.sgd_update, lr) for lr in grid), key=lambda r: r[0])
    ada = min((run(optim.adagrad_update, lr) for lr in grid), key=lambda r: r[0])
    assert ada[1] < 0.5 * sgd[1]


RACE = {"SGD": (optim.sgd_update, {}), "momentum": (optim.sgd_update, dict(momentum=0.9)),
        "Nesterov": (optim.sgd_update, dict(momentum=0.9, nesterov=True)),
        "AdaGrad": (optim.adagrad_update, {}), "RMSProp": (optim.rmsprop_update, {}),
        "Adam": (optim.adam_update, {})}
RACE_STEPS = {"ravine": 60, "scaled": 60, "saddle": 40}
RACE_GRID = 10 ** np.arange(-3.5, 0.51, 0.25)


def race_score(surface, run):
    """The chapter's criterion: final loss (inf if diverged); saddle: steps to f <= -1."""
    if surface == "saddle":
        below = np.flatnonzero(run.losses <= -1.0)
        return float(below[0]) if below.size else np.inf
    return np.inf if run.diverged_at is not None else float(run.losses[-1])


def tuned(surface):
    """Each method's best lr of the grid and its score, as the chapter tunes them."""
    out = {}
    for name, (update, hyper) in RACE.items():
        scores = [race_score(surface, surfaces.run(surface, update, steps=RACE_STEPS[surface],
                                                   lr=lr, **hyper)) for lr in RACE_GRID]
        best = int(np.argmin(scores))
        out[name] = (float(RACE_GRID[best]), scores[best])
    return out


@pytest.mark.parametrize("surface", ["ravine", "scaled"])
def test_tuned_adagrad_and_rmsprop_win_on_the_quadratics(surface):
    """The race's claims on the quadratics (property of the tuned runs): AdaGrad and
    RMSProp end at least 10^6 times below every other method; Nesterov is the best of
    the gradient methods; Adam ends behind its two parents; and at 3x the tuned lr the
    adaptive methods do not diverge."""
    best = tuned(surface)
    adaptive = max(best["AdaGrad"][1], best["RMSProp"][1])
    others = min(best[n][1] for n in ("SGD", "momentum", "Nesterov", "Adam"))
    assert adaptive < 1e-6 * others
    assert best["Nesterov"][1] < min(best["SGD"][1], best["momentum"][1])
    assert best["Adam"][1] > adaptive
    for name in ("AdaGrad", "RMSProp", "Adam"):
        update, hyper = RACE[name]
        run = surfaces.run(surface, update, steps=RACE_STEPS[surface], lr=3 * best[name][0], **hyper)
        assert run.diverged_at is None


def test_tuned_adaptive_methods_leave_the_saddle_in_one_step():
    """The race's saddle claim: at their best lr of the grid the adaptive methods reach
    f <= -1 in one step (their first step is about lr per coordinate), the gradient
    methods take longer."""
    best = tuned("saddle")
    assert all(best[n][1] == 1 for n in ("AdaGrad", "RMSProp", "Adam"))
    assert all(best[n][1] > 1 for n in ("SGD", "momentum", "Nesterov"))
