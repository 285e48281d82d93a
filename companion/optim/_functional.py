"""Optimizers as pure update functions over numpy arrays or torch tensors.

Calling convention (every optimizer ``name`` follows it, so
:func:`companion.surfaces.run` and the classes in :mod:`companion.optim` can take any of them)::

    state = name_init(p, **init_flags)                    # a NamedTuple of arrays and ints
    p_new, state = name_update(p, g, state, **hyper)      # new arrays; inputs are not mutated

``state=None`` means ``name_init(p)`` with the flags found in ``hyper`` (``amsgrad``,
``momentum``, ``centered``); pass an explicit state for anything else (Adagrad's
``initial_accumulator_value``). Every call checks its arguments first: ``p`` and ``g`` are
floating arrays of one kind (numpy or torch) and the same shape (no broadcasting), ``state``
is None or the function's own State NamedTuple with arrays of p's shape, and each
hyperparameter has torch.optim's name, default and range (``TypeError``/``ValueError``
naming the argument and its value). NaN in ``p`` or ``g`` is *not* refused: diverging runs
are part of the book. Complex parameters are refused, except by SGD (whose update is
linear in g, so torch.optim's and ours agree on complex tensors).

**Raises** (the reference for every ``name_update`` below, whose own ``Raises:`` lists only
what it adds):

* ``TypeError``: ``p`` or ``g`` not a real floating numpy array / torch tensor (complex
  refused, except by SGD), numpy mixed with torch, a ``state`` that is not None or the
  function's own State (e.g. the ``(p, state)`` pair itself), a hyperparameter of the wrong
  type (a str, a bool for a number, a non-bool flag);
* ``ValueError``: ``g`` or the state's arrays of another shape than ``p``, a hyperparameter
  out of range (see :func:`~companion.optim._helpers.check_hyper`) or not finite.

Each ``name_update`` is a check followed by an unchecked core ``_name(p, g, state, **hyper)``
(all hyperparameters keyword-only, no defaults): the classes of :mod:`companion.optim` and
:func:`companion.surfaces.run` check once and then call the core (:data:`UNCHECKED`).

Torch conventions kept on purpose (each differs from some papers): eps is added *outside*
the square root; SGD's momentum is ``v = mu v + (1 - dampening) g; p -= lr v`` with
``v_1 = g``; ``weight_decay`` of SGD/Adagrad/RMSprop/Adam is an L2 term added to ``g``,
while AdamW and Lion decay the weights directly (Loshchilov & Hutter, 2019).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np  # noqa: F401  (doctests)

from ._helpers import Array, _bias_corrected as bias_corrected
from ._helpers import _decoupled_weight_decay as decoupled_weight_decay
from ._helpers import _ema as ema
from ._helpers import (check_beta, check_decay, check_field, check_hyper, check_param,
                       check_param_grad, check_state, xp)

_decay = decoupled_weight_decay  # NAdam's flag of the same name shadows it there

__all__ = [
    "SGDState", "sgd_init", "sgd_update",
    "AdagradState", "adagrad_init", "adagrad_update",
    "RMSpropState", "rmsprop_init", "rmsprop_update",
    "AdamState", "adam_init", "adam_update", "adamw_init", "adamw_update",
    "SignSGDState", "signsgd_init", "signsgd_update",
    "NAdamState", "nadam_init", "nadam_update",
    "LionState", "lion_init", "lion_update",
]



def _grad(p: Array, g: Array, weight_decay: float, maximize: bool) -> Array:
    """The gradient an L2-regularised (and possibly maximising) step uses: ``±g + λp``."""
    g = -g if maximize else g
    return g + weight_decay * p if weight_decay != 0 else g


# ------------------------------------------------------------------------------ SGD
class SGDState(NamedTuple):
    v: Optional[Array] = None  #: momentum buffer; None before the first step / without momentum


def sgd_init(p: Array) -> SGDState:
    """Empty SGD state: the first step sets ``v = g`` (torch's convention).

    Raises:
        TypeError: ``p`` not a floating (or complex) numpy array / torch tensor.
    """
    check_param(p, "sgd_init", complex_ok=True)
    return SGDState()


def sgd_update(p: Array, g: Array, state: Optional[SGDState] = None, *, lr: float = 1e-3,
               momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
               nesterov: bool = False, maximize: bool = False) -> tuple[Array, SGDState]:
    r"""One step of SGD with (heavy-ball or Nesterov) momentum, torch's form.

    .. math::
        v_t = \mu v_{t-1} + (1 - \tau) g_t \ (v_1 = g_1), \qquad
        p_t = p_{t-1} - \eta\,(g_t + \mu v_t \text{ if nesterov else } v_t)

    Sutskever et al. (2013) write ``v = mu v - lr g; p += v``; the two agree for a constant lr.
    Complex ``p`` (and ``g``) are supported, as by torch.optim.SGD.

    >>> p, s = sgd_update(np.array([1.0]), np.array([2.0]), lr=0.1, momentum=0.9)
    >>> p, s.v
    (array([0.8]), array([2.]))

    Raises:
        As every update (the module's docstring; complex ``p`` allowed here, but not a
        complex ``g`` for a real ``p``), plus
        ValueError: nesterov=True without momentum or with dampening.
    """
    check_param_grad(p, g, "sgd_update", complex_ok=True)
    check_state(state, SGDState, p, "sgd_update")
    check_hyper(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov, maximize=maximize)
    return _sgd(p, g, state, lr=lr, momentum=momentum, dampening=dampening,
                weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)


def _sgd(p, g, state, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    state = SGDState() if state is None else state
    g = _grad(p, g, weight_decay, maximize)
    if momentum == 0:
        return p - lr * g, state
    v = g if state.v is None else momentum * state.v + (1 - dampening) * g
    step = g + momentum * v if nesterov else v
    return p - lr * step, SGDState(v)


# -------------------------------------------------------------------------- Adagrad
class AdagradState(NamedTuple):
    step: int
    G: Array  #: running sum of squared gradients (torch: ``state["sum"]``)


def adagrad_init(p: Array, *, initial_accumulator_value: float = 0.0) -> AdagradState:
    """Adagrad's state: step 0 and ``G = initial_accumulator_value`` everywhere.

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused),
            a non-real ``initial_accumulator_value``.
        ValueError: ``initial_accumulator_value`` negative or not finite.
    """
    check_param(p, "adagrad_init")
    check_hyper(initial_accumulator_value=initial_accumulator_value)
    return _adagrad_init(p, initial_accumulator_value)


def _adagrad_init(p, initial_accumulator_value=0.0):
    return AdagradState(0, xp(p).zeros_like(p) + initial_accumulator_value)


def adagrad_update(p: Array, g: Array, state: Optional[AdagradState] = None, *,
                   lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                   eps: float = 1e-10, maximize: bool = False) -> tuple[Array, AdagradState]:
    r"""One step of Adagrad (Duchi, Hazan & Singer, 2011), torch's form.

    .. math::
        G_t = G_{t-1} + g_t^2, \qquad
        p_t = p_{t-1} - \frac{\eta}{1 + (t-1)\,\text{lr\_decay}}\,\frac{g_t}{\sqrt{G_t} + \epsilon}

    Raises:
        As every update (the module's docstring).
    """
    check_param_grad(p, g, "adagrad_update")
    check_state(state, AdagradState, p, "adagrad_update")
    check_hyper(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    return _adagrad(p, g, state, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                    maximize=maximize)


def _adagrad(p, g, state, *, lr, lr_decay, weight_decay, eps, maximize):
    state = _adagrad_init(p) if state is None else state
    g, t = _grad(p, g, weight_decay, maximize), state.step + 1
    G = state.G + g * g
    lr_t = lr / (1 + (t - 1) * lr_decay)
    return p - lr_t * g / (xp(p).sqrt(G) + eps), AdagradState(t, G)


# -------------------------------------------------------------------------- RMSprop
class RMSpropState(NamedTuple):
    step: int
    v: Array                        #: EMA of g^2 (torch: ``square_avg``)
    g_avg: Optional[Array] = None   #: EMA of g, only when centered (``grad_avg``)
    b: Optional[Array] = None       #: momentum buffer, only when momentum > 0 (``momentum_buffer``)


def rmsprop_init(p: Array, *, momentum: float = 0.0, centered: bool = False) -> RMSpropState:
    """RMSprop's state: zeros, with ``g_avg`` if ``centered`` and ``b`` if ``momentum > 0``.

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused),
            a non-real ``momentum``, a non-bool ``centered``.
        ValueError: ``momentum`` negative or not finite.
    """
    check_param(p, "rmsprop_init")
    check_hyper(momentum=momentum, centered=centered)
    return _rmsprop_init(p, momentum, centered)


def _rmsprop_init(p, momentum=0.0, centered=False):
    zeros = xp(p).zeros_like
    return RMSpropState(0, zeros(p), zeros(p) if centered else None,
                        zeros(p) if momentum > 0 else None)


def rmsprop_update(p: Array, g: Array, state: Optional[RMSpropState] = None, *,
                   lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                   maximize: bool = False) -> tuple[Array, RMSpropState]:
    r"""One step of RMSProp (Hinton, lecture 6e, 2012), torch's form.

    .. math::
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
        d_t = \sqrt{v_t - \bar g_t^2 \text{ (centered)}} + \epsilon, \quad
        b_t = \mu b_{t-1} + g_t / d_t, \quad p_t = p_{t-1} - \eta\, b_t

    with :math:`\bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t`; without momentum
    :math:`p_t = p_{t-1} - \eta\, g_t / d_t`.

    Raises:
        As every update (the module's docstring), plus
        ValueError: a state without ``g_avg`` (``b``) for centered=True (momentum > 0).
    """
    check_param_grad(p, g, "rmsprop_update")
    check_state(state, RMSpropState, p, "rmsprop_update")
    check_hyper(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                centered=centered, maximize=maximize)
    if centered:
        check_field(state, "g_avg", "centered=True")
    if momentum > 0:
        check_field(state, "b", "momentum > 0")
    return _rmsprop(p, g, state, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                    momentum=momentum, centered=centered, maximize=maximize)


def _rmsprop(p, g, state, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    state = _rmsprop_init(p, momentum, centered) if state is None else state
    g, t, sqrt = _grad(p, g, weight_decay, maximize), state.step + 1, xp(p).sqrt
    v = ema(state.v, g * g, alpha)
    g_avg = ema(state.g_avg, g, alpha) if centered else state.g_avg
    denom = sqrt(v - g_avg * g_avg if centered else v) + eps
    if momentum > 0:
        b = momentum * state.b + g / denom
        return p - lr * b, RMSpropState(t, v, g_avg, b)
    return p - lr * g / denom, RMSpropState(t, v, g_avg, state.b)


# ----------------------------------------------------------------------- Adam, AdamW
class AdamState(NamedTuple):
    step: int
    m: Array                       #: EMA of g (torch: ``exp_avg``)
    v: Array                       #: EMA of g^2 (``exp_avg_sq``)
    v_max: Optional[Array] = None  #: running max of v, only with amsgrad (``max_exp_avg_sq``)


def adam_init(p: Array, *, amsgrad: bool = False) -> AdamState:
    """Adam's (and AdamW's) state: step 0, zero ``m`` and ``v`` (and ``v_max`` with amsgrad).

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused),
            a non-bool ``amsgrad``.
    """
    check_param(p, "adam_init")
    check_hyper(amsgrad=amsgrad)
    return _adam_init(p, amsgrad)


def _adam_init(p, amsgrad=False):
    zeros = xp(p).zeros_like
    return AdamState(0, zeros(p), zeros(p), zeros(p) if amsgrad else None)


def adam_update(p: Array, g: Array, state: Optional[AdamState] = None, *, lr: float = 1e-3,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.0, amsgrad: bool = False, bias_correction: bool = True,
                maximize: bool = False) -> tuple[Array, AdamState]:
    r"""One step of Adam (Kingma & Ba, 2015); AMSGrad (Reddi et al., 2018) with ``amsgrad``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \quad
        p_t = p_{t-1} - \eta\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    AMSGrad uses :math:`\max(v_{\max}, v_t)` in place of :math:`v_t`.
    ``bias_correction=False`` uses ``m``, ``v`` directly (the chapter's demo of why the
    correction exists: early steps are then ~ ``(1-beta1)/sqrt(1-beta2)`` too large or small).

    >>> p, s = adam_update(np.array([1.0]), np.array([3.0]), lr=0.1)
    >>> np.round(p, 6), s.step           # first step: lr * sign(g) up to eps
    (array([0.9]), 1)

    Raises:
        As every update (the module's docstring), plus
        ValueError: a state without ``v_max`` for amsgrad=True.
    """
    check_param_grad(p, g, "adam_update")
    check_state(state, AdamState, p, "adam_update")
    check_hyper(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                bias_correction=bias_correction, maximize=maximize)
    if amsgrad:
        check_field(state, "v_max", "amsgrad=True")
    return _adam(p, g, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                 amsgrad=amsgrad, bias_correction=bias_correction, maximize=maximize)


def _adam(p, g, state, *, lr, betas, eps, weight_decay, amsgrad, bias_correction, maximize):
    (beta1, beta2), sqrt = betas, xp(p).sqrt
    state = _adam_init(p, amsgrad) if state is None else state
    g, t = _grad(p, g, weight_decay, maximize), state.step + 1
    m = ema(state.m, g, beta1)
    v = ema(state.v, g * g, beta2)
    v_max = xp(p).maximum(state.v_max, v) if amsgrad else state.v_max
    v_used = v_max if amsgrad else v
    m_hat = bias_corrected(m, beta1, t) if bias_correction else m
    v_hat = bias_corrected(v_used, beta2, t) if bias_correction else v_used
    return p - lr * m_hat / (sqrt(v_hat) + eps), AdamState(t, m, v, v_max)


adamw_init = adam_init


def adamw_update(p: Array, g: Array, state: Optional[AdamState] = None, *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> tuple[Array, AdamState]:
    r"""One step of AdamW (Loshchilov & Hutter, 2019) = decoupled weight decay, then Adam.

    .. math:: p' = (1 - \eta\lambda)\, p_{t-1}, \qquad p_t = \text{adam}(p', g_t)

    The decay does not pass through Adam's :math:`1/\sqrt{\hat v}` scaling, unlike
    ``adam_update(weight_decay=...)``.

    Raises:
        As :func:`adam_update`, plus
        ValueError: ``lr * weight_decay`` > 1 (see :func:`~companion.optim.decoupled_weight_decay`).
    """
    check_param_grad(p, g, "adamw_update")
    check_state(state, AdamState, p, "adamw_update")
    check_hyper(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                maximize=maximize)
    check_decay(lr, weight_decay)
    if amsgrad:
        check_field(state, "v_max", "amsgrad=True")
    return _adamw(p, g, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                  amsgrad=amsgrad, maximize=maximize)


def _adamw(p, g, state, *, lr, betas, eps, weight_decay, amsgrad, maximize):
    p = decoupled_weight_decay(p, lr=lr, weight_decay=weight_decay)
    return _adam(p, g, state, lr=lr, betas=betas, eps=eps, weight_decay=0.0, amsgrad=amsgrad,
                 bias_correction=True, maximize=maximize)


# -------------------------------------------------------------------------- SignSGD
class SignSGDState(NamedTuple):
    m: Optional[Array] = None  #: EMA of g, only when momentum > 0 (Signum)


def signsgd_init(p: Array, *, momentum: float = 0.0) -> SignSGDState:
    """signSGD's state: ``m = 0`` if ``momentum > 0`` (Signum), else empty.

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused),
            a non-real ``momentum``.
        ValueError: ``momentum`` outside [0, 1).
    """
    check_param(p, "signsgd_init")
    check_beta("momentum", momentum)
    return _signsgd_init(p, momentum)


def _signsgd_init(p, momentum=0.0):
    return SignSGDState(xp(p).zeros_like(p) if momentum > 0 else None)


def signsgd_update(p: Array, g: Array, state: Optional[SignSGDState] = None, *,
                   lr: float = 1e-3, momentum: float = 0.0) -> tuple[Array, SignSGDState]:
    r"""One step of signSGD / Signum (Bernstein et al., 2018).

    .. math:: p_t = p_{t-1} - \eta\,\mathrm{sign}(m_t)

    It is RMSProp's limit with no averaging of the square (alpha = 0, so ``v = g^2``) and
    eps = 0: :math:`g / \sqrt{v} = g / \sqrt{g^2} = g / |g| = \mathrm{sign}(g)`. Every
    coordinate moves by exactly ``lr``, whatever the scale of its gradient.
    With ``momentum`` (Signum), :math:`m_t = \beta m_{t-1} + (1-\beta) g_t`; any positive
    rescaling of m (e.g. torch's ``m = mu m + g``) gives the same sign, hence the same step.
    Coordinates with ``g = 0`` do not move (sign(0) = 0).

    Raises:
        As every update (the module's docstring), plus
        ValueError: ``momentum`` outside [0, 1), a state without ``m`` for momentum > 0.
    """
    check_param_grad(p, g, "signsgd_update")
    check_state(state, SignSGDState, p, "signsgd_update")
    check_hyper(lr=lr)
    check_beta("momentum", momentum)
    if momentum > 0:
        check_field(state, "m", "momentum > 0")
    return _signsgd(p, g, state, lr=lr, momentum=momentum)


def _signsgd(p, g, state, *, lr, momentum):
    state = _signsgd_init(p, momentum) if state is None else state
    m = ema(state.m, g, momentum) if momentum > 0 else g
    return p - lr * xp(p).sign(m), SignSGDState(m if momentum > 0 else None)


# ---------------------------------------------------------------------------- NAdam
class NAdamState(NamedTuple):
    step: int
    m: Array                 #: EMA of g (torch: ``exp_avg``)
    v: Array                 #: EMA of g^2 (``exp_avg_sq``)
    mu_product: float = 1.0  #: prod of mu_1..mu_t (``mu_product``)


def nadam_init(p: Array) -> NAdamState:
    """NAdam's state: step 0, zero ``m`` and ``v``, ``mu_product = 1``.

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused).
    """
    check_param(p, "nadam_init")
    return _nadam_init(p)


def _nadam_init(p):
    zeros = xp(p).zeros_like
    return NAdamState(0, zeros(p), zeros(p), 1.0)


def nadam_update(p: Array, g: Array, state: Optional[NAdamState] = None, *, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False,
                 maximize: bool = False) -> tuple[Array, NAdamState]:
    r"""One step of NAdam (Dozat, 2016) with torch's momentum schedule.

    .. math::
        \mu_t = \beta_1\,(1 - \tfrac12\, 0.96^{t\psi}), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        \hat v_t = \frac{\beta_2 v_{t-1} + (1-\beta_2) g_t^2}{1-\beta_2^t}, \\
        p_t = p_{t-1} - \eta\left(\frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\, g_t
              + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\, m_t\right)
              \Big/ (\sqrt{\hat v_t}+\epsilon)

    (:math:`\psi` = ``momentum_decay``): Nesterov's look-ahead applied to Adam's momentum.
    ``mu_product`` is kept as a Python float (torch keeps a float32 tensor).

    Raises:
        As every update (the module's docstring), plus
        ValueError: ``lr * weight_decay`` > 1 with ``decoupled_weight_decay=True``.
    """
    check_param_grad(p, g, "nadam_update")
    check_state(state, NAdamState, p, "nadam_update")
    check_hyper(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                maximize=maximize)
    if decoupled_weight_decay:
        check_decay(lr, weight_decay)
    return _nadam(p, g, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                  momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                  maximize=maximize)


def _nadam(p, g, state, *, lr, betas, eps, weight_decay, momentum_decay,
           decoupled_weight_decay, maximize):
    (beta1, beta2), sqrt = betas, xp(p).sqrt
    state = _nadam_init(p) if state is None else state
    if decoupled_weight_decay:
        p, weight_decay = _decay(p, lr=lr, weight_decay=weight_decay), 0.0
    g, t = _grad(p, g, weight_decay, maximize), state.step + 1
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = state.mu_product * mu
    m = ema(state.m, g, beta1)
    v = ema(state.v, g * g, beta2)
    denom = sqrt(bias_corrected(v, beta2, t)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
    p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    return p, NAdamState(t, m, v, mu_product)


# ----------------------------------------------------------------------------- Lion
class LionState(NamedTuple):
    m: Array  #: EMA of g with beta2 (torch-style key ``exp_avg``)


def lion_init(p: Array) -> LionState:
    """Lion's state: ``m = 0``.

    Raises:
        TypeError: ``p`` not a real floating numpy array / torch tensor (complex refused).
    """
    check_param(p, "lion_init")
    return _lion_init(p)


def _lion_init(p):
    return LionState(xp(p).zeros_like(p))


def lion_update(p: Array, g: Array, state: Optional[LionState] = None, *, lr: float = 1e-4,
                betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                maximize: bool = False) -> tuple[Array, LionState]:
    r"""One step of Lion (Chen et al., 2023, Algorithm 2) = decoupled decay + a sign step.

    .. math::
        c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        p_t = (1 - \eta\lambda)\, p_{t-1} - \eta\,\mathrm{sign}(c_t), \quad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Every coordinate moves by exactly ``lr`` (plus the decay), like :func:`signsgd_update`;
    the paper suggests an lr 3-10x smaller than AdamW's and a weight decay 3-10x larger.

    Raises:
        As every update (the module's docstring), plus
        ValueError: ``lr * weight_decay`` > 1 (Lion's decay is decoupled).
    """
    check_param_grad(p, g, "lion_update")
    check_state(state, LionState, p, "lion_update")
    check_hyper(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
    check_decay(lr, weight_decay)
    return _lion(p, g, state, lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)


def _lion(p, g, state, *, lr, betas, weight_decay, maximize):
    (beta1, beta2) = betas
    state = _lion_init(p) if state is None else state
    g = -g if maximize else g
    c = ema(state.m, g, beta1)
    p = decoupled_weight_decay(p, lr=lr, weight_decay=weight_decay) - lr * xp(p).sign(c)
    return p, LionState(ema(state.m, g, beta2))


#: public update -> its unchecked core, same keyword-only hyperparameters without defaults
#: (callers check once with the public function, then take ``{**public.__kwdefaults__,
#: **hyper}`` to the core).
UNCHECKED = {
    sgd_update: _sgd, adagrad_update: _adagrad, rmsprop_update: _rmsprop,
    adam_update: _adam, adamw_update: _adamw, signsgd_update: _signsgd,
    nadam_update: _nadam, lion_update: _lion,
}
