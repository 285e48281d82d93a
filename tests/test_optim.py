"""Tests of companion.optim.

References: torch.optim's own SGD / Adagrad / RMSprop / Adam / AdamW / NAdam (float64,
100+ steps, hypothesis-drawn hyperparameters) and its lr schedulers; closed forms (Adam's
first step without bias correction, signSGD's lr * sign(g), EMA sums); a line-by-line
transcription of the Lion paper's Algorithm 2; and properties (the pure functions do not
mutate, numpy == torch, foreach == single-tensor, a resumed run == an uninterrupted one).
Gradients come from a fixed random separable quadratic f(p) = 1/2 sum_j a_j (p_j - c_j)^2,
its minimum c placed ~10 away so that 100 steps never reach it: the sign-like methods
(RMSprop, Adam) are chaotic wherever they bounce (across a minimum, or across the floor of a
coupled valley), and rounding-level differences between two correct implementations would
grow there without bound; here each coordinate slides monotonically towards its c_j.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import companion.optim as co

SETTINGS = settings(max_examples=20, deadline=None)
SHAPES = [(3,), (2, 4), (5, 1)]
STEPS = 100
TOL = dict(rtol=1e-6, atol=1e-9)


class Quadratic:
    """Per tensor i: f_i(p) = 1/2 sum_j a_ij (p_j - c_ij)^2, a in [0.1, 4]; grad = a (p - c)."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.p0 = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        self.c = [10 + torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        self.a = [0.1 + 3.9 * torch.rand(s, generator=gen, dtype=torch.float64) for s in SHAPES]

    def grad(self, i: int, p):
        if isinstance(p, np.ndarray):
            return self.a[i].numpy() * (p - self.c[i].numpy())
        return self.a[i] * (p - self.c[i])


PROBLEM = Quadratic(0)


def run_class(make_opt, steps=STEPS, problem=PROBLEM, make_sched=None):
    """Run an Optimizer class on the quadratic; returns (params, list of lrs seen)."""
    params = [torch.nn.Parameter(p.clone()) for p in problem.p0]
    opt = make_opt(params)
    sched = make_sched(opt) if make_sched else None
    lrs = []
    for _ in range(steps):
        for i, p in enumerate(params):
            p.grad = problem.grad(i, p.detach())
        opt.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        if sched:
            sched.step()
    return [p.detach() for p in params], lrs


def run_pure(update, hyper, steps=STEPS, problem=PROBLEM, as_numpy=False, init=None):
    """Run a pure update function on the same quadratic, one state per tensor."""
    ps = [p.clone().numpy() if as_numpy else p.clone() for p in problem.p0]
    states = [init(p) if init else None for p in ps]
    for _ in range(steps):
        for i, p in enumerate(ps):
            ps[i], states[i] = update(p, problem.grad(i, p), states[i], **hyper)
    return ps


def assert_params_close(ours, ref, **tol):
    for a, b in zip(ours, ref):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), **(tol or TOL))


# ------------------------------------------------------------ hyperparameter strategies
lr = st.floats(1e-4, 5e-2)
small = st.one_of(st.just(0.0), st.floats(1e-4, 0.1))
beta1 = st.floats(0.0, 0.99)
beta2 = st.floats(0.5, 0.9999)
eps = st.floats(1e-8, 1e-3)


@st.composite
def sgd_hyper(draw):
    momentum = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.95)))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9)))
    return dict(lr=draw(lr), momentum=momentum, dampening=dampening,
                weight_decay=draw(small), nesterov=nesterov)


adagrad_hyper = st.fixed_dictionaries(dict(
    lr=st.floats(1e-3, 0.1), lr_decay=small, weight_decay=small,
    initial_accumulator_value=small, eps=st.floats(1e-10, 1e-3)))
rmsprop_hyper = st.fixed_dictionaries(dict(
    lr=st.floats(1e-4, 1e-2), alpha=st.floats(0.5, 0.999), eps=eps, weight_decay=small,
    momentum=st.one_of(st.just(0.0), st.floats(0.0, 0.9)), centered=st.booleans()))
adam_hyper = st.fixed_dictionaries(dict(
    lr=lr, betas=st.tuples(beta1, beta2), eps=eps, weight_decay=small, amsgrad=st.booleans()))
nadam_hyper = st.fixed_dictionaries(dict(
    lr=lr, betas=st.tuples(beta1, beta2), eps=eps, weight_decay=small,
    momentum_decay=st.floats(0.0, 1e-2), decoupled_weight_decay=st.booleans()))

CASES = {  # name: (ours, torch's, strategy, has a foreach path)
    "SGD": (co.SGD, torch.optim.SGD, sgd_hyper(), True),
    "Adagrad": (co.Adagrad, torch.optim.Adagrad, adagrad_hyper, False),
    "RMSprop": (co.RMSprop, torch.optim.RMSprop, rmsprop_hyper, False),
    "Adam": (co.Adam, torch.optim.Adam, adam_hyper, True),
    "AdamW": (co.AdamW, torch.optim.AdamW, adam_hyper, True),
    "NAdam": (co.NAdam, torch.optim.NAdam, nadam_hyper, False),
}
PURE = {"SGD": co.sgd_update, "Adagrad": co.adagrad_update, "RMSprop": co.rmsprop_update,
        "Adam": co.adam_update, "AdamW": co.adamw_update, "NAdam": co.nadam_update}


def pure_init(name, hyper):
    """The explicit init a pure run needs (Adagrad's accumulator is an init argument)."""
    if name == "Adagrad":
        value = hyper["initial_accumulator_value"]
        return lambda p: co.adagrad_init(p, initial_accumulator_value=value)
    return None


def pure_hyper(name, hyper):
    return {k: v for k, v in hyper.items() if not (name == "Adagrad" and k.startswith("initial"))}


# ------------------------------------------------------------------ class == torch.optim
@pytest.mark.parametrize("name", list(CASES))
@SETTINGS
@given(data=st.data())
def test_class_matches_torch_optim(name, data):
    """Ours == torch.optim.<name> for the same hyperparameters over 100 steps (float64)."""
    ours, theirs, strategy, has_foreach = CASES[name]
    hyper = data.draw(strategy)
    extra = dict(foreach=data.draw(st.booleans())) if has_foreach else {}
    ref, _ = run_class(lambda ps: theirs(ps, **hyper))
    got, _ = run_class(lambda ps: ours(ps, **hyper, **extra))
    assert_params_close(got, ref)


@pytest.mark.parametrize("name", list(CASES))
@SETTINGS
@given(data=st.data())
def test_pure_function_equals_class_and_torch(name, data):
    """The pure function looped by hand == our class (foreach=False, exactly) == torch."""
    ours, theirs, strategy, _ = CASES[name]
    hyper = data.draw(strategy)
    pure = run_pure(PURE[name], pure_hyper(name, hyper), init=pure_init(name, hyper))
    extra = dict(foreach=False) if CASES[name][3] else {}
    cls, _ = run_class(lambda ps: ours(ps, **hyper, **extra))
    for a, b in zip(pure, cls):
        assert torch.equal(a, b)
    assert_params_close(pure, run_class(lambda ps: theirs(ps, **hyper))[0])


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_pure_function_numpy_equals_torch(name, data):
    """Each pure function gives the same numbers on numpy arrays as on torch tensors."""
    hyper = pure_hyper(name, data.draw(CASES[name][2]))
    init = pure_init(name, data.draw(CASES[name][2]))
    t = run_pure(PURE[name], hyper, steps=30, init=init)
    n = run_pure(PURE[name], hyper, steps=30, init=init, as_numpy=True)
    for a, b in zip(n, t):
        assert isinstance(a, np.ndarray)
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@SETTINGS
@given(data=st.data())
def test_foreach_equals_single_tensor(name, data):
    """The multi-tensor path == the single-tensor (pure function) path, to rounding."""
    ours, _, strategy, _ = CASES[name]
    hyper = data.draw(strategy)
    maximize = data.draw(st.booleans())
    single, _ = run_class(lambda ps: ours(ps, **hyper, maximize=maximize, foreach=False), steps=50)
    multi, _ = run_class(lambda ps: ours(ps, **hyper, maximize=maximize, foreach=True), steps=50)
    assert_params_close(multi, single, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_maximize_matches_torch(name):
    """maximize=True (ascent on -f, i.e. descent on f with g negated) == torch's."""
    ours, theirs, _, _ = CASES[name]
    neg = Quadratic(0)
    neg.a = [-a for a in neg.a]  # f -> -f, so maximising -f is minimising f
    ref, _ = run_class(lambda ps: theirs(ps, lr=1e-2, maximize=True), problem=neg, steps=30)
    got, _ = run_class(lambda ps: ours(ps, lr=1e-2, maximize=True), problem=neg, steps=30)
    assert_params_close(got, ref)


def test_pure_functions_do_not_mutate_their_inputs():
    """p, g and every state array are unchanged after an update (numpy and torch)."""
    for as_numpy in (False, True):
        for name, update in PURE.items():
            p = PROBLEM.p0[1].clone()
            p = p.numpy() if as_numpy else p
            g = PROBLEM.grad(1, p)
            kw = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
            _, state = update(p, g, None, **kw)
            _, state = update(p, g, state, **kw)  # second step: buffers exist
            before = [copy.deepcopy(x) for x in (p, g, *state)]
            update(p, g, state, **kw)
            for b, a in zip(before, (p, g, *state)):
                assert np.array_equal(np.asarray(b), np.asarray(a))


# ------------------------------------------------------------------ state dict, scheduler
ALL = {**{k: v[0] for k, v in CASES.items()}, "SignSGD": co.SignSGD, "Lion": co.Lion}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", list(ALL))
def test_state_dict_round_trip_continues_bit_identically(name, foreach):
    """Stop at step 30, load the state dict into a fresh optimizer: steps 31-60 are identical."""
    cls = ALL[name]
    kw = dict(lr=1e-2)
    kw.update(momentum=0.9) if name in ("SGD", "RMSprop", "SignSGD") else None
    kw.update(amsgrad=True) if name in ("Adam", "AdamW") else None
    kw.update(foreach=foreach) if name in ("SGD", "Adam", "AdamW") else None
    params = [torch.nn.Parameter(p.clone()) for p in PROBLEM.p0]
    opt = cls(params, **kw)

    def steps(opt, params, n):
        for _ in range(n):
            for i, p in enumerate(params):
                p.grad = PROBLEM.grad(i, p.detach())
            opt.step()

    steps(opt, params, 30)
    saved_state = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    steps(opt, params, 30)
    params2 = [torch.nn.Parameter(p) for p in saved_params]
    opt2 = cls(params2, **kw)
    opt2.load_state_dict(saved_state)
    steps(opt2, params2, 30)
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_loads_torch_adam_state_dict():
    """Same state-dict keys as torch: torch's Adam stopped at 30 steps resumes in ours."""
    params = [torch.nn.Parameter(p.clone()) for p in PROBLEM.p0]
    opt = torch.optim.Adam(params, lr=1e-2, amsgrad=True)
    for _ in range(30):
        for i, p in enumerate(params):
            p.grad = PROBLEM.grad(i, p.detach())
        opt.step()
    ours = co.Adam(params2 := [torch.nn.Parameter(p.detach().clone()) for p in params],
                   lr=1e-2, amsgrad=True)
    ours.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(30):
        for ps, o in ((params, opt), (params2, ours)):
            for i, p in enumerate(ps):
                p.grad = PROBLEM.grad(i, p.detach())
            o.step()
    assert_params_close(params2, params)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + 0.1 * e)),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50),
}


@pytest.mark.parametrize("sched", list(SCHEDULERS))
@pytest.mark.parametrize("name", list(CASES))
def test_works_with_lr_schedulers(name, sched):
    """Same lrs, step by step, and same params as torch's optimizer under the same scheduler."""
    ours, theirs, _, _ = CASES[name]
    ref, ref_lrs = run_class(lambda ps: theirs(ps, lr=1e-2), make_sched=SCHEDULERS[sched])
    got, got_lrs = run_class(lambda ps: ours(ps, lr=1e-2), make_sched=SCHEDULERS[sched])
    assert got_lrs == ref_lrs and len(set(map(tuple, got_lrs))) > 1
    assert_params_close(got, ref)


def test_param_groups_with_their_own_hyperparameters():
    """Two groups with different lr / betas / amsgrad, as torch.optim.Adam runs them."""
    def groups(ps):
        return [dict(params=ps[:2], lr=3e-2, amsgrad=True), dict(params=ps[2:], betas=(0.5, 0.9))]
    ref, _ = run_class(lambda ps: torch.optim.Adam(groups(ps), lr=1e-2))
    for foreach in (False, True):
        got, _ = run_class(lambda ps: co.Adam(groups(ps), lr=1e-2, foreach=foreach))
        assert_params_close(got, ref)


def test_step_returns_the_closure_loss():
    """step(closure) evaluates the closure with grad enabled and returns its value."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = co.Adam([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 5.0 and torch.all(w.detach() < torch.tensor([1.0, 2.0]))


# ------------------------------------------------------------------------ closed forms
@given(g=st.floats(-1e3, 1e3).filter(lambda x: abs(x) > 1e-6), lr=lr,
       betas=st.tuples(beta1, beta2), eps=eps)
@SETTINGS
def test_adam_without_bias_correction_first_step_closed_form(g, lr, betas, eps):
    """From m = v = 0: p_1 - p_0 = -lr (1 - b1) g / (sqrt((1 - b2) g^2) + eps)."""
    b1, b2 = betas
    expected = -lr * (1 - b1) * g / (math.sqrt((1 - b2) * g * g) + eps)
    p, _ = co.adam_update(np.array([0.0]), np.array([g]), lr=lr, betas=betas, eps=eps,
                          bias_correction=False)
    np.testing.assert_allclose(p[0], expected, rtol=1e-12)
    w = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    w.grad = torch.tensor([g], dtype=torch.float64)
    co.Adam([w], lr=lr, betas=betas, eps=eps, bias_correction=False).step()
    np.testing.assert_allclose(w.item(), expected, rtol=1e-12)


@given(seed=st.integers(0, 10 ** 6), lr=lr, momentum=st.floats(0.0, 0.95))
@SETTINGS
def test_signsgd_moves_every_coordinate_by_lr_times_sign(seed, lr, momentum):
    """p_t - p_{t-1} = -lr sign(m_t), m_t = EMA of g (m_t = g without momentum), scale-free."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=5)
    m, state = np.zeros(5), None
    for _ in range(5):
        g = rng.normal(size=5) * 10.0 ** rng.integers(-6, 6, size=5)  # wildly different scales
        m = momentum * m + (1 - momentum) * g
        p_new, state = co.signsgd_update(p, g, state, lr=lr, momentum=momentum)
        np.testing.assert_array_equal(p_new, p - lr * np.sign(m if momentum > 0 else g))
        p = p_new
    w = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    w.grad = torch.as_tensor(g)
    co.SignSGD([w], lr=lr).step()
    torch.testing.assert_close(w.detach(), -lr * torch.sign(w.grad), rtol=0, atol=0)


@given(seed=st.integers(0, 10 ** 6), lr=lr)
@SETTINGS
def test_signsgd_is_the_rmsprop_limit_with_v_equal_g_squared(seed, lr):
    """RMSProp with alpha = 0 (v = g^2) and eps = 0 takes signSGD's step, up to rounding:
    g / sqrt(g^2) is +-1 to within an ulp, so p - lr * that is within a few ulps of
    |p| + lr (a relative test fails when p - lr cancels)."""
    rng = np.random.default_rng(seed)
    p, g = rng.normal(size=6), rng.normal(size=6) * 10.0 ** rng.integers(-5, 5, size=6)
    rms, _ = co.rmsprop_update(p, g, lr=lr, alpha=0.0, eps=0.0)
    sign, _ = co.signsgd_update(p, g, lr=lr)
    assert np.all(np.abs(rms - sign) <= 4 * np.finfo(float).eps * (np.abs(p) + lr))


def lion_paper(theta, grads, lr, beta1, beta2, wd):
    """Chen et al. (2023), Algorithm 2 (Lion), transcribed line by line."""
    m = torch.zeros_like(theta)
    for g in grads:
        c = beta1 * m + (1 - beta1) * g            # update = interp(g, m, beta1)
        update = torch.sign(c)                     # update = sign(update)
        theta = theta - lr * (update + wd * theta)  # theta <- theta - lr (update + lambda theta)
        m = beta2 * m + (1 - beta2) * g            # m = interp(g, m, beta2)
    return theta


@given(seed=st.integers(0, 10 ** 6), lr=lr, betas=st.tuples(beta1, beta1), wd=small)
@SETTINGS
def test_lion_matches_the_paper_algorithm(seed, lr, betas, wd):
    """companion Lion (class and pure function) == Algorithm 2; each step moves by lr (+ decay)."""
    gen = torch.Generator().manual_seed(seed)
    theta0 = torch.randn(7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(7, generator=gen, dtype=torch.float64) for _ in range(20)]
    expected = lion_paper(theta0, grads, lr, *betas, wd)
    w = torch.nn.Parameter(theta0.clone())
    opt = co.Lion([w], lr=lr, betas=betas, weight_decay=wd)
    p, state = theta0.clone(), None
    for g in grads:
        w.grad = g
        opt.step()
        p_new, state = co.lion_update(p, g, state, lr=lr, betas=betas, weight_decay=wd)
        step = (p_new - p * (1 - lr * wd)).abs()
        torch.testing.assert_close(step, torch.full_like(step, lr), rtol=1e-9, atol=1e-12)
        p = p_new
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=1e-12)


@given(xs=st.lists(st.floats(-10, 10), min_size=1, max_size=30), beta=st.floats(0.0, 0.99))
@SETTINGS
def test_ema_and_bias_correction(xs, beta):
    """ema from 0 == (1 - b) sum_k b^(t-k) x_k; bias_corrected of a constant input == it."""
    avg = 0.0
    for x in xs:
        avg = co.ema(avg, x, beta)
    t = len(xs)
    closed = (1 - beta) * sum(beta ** (t - k) * x for k, x in enumerate(xs, start=1))
    assert math.isclose(avg, closed, rel_tol=1e-9, abs_tol=1e-9)
    const = 0.0
    for _ in range(t):
        const = co.ema(const, 3.0, beta)
    assert math.isclose(co.bias_corrected(const, beta, t), 3.0, rel_tol=1e-12)


def test_decoupled_weight_decay_is_adamw_minus_adam():
    """AdamW's step == Adam's step (no decay) applied to (1 - lr wd) p."""
    p, g = PROBLEM.p0[1], PROBLEM.grad(1, PROBLEM.p0[1])
    pw, _ = co.adamw_update(p, g, lr=0.1, weight_decay=0.5)
    pa, _ = co.adam_update(p * (1 - 0.1 * 0.5), g, lr=0.1)
    assert torch.equal(pw, pa)
    assert torch.equal(co.decoupled_weight_decay(p, lr=0.1, weight_decay=0.5), p * 0.95)


# ----------------------------------------------------------------------------- errors
P = [torch.nn.Parameter(torch.zeros(2))]
BAD = [
    (co.SGD, dict(lr=-0.1), "lr must be a finite number >= 0, got -0.1"),
    (co.Adam, dict(lr=-0.1), "lr must be a finite number >= 0, got -0.1"),
    (co.Adam, dict(betas=(1.0, 0.999)), r"betas\[0\] must be a finite number in \[0, 1\), got 1.0"),
    (co.AdamW, dict(betas=(0.9, -0.1)),
     r"betas\[1\] must be a finite number in \[0, 1\), got -0.1"),
    (co.NAdam, dict(betas=(0.9, 1.0)), r"betas\[1\] must be a finite number in \[0, 1\), got 1.0"),
    (co.Lion, dict(betas=(1.5, 0.99)), r"betas\[0\] must be a finite number in \[0, 1\), got 1.5"),
    (co.RMSprop, dict(alpha=1.0), r"alpha must be a finite number in \[0, 1\), got 1.0"),
    (co.RMSprop, dict(alpha=-0.5), r"alpha must be a finite number in \[0, 1\), got -0.5"),
    (co.Adam, dict(eps=-1e-8), "eps must be a finite number >= 0, got -1e-08"),
    (co.Adagrad, dict(eps=-1.0), "eps must be a finite number >= 0, got -1.0"),
    (co.SGD, dict(momentum=-0.9), "momentum must be a finite number >= 0, got -0.9"),
    (co.RMSprop, dict(momentum=-0.1), "momentum must be a finite number >= 0, got -0.1"),
    (co.SignSGD, dict(momentum=-0.1), r"momentum must be a finite number in \[0, 1\), got -0.1"),
    (co.SignSGD, dict(momentum=1.0), r"momentum must be a finite number in \[0, 1\), got 1.0"),
    (co.SGD, dict(weight_decay=-1e-4), "weight_decay must be a finite number >= 0, got -0.0001"),
    (co.AdamW, dict(weight_decay=-0.01), "weight_decay must be a finite number >= 0, got -0.01"),
    (co.Adagrad, dict(lr_decay=-1.0), "lr_decay must be a finite number >= 0, got -1.0"),
    (co.Adagrad, dict(initial_accumulator_value=-1.0),
     "initial_accumulator_value must be a finite number >= 0, got -1.0"),
    (co.NAdam, dict(momentum_decay=-1.0), "momentum_decay must be a finite number >= 0, got -1.0"),
    (co.SGD, dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (co.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1),
     "Nesterov momentum requires a momentum and zero dampening.*dampening=0.1"),
    (co.Adam, dict(lr=float("nan")), "lr must be a finite number >= 0, got nan"),
]


@pytest.mark.parametrize("cls, kwargs, match", BAD)
def test_invalid_hyperparameters_raise_value_error(cls, kwargs, match):
    """Each bad value is rejected at construction, naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        cls(P, **kwargs)


@pytest.mark.parametrize("cls, kwargs, match", [
    (co.Adam, dict(lr="0.1"), "lr must be a real number"),
    (co.Adam, dict(betas=0.9), "betas must be a pair"),
    (co.Adam, dict(amsgrad=1), "amsgrad must be True or False"),
    (co.SGD, dict(foreach="yes"), "foreach must be None, True or False"),
])
def test_invalid_types_raise_type_error(cls, kwargs, match):
    with pytest.raises(TypeError, match=match):
        cls(P, **kwargs)


def test_pure_functions_validate_too():
    """The same checks guard the pure functions, and a scheduler-set bad lr at step time."""
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        co.adam_update(np.zeros(2), np.ones(2), lr=-1.0)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        co.lion_update(np.zeros(2), np.ones(2), betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="t must be an int >= 1"):
        co.bias_corrected(np.ones(2), 0.9, 0)
    opt = co.Adam([w := torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    w.grad = torch.ones(2)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        opt.step()


def test_lr_zero_is_allowed_and_does_not_move():
    """torch allows lr = 0; so do we, and nothing moves."""
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    co.Adam([w], lr=0).step()
    assert torch.equal(w.detach(), torch.ones(3))


# ------------------------------------------------------- bad input (issue 12), specific
def test_pure_updates_refuse_broadcasting_and_mixed_kinds():
    """g of another shape than p used to broadcast ((3, 1) - (3,) -> (3, 3)); now refused."""
    with pytest.raises(ValueError, match=r"g must have the shape of p, \(3, 1\), got \(3,\)"):
        co.sgd_update(np.ones((3, 1)), np.ones(3), lr=0.1)
    with pytest.raises(TypeError, match="g must be a numpy array like p"):
        co.adam_update(np.ones(3), torch.ones(3))
    _, state = co.adam_update(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"state.m must have the shape of p, \(2,\)"):
        co.adam_update(np.ones(2), np.ones(2), state)


def test_a_forgotten_unpack_is_named():
    """state = adam_update(...) is a (p, state) pair: the message says how to unpack it."""
    p, g = np.ones(2), np.ones(2)
    pair = co.adam_update(p, g, lr=0.1)
    with pytest.raises(TypeError, match=r"state must be None or the AdamState.*"
                                        r"p, state = adam_update\(p, g, state, \.\.\.\)"):
        co.adam_update(p, g, pair, lr=0.1)
    with pytest.raises(TypeError, match="state must be None or the SGDState"):
        co.sgd_update(p, g, co.adam_init(p))


def test_every_hyperparameter_is_checked_before_any_work():
    """adamw_update used to decay the weights first: lr="0.1" ended in numpy's message."""
    with pytest.raises(TypeError, match="lr must be a real number, got '0.1'"):
        co.adamw_update(np.ones(2), np.ones(2), lr="0.1")
    with pytest.raises(ValueError, match=r"state.v_max is None but amsgrad=True needs it"):
        co.adam_update(np.ones(2), np.ones(2), co.adam_init(np.ones(2)), amsgrad=True)
    with pytest.raises(ValueError, match=r"state.b is None but momentum > 0 needs it"):
        co.rmsprop_update(np.ones(2), np.ones(2), co.rmsprop_init(np.ones(2)), momentum=0.9)


def test_building_blocks_check_their_coefficients():
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, 1\), got 1.5"):
        co.ema(0.0, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, 1\), got 1.0"):
        co.bias_corrected(0.3, 1.0, 3)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.1"):
        co.decoupled_weight_decay(np.ones(2), lr=-0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"x must have the shape of prev"):
        co.ema(np.zeros((3, 1)), np.ones(3), 0.9)
    assert co.ema(0.0, 2.0, 0.0) == 2.0


def test_ema_refuses_beta_one():
    """beta = 1 froze the average at prev (0 from the usual start) and returned it
    silently; bias_corrected, its companion, divides by 1 - beta**t. Closed form on
    either side: beta just below 1 still moves by (1 - beta) x."""
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, 1\), got 1.0"):
        co.ema(0.0, 1.0, 1.0)
    beta = np.nextafter(1.0, 0.0)
    assert co.ema(0.0, 1.0, beta) == (1 - beta) * 1.0


def test_decoupled_decay_refuses_a_sign_flip():
    """lr * weight_decay > 1 multiplied the weights by a negative factor (1000 * 0.1: by
    -99); refused by name in the building block, the pure functions and the classes
    whose decay is decoupled. At lr * weight_decay = 1 the weights go to 0, the closed
    form's limit, and the classes still match torch.optim.AdamW there."""
    with pytest.raises(ValueError, match=r"lr \* weight_decay must be <= 1 .* got lr=0.1, "
                                         r"weight_decay=1000 \(product 100\)"):
        co.decoupled_weight_decay(np.ones(2), lr=0.1, weight_decay=1000)
    np.testing.assert_array_equal(
        co.decoupled_weight_decay(np.array([3.0, -1.0]), lr=0.5, weight_decay=2.0), [0.0, -0.0])
    for update in (co.adamw_update, co.lion_update):
        with pytest.raises(ValueError, match=r"lr \* weight_decay must be <= 1"):
            update(np.ones(2), np.ones(2), lr=0.5, weight_decay=3.0)
    with pytest.raises(ValueError, match=r"lr \* weight_decay must be <= 1"):
        co.nadam_update(np.ones(2), np.ones(2), lr=0.5, weight_decay=3.0,
                        decoupled_weight_decay=True)
    co.nadam_update(np.ones(2), np.ones(2), lr=0.5, weight_decay=3.0)   # L2: not a factor
    w = torch.nn.Parameter(torch.ones(2))
    for cls in (co.AdamW, co.Lion):
        with pytest.raises(ValueError, match=r"lr \* weight_decay must be <= 1"):
            cls([w], lr=0.5, weight_decay=3.0)
        opt = cls([w], lr=0.1)
        with pytest.raises(ValueError, match=r"param_group: lr \* weight_decay must be <= 1"):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))],
                                 "weight_decay": 11.0})
    with pytest.raises(ValueError, match=r"lr \* weight_decay must be <= 1"):
        co.NAdam([w], lr=0.5, weight_decay=3.0, decoupled_weight_decay=True)
    ours, theirs = (torch.nn.Parameter(torch.tensor([1.0, -2.0])) for _ in range(2))
    for p in (ours, theirs):
        p.grad = torch.tensor([0.5, 0.5])
    co.AdamW([ours], lr=0.5, weight_decay=2.0).step()
    torch.optim.AdamW([theirs], lr=0.5, weight_decay=2.0).step()
    torch.testing.assert_close(ours.data, theirs.data)


def _duplicate_step_in_torch():
    """What torch.optim.SGD does with a parameter listed twice: it warns, then steps it
    twice (the reason the companion refuses it)."""
    w = torch.nn.Parameter(torch.ones(1))
    w.grad = torch.ones(1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        torch.optim.SGD([w, w], lr=0.1).step()
    return float(w.detach())


@pytest.mark.parametrize("cls", [co.SGD, co.Adam, co.AdamW, co.Lion])
def test_a_parameter_listed_twice_is_refused_by_position(cls):
    """torch.optim steps a repeated parameter once per occurrence (0.8 instead of 0.9
    for SGD at lr 0.1: checked against torch here) and raises for a parameter in two
    groups; the companion refuses both, naming the positions."""
    assert _duplicate_step_in_torch() == pytest.approx(0.8)
    w, v = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"params must list each parameter once, got the "
                                         r"same tensor at positions 0 and 2 of param group 0"):
        cls([w, v, w])
    with pytest.raises(ValueError, match=r"params must list each parameter once.*positions 0 "
                                         r"and 1 of param group 1"):
        cls([{"params": [v]}, {"params": iter([w, w])}])
    with pytest.raises(ValueError, match=r"params must not repeat a parameter of another "
                                         r"group, got the tensor at position 1 of param group "
                                         r"1, which is already in param group 0"):
        cls([{"params": [w]}, {"params": [v, w]}])
    opt = cls([w])
    with pytest.raises(ValueError, match=r"param_group\['params'\] must not repeat"):
        opt.add_param_group({"params": w})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("foreach", [np.True_, np.False_])
def test_foreach_takes_numpy_bools_as_torch_does(foreach):
    """torch.optim.SGD and torch.nn.utils.clip_grad_norm_ both take np.True_ (they read
    its truth); the classes and the clipping functions read it as the bool it is, and
    step as torch does."""
    ours, theirs = (torch.nn.Parameter(torch.tensor([1.0, -2.0])) for _ in range(2))
    for p in (ours, theirs):
        p.grad = torch.tensor([0.5, 0.25])
    opt = co.Adam([ours], lr=0.1, foreach=foreach)
    assert opt.param_groups[0]["foreach"] is bool(foreach)
    opt.step()
    torch.optim.Adam([theirs], lr=0.1, foreach=foreach).step()
    torch.testing.assert_close(ours.data, theirs.data)
    with pytest.raises(TypeError, match="foreach must be None, True or False, got 1"):
        co.Adam([ours], foreach=1)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
def test_nan_gradients_are_not_refused(name):
    """A diverging run's NaN gradients are stepped with, by the pure function and the class."""
    p, g = np.ones(2), np.array([np.nan, 1.0])
    new, _ = PURE[name](p, g)
    assert np.isnan(new[0]) and np.isfinite(new[1])
    w = torch.nn.Parameter(torch.ones(2))
    w.grad = torch.tensor([float("nan"), 1.0])
    CASES[name][0]([w], lr=0.1).step()
    assert torch.isnan(w[0]) and torch.isfinite(w[1])


@pytest.mark.parametrize("cls", [co.Adagrad, co.RMSprop, co.Adam, co.AdamW, co.NAdam,
                                 co.SignSGD, co.Lion])
def test_complex_parameters_are_refused_except_by_sgd(cls):
    """torch.optim views complex parameters as real pairs; these classes do not, so they
    refuse them at construction (and in add_param_group) instead of silently differing."""
    c = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
    with pytest.raises(TypeError, match=f"params must be real tensors: {cls.__name__} does "
                                        f"not support complex parameters"):
        cls([c])
    opt = cls([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(TypeError, match=r"param_group\['params'\] must be real tensors"):
        opt.add_param_group({"params": [c]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("update", [co.adagrad_update, co.rmsprop_update, co.adam_update,
                                    co.adamw_update, co.nadam_update, co.signsgd_update,
                                    co.lion_update])
def test_pure_updates_refuse_complex(update):
    with pytest.raises(TypeError, match="p must be real"):
        update(np.ones(2, dtype=complex), np.ones(2, dtype=complex))
    with pytest.raises(TypeError, match="g must be real like p"):
        update(torch.ones(2), torch.ones(2, dtype=torch.complex64))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_on_complex_parameters_matches_torch_optim(foreach, momentum, nesterov):
    """SGD is linear in g, so complex parameters need no real view: == torch.optim.SGD,
    for the class (both paths) and the pure function."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, dtype=torch.complex128, generator=gen)
    c = torch.randn(4, dtype=torch.complex128, generator=gen)
    hyper = dict(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    ours, ref = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    opts = [co.SGD([ours], **hyper, foreach=foreach), torch.optim.SGD([ref], **hyper)]
    p, state = p0.clone(), None
    for _ in range(30):
        for w, opt in zip((ours, ref), opts):
            opt.zero_grad()
            ((w - c).abs() ** 2).sum().backward()
            opt.step()
        p, state = co.sgd_update(p, 2 * (p - c), state, **hyper)  # torch's grad of abs^2
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p, ref.detach(), rtol=1e-12, atol=1e-12)


def test_unchecked_cores_take_the_public_hyperparameters():
    """surfaces.run and the classes call the cores with the public functions' keyword
    defaults merged with the user's: the names must agree exactly."""
    import inspect

    from companion.optim._functional import UNCHECKED
    assert set(UNCHECKED) == {getattr(co, n) for n in co.__all__ if n.endswith("_update")}
    for public, core in UNCHECKED.items():
        kw = [n for n, q in inspect.signature(core).parameters.items()
              if q.kind is q.KEYWORD_ONLY]
        assert kw == list(public.__kwdefaults__), public.__name__
    for cls in (co.SGD, co.Adagrad, co.RMSprop, co.Adam, co.AdamW, co.SignSGD, co.NAdam,
                co.Lion):
        assert set(cls._hyper) == set(inspect.signature(cls._update).parameters) - {"p", "g",
                                                                                     "state"}


def test_step_load_and_add_group_check_their_arguments():
    w = torch.nn.Parameter(torch.ones(2))
    w.grad = torch.ones(2)
    opt = co.Adam([w], lr=0.1)
    with pytest.raises(TypeError, match="closure must be None or a callable"):
        opt.step(3)
    with pytest.raises(ValueError, match=r"param_group: lr must be a finite number >= 0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "lr": -1.0})
    assert len(opt.param_groups) == 1        # the bad group did not enter
    other = co.Adam([v := torch.nn.Parameter(torch.ones(3))], lr=0.1)
    v.grad = torch.ones(3)
    other.step()
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\]\['exp_avg'\] has shape "
                                         r"\(3,\), its parameter \(2,\)"):
        opt.load_state_dict(other.state_dict())
    assert not opt.state                     # nothing was loaded
