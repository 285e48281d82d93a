"""``torch.optim.Optimizer`` classes built on the pure update functions.

Swap ``torch.optim.Adam`` for ``companion.optim.Adam`` and back: same class names,
argument names, defaults and state-dict keys (``step``, ``exp_avg``, ``exp_avg_sq``, ...),
the learning rate is read from each param group on every step (so
``torch.optim.lr_scheduler`` works), and ``state_dict()`` / ``load_state_dict()`` resume a
run exactly.

Two paths per step:

* single-tensor (``foreach=False``): for each parameter, the pure function of
  :mod:`companion.optim._functional` is called on ``(p, p.grad, state)`` and its results
  are written back -- the book's equations, line by line;
* multi-tensor (``foreach=True``; SGD, Adam and AdamW): the same arithmetic as a few
  ``torch._foreach_*`` calls over all tensors, in place, as torch's own foreach path.

``foreach=None`` (the default) takes the multi-tensor path whenever the class has one, on
CPU as on CUDA: on the book's 2-core CPU, one Adam step over ResNet-50's parameters took
0.9x the time of ``torch.optim.Adam``'s default and 0.3x that of the single-tensor path
(tests/benchmarks/bench_optim.py). On CPU the "multi-tensor" calls take one tensor at a
time (see ``_foreach._groups``): CPU has no multi-tensor kernels, and small temporaries
stay in cache.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

from . import _foreach as fe
from . import _functional as F
from ._helpers import check_hyper

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "SignSGD", "NAdam", "Lion"]


def _scalar_dtype() -> torch.dtype:
    """torch's dtype for ``state["step"]``: float64 if that is the default dtype, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _PureOptimizer(torch.optim.Optimizer):
    """An Optimizer whose step is a pure ``update(p, g, state, **hyper)`` per parameter.

    Subclasses name the pure functions, the NamedTuple field -> torch state key map, the
    group keys passed to ``update`` (``_hyper``) and to ``init`` (``_init_hyper``), and
    optionally a multi-tensor ``_foreach_update``.
    """

    _update: Callable
    _init: Callable
    _State: type
    _fields: dict[str, str]
    _hyper: tuple[str, ...]
    _init_hyper: tuple[str, ...] = ()
    _foreach_update: Optional[Callable] = None

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        foreach = defaults.get("foreach")
        if foreach not in (None, True, False):
            raise TypeError(f"foreach must be None, True or False, got {foreach!r}")
        check_hyper(**{k: v for k, v in defaults.items() if k != "foreach"})
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's; then group keys the saved dict lacks (e.g. torch.optim's) get our defaults."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def _use_foreach(self, group: dict) -> bool:
        return type(self)._foreach_update is not None and group.get("foreach") is not False

    def _load(self, p: Tensor, group: dict):
        """The NamedTuple state of p: from ``self.state[p]``, or ``init(p)`` the first time."""
        st = self.state[p]
        if not st:
            return type(self)._init(p, **{k: group[k] for k in self._init_hyper})
        kw = {f: st[k] for f, k in self._fields.items() if k in st}
        if "step" in kw:
            kw["step"] = int(kw["step"])
        if "mu_product" in kw:
            kw["mu_product"] = float(kw["mu_product"])
        return self._State(**kw)

    def _store(self, p: Tensor, state) -> None:
        """Write the NamedTuple back in torch's format (step as a scalar tensor, like torch)."""
        st = self.state[p]
        for field, key in self._fields.items():
            value = getattr(state, field)
            if value is None:
                st.pop(key, None)
            elif field == "step":
                st[key] = torch.tensor(float(value), dtype=_scalar_dtype())
            else:
                st[key] = value

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One update of every parameter that has a ``.grad``; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            hyper = {k: group[k] for k in self._hyper}
            if self._use_foreach(group):
                check_hyper(**hyper)
                for p in params:
                    if not self.state[p]:
                        self._store(p, self._load(p, group))
                type(self)._foreach_update(params, [p.grad for p in params],
                                           [self.state[p] for p in params], **hyper)
                continue
            for p in params:
                p_new, state = type(self)._update(p, p.grad, self._load(p, group), **hyper)
                p.copy_(p_new)
                self._store(p, state)
        return loss


class SGD(_PureOptimizer):
    r"""SGD with momentum, as :class:`torch.optim.SGD` (:func:`~companion.optim.sgd_update`).

    :math:`v_t = \mu v_{t-1} + (1-\tau) g_t` (:math:`v_1 = g_1`),
    :math:`p_t = p_{t-1} - \eta v_t` (Nesterov: :math:`\eta (g_t + \mu v_t)`).

    >>> w = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> (w ** 2).sum().backward(); opt.step(); w.data
    tensor([0.8000])
    """

    _update, _init, _State = staticmethod(F.sgd_update), staticmethod(F.sgd_init), F.SGDState
    _fields = {"v": "momentum_buffer"}
    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _foreach_update = staticmethod(fe.sgd_foreach)

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: Optional[bool] = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach))


class Adagrad(_PureOptimizer):
    r"""Adagrad, as :class:`torch.optim.Adagrad` (:func:`~companion.optim.adagrad_update`).

    :math:`G_t = G_{t-1} + g_t^2`, :math:`p_t = p_{t-1} - \eta_t g_t / (\sqrt{G_t} + \epsilon)`.
    """

    _update, _init = staticmethod(F.adagrad_update), staticmethod(F.adagrad_init)
    _State = F.AdagradState
    _fields = {"step": "step", "G": "sum"}
    _hyper = ("lr", "lr_decay", "weight_decay", "eps", "maximize")
    _init_hyper = ("initial_accumulator_value",)

    def __init__(self, params: Iterable, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))


class RMSprop(_PureOptimizer):
    r"""RMSProp, as :class:`torch.optim.RMSprop` (:func:`~companion.optim.rmsprop_update`).

    :math:`v_t = \alpha v_{t-1} + (1-\alpha) g_t^2`,
    :math:`p_t = p_{t-1} - \eta\, g_t / (\sqrt{v_t} + \epsilon)` (plus centering / momentum).
    """

    _update, _init = staticmethod(F.rmsprop_update), staticmethod(F.rmsprop_init)
    _State = F.RMSpropState
    _fields = {"step": "step", "v": "square_avg", "g_avg": "grad_avg", "b": "momentum_buffer"}
    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    _init_hyper = ("momentum", "centered")

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))


class Adam(_PureOptimizer):
    r"""Adam, as :class:`torch.optim.Adam` (:func:`~companion.optim.adam_update`).

    :math:`\hat m_t = m_t / (1-\beta_1^t)`, :math:`\hat v_t = v_t / (1-\beta_2^t)`,
    :math:`p_t = p_{t-1} - \eta\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)`.
    ``bias_correction=False`` (not in torch) drops the two divisions, for the chapter's demo.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = Adam([w], lr=0.1)
    >>> (w ** 2).sum().backward(); opt.step(); w.data    # first step: lr * sign(g)
    tensor([ 0.9000, -1.9000])
    """

    _update, _init, _State = staticmethod(F.adam_update), staticmethod(F.adam_init), F.AdamState
    _fields = {"step": "step", "m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq"}
    _hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "bias_correction", "maximize")
    _init_hyper = ("amsgrad",)
    _foreach_update = staticmethod(fe.adam_foreach)

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, bias_correction: bool = True,
                 foreach: Optional[bool] = None, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, bias_correction=bias_correction,
                                      foreach=foreach, maximize=maximize))


class AdamW(_PureOptimizer):
    r"""AdamW, as :class:`torch.optim.AdamW` (:func:`~companion.optim.adamw_update`):
    :math:`p \leftarrow (1-\eta\lambda)\,p`, then an Adam step without weight decay."""

    _update, _init, _State = staticmethod(F.adamw_update), staticmethod(F.adam_init), F.AdamState
    _fields = Adam._fields
    _hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _init_hyper = ("amsgrad",)
    _foreach_update = staticmethod(fe.adamw_foreach)

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 foreach: Optional[bool] = None, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, foreach=foreach, maximize=maximize))


class SignSGD(_PureOptimizer):
    r"""signSGD / Signum (:func:`~companion.optim.signsgd_update`):
    :math:`p \leftarrow p - \eta\,\mathrm{sign}(m)`.

    RMSProp's limit with ``v = g^2``: :math:`g/\sqrt{g^2} = \mathrm{sign}(g)`. No torch
    counterpart; ``momentum`` in [0, 1) averages g before taking the sign.
    """

    _update, _init = staticmethod(F.signsgd_update), staticmethod(F.signsgd_init)
    _State = F.SignSGDState
    _fields = {"m": "exp_avg"}
    _hyper = ("lr", "momentum")
    _init_hyper = ("momentum",)

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0) -> None:
        if isinstance(momentum, (int, float)) and momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum))


class NAdam(_PureOptimizer):
    r"""NAdam, as :class:`torch.optim.NAdam` (:func:`~companion.optim.nadam_update`):
    Adam with Nesterov's look-ahead and torch's ``momentum_decay`` schedule of :math:`\mu_t`."""

    _update, _init, _State = staticmethod(F.nadam_update), staticmethod(F.nadam_init), F.NAdamState
    _fields = {"step": "step", "m": "exp_avg", "v": "exp_avg_sq", "mu_product": "mu_product"}
    _hyper = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
              "maximize")

    def __init__(self, params: Iterable, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))


class Lion(_PureOptimizer):
    r"""Lion (Chen et al., 2023; :func:`~companion.optim.lion_update`): decoupled decay, then
    :math:`p \leftarrow p - \eta\,\mathrm{sign}(\beta_1 m + (1-\beta_1) g)`.
    No torch counterpart."""

    _update, _init, _State = staticmethod(F.lion_update), staticmethod(F.lion_init), F.LionState
    _fields = {"m": "exp_avg"}
    _hyper = ("lr", "betas", "weight_decay", "maximize")

    def __init__(self, params: Iterable, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize))
