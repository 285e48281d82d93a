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

**Raises** (the reference for the classes below, whose ``Raises:`` list what they add):

* ``TypeError``: a hyperparameter of the wrong type (a str, a bool for a number, a non-bool
  flag), ``foreach`` not None, True or False (numpy's ``bool_`` is fine; torch.optim takes
  any value and reads its truth), a complex parameter (except by SGD: torch.optim views
  one as a pair of reals, these classes do not); torch's own for a ``params`` that is not
  an iterable of tensors or dicts;
* ``ValueError``: a hyperparameter out of torch.optim's range or not finite; the same
  parameter twice in ``params`` or in one group (torch.optim warns and steps it once per
  occurrence, a double step; in two groups torch raises too); torch's own for an empty
  ``params``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
from torch import Tensor

from .. import _check
from . import _foreach as fe
from . import _functional as F
from ._helpers import check_beta, check_decay, check_hyper

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "SignSGD", "NAdam", "Lion"]


def _scalar_dtype() -> torch.dtype:
    """torch's dtype for ``state["step"]``: float64 if that is the default dtype, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _PureOptimizer(torch.optim.Optimizer):
    """An Optimizer whose step is a pure ``update(p, g, state, **hyper)`` per parameter.

    Subclasses name the pure functions (``_update``: the unchecked core of the public
    ``*_update``, see :data:`~companion.optim._functional.UNCHECKED`; ``_init``: the public
    ``*_init``), the NamedTuple field -> torch state key map, the group keys passed to
    ``update`` (``_hyper``) and to ``init`` (``_init_hyper``), and optionally a multi-tensor
    ``_foreach_update``. Hyperparameters are checked at construction, for each added or
    loaded group, and once per group on every step; complex parameters are refused at
    construction (``_complex_ok`` only for SGD).
    """

    _update: Callable
    _init: Callable
    _State: type
    _fields: dict[str, str]
    _hyper: tuple[str, ...]
    _init_hyper: tuple[str, ...] = ()
    _foreach_update: Optional[Callable] = None
    _complex_ok: bool = False   #: only SGD (linear in g) agrees with torch.optim on complex
    #: whether ``weight_decay`` is decoupled, ``p *= 1 - lr * weight_decay`` (True: AdamW,
    #: Lion), or the name of the group flag that says so (NAdam)
    _decoupled: Union[bool, str] = False

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        if "foreach" in defaults:
            defaults["foreach"] = _check.optional_flag("foreach", defaults["foreach"])
        self._check_hyper({k: v for k, v in defaults.items() if k != "foreach"})
        self._constructing = True  # add_param_group's messages then name ``params``
        super().__init__(params, defaults)  # torch's own errors for a bad params
        self._constructing = False

    @classmethod
    def _check_hyper(cls, hyper: dict) -> None:
        """The hyperparameter checks (construction, each step, each loaded group)."""
        check_hyper(**hyper)
        decoupled = cls._decoupled
        if isinstance(decoupled, str):             # NAdam: the group's flag decides
            decoupled = hyper.get(decoupled)
        if decoupled and "lr" in hyper and "weight_decay" in hyper:
            check_decay(hyper["lr"], hyper["weight_decay"])

    def add_param_group(self, param_group: dict) -> None:
        """torch's, then the group's own hyperparameters are checked and complex parameters
        refused (except by SGD), so a bad group never enters.

        Raises:
            TypeError: ``param_group`` not a dict (torch's own errors for its
                ``params``), a complex parameter (this optimizer works on real
                parameters), a group hyperparameter of the wrong type.
            ValueError: a group hyperparameter out of range; a parameter that is already
                in this group or in another one.
        """
        _check.mapping("param_group", param_group, nonempty=False)
        constructing = getattr(self, "_constructing", False)
        where = "params" if constructing else "param_group['params']"
        self._check_no_duplicates(param_group, where)
        if "foreach" in param_group:
            param_group["foreach"] = _check.optional_flag("param_group['foreach']",
                                                          param_group["foreach"])
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if not self._complex_ok:
            for p in group["params"]:
                if p.is_complex():
                    self.param_groups.pop()
                    name = type(self).__name__
                    how = (f"torch.optim.{name} treats each entry as a pair of reals"
                           if hasattr(torch.optim, name) else "it is defined for reals")
                    raise TypeError(
                        f"{where} must be real tensors: {name} does not support complex "
                        f"parameters ({how}; keep the real and imaginary parts in a real "
                        f"tensor, as torch.view_as_real does), got {_check.show(p)}")
        try:
            self._check_hyper({k: group[k] for k in self._hyper if k in group})
        except (TypeError, ValueError) as exc:
            self.param_groups.pop()
            if constructing:
                raise
            raise type(exc)(f"param_group: {exc}") from None

    def _check_no_duplicates(self, param_group: dict, where: str) -> None:
        """Refuse a parameter listed twice, in this group or in an earlier one.

        torch.optim warns for a repeat within a group and then steps the parameter once per
        occurrence (twice the step, and Adam's ``step`` counts 2), and raises for a
        parameter in two groups; both are mistakes, refused here by position. ``params``
        is read into a list first (as torch does), so a generator is not consumed twice.
        """
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, Iterable) and not isinstance(params, (set, str, Mapping)):
            params = list(params)
        else:
            return                                 # torch's own error for a bad ``params``
        param_group["params"] = params
        k = len(self.param_groups)
        earlier = {id(q): j for j, group in enumerate(self.param_groups) for q in group["params"]}
        seen: dict[int, int] = {}                  # id -> position in this group
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                return                             # torch's own error for a non-tensor
            if id(p) in seen:
                raise ValueError(f"{where} must list each parameter once, got the same "
                                 f"tensor at positions {seen[id(p)]} and {i} of param group "
                                 f"{k} (torch.optim would step it once per occurrence)")
            if id(p) in earlier:
                raise ValueError(f"{where} must not repeat a parameter of another group, "
                                 f"got the tensor at position {i} of param group {k}, "
                                 f"which is already in param group {earlier[id(p)]}")
            seen[id(p)] = i

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, after checking that ``state_dict`` fits this optimizer (its groups, their
        sizes and hyperparameters, its buffers' shapes); then group keys the saved dict
        lacks (e.g. torch.optim's) get our defaults.

        Raises:
            TypeError: ``state_dict`` not a dict.
            ValueError: not an optimizer's ``state_dict()``, another number of groups or
                of parameters per group, a buffer whose shape is not its parameter's
                (a state dict of another model), a saved hyperparameter out of range.
        """
        _check.mapping("state_dict", state_dict, nonempty=False)
        groups, state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
            raise ValueError(f"state_dict must be an optimizer's state_dict(), a dict with a "
                             f"'state' dict and a 'param_groups' list, got keys "
                             f"{sorted(map(str, state_dict))}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, Mapping) or not isinstance(saved.get("params"),
                                                                  (list, tuple)):
                raise ValueError(f"state_dict['param_groups'][{i}] must be a dict with a "
                                 f"'params' list, got {_check.show(saved)}")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"state_dict['param_groups'][{i}] has "
                                 f"{len(saved['params'])} parameters, this optimizer's group "
                                 f"{len(group['params'])}")
            try:
                self._check_hyper({k: saved[k] for k in self._hyper if k in saved})
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"state_dict['param_groups'][{i}]: {exc}") from None
            for pid, p in zip(saved["params"], group["params"]):
                buffers = state.get(pid, {})
                for field, key in self._fields.items():
                    value = buffers.get(key) if isinstance(buffers, Mapping) else None
                    if field in ("step", "mu_product") or not isinstance(value, Tensor):
                        continue
                    if value.shape != p.shape:
                        raise ValueError(
                            f"state_dict['state'][{pid!r}][{key!r}] has shape "
                            f"{tuple(value.shape)}, its parameter {tuple(p.shape)} (a "
                            f"state_dict of another model?)")
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
        """One update of every parameter that has a ``.grad``; returns ``closure()`` if given.

        Each group's hyperparameters are checked once per step (a scheduler or a hand edit
        may have changed them), then the unchecked core of the pure function runs on
        each parameter (torch guarantees ``p.grad``'s shape and dtype).

        Raises:
            TypeError: a ``closure`` that is not callable (None: no closure), a group
                hyperparameter of the wrong type.
            ValueError: a group hyperparameter out of range.
            RuntimeError: sparse gradients.
        """
        if closure is not None:
            _check.function("closure", closure, "None or a callable closure() -> loss")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            hyper = {k: group[k] for k in self._hyper}
            self._check_hyper(hyper)
            if self._use_foreach(group):
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
    Complex parameters are supported (the update is linear in g: torch.optim.SGD's numbers).

    >>> w = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> (w ** 2).sum().backward(); opt.step(); w.data
    tensor([0.8000])

    Raises:
        As every class (the module's docstring; complex parameters are fine here), plus
        ValueError: nesterov=True without momentum or with dampening.
    """

    _update, _init, _State = staticmethod(F._sgd), staticmethod(F.sgd_init), F.SGDState
    _fields = {"v": "momentum_buffer"}
    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _foreach_update = staticmethod(fe.sgd_foreach)
    _complex_ok = True

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: Optional[bool] = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach))


class Adagrad(_PureOptimizer):
    r"""Adagrad, as :class:`torch.optim.Adagrad` (:func:`~companion.optim.adagrad_update`).

    :math:`G_t = G_{t-1} + g_t^2`, :math:`p_t = p_{t-1} - \eta_t g_t / (\sqrt{G_t} + \epsilon)`.

    Raises:
        As every class (the module's docstring).
    """

    _update, _init = staticmethod(F._adagrad), staticmethod(F.adagrad_init)
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

    Raises:
        As every class (the module's docstring): alpha must be in [0, 1).
    """

    _update, _init = staticmethod(F._rmsprop), staticmethod(F.rmsprop_init)
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

    Raises:
        As every class (the module's docstring): betas must be a pair in [0, 1).
    """

    _update, _init, _State = staticmethod(F._adam), staticmethod(F.adam_init), F.AdamState
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
    :math:`p \leftarrow (1-\eta\lambda)\,p`, then an Adam step without weight decay.

    Raises:
        As :class:`Adam`, plus
        ValueError: ``lr * weight_decay`` > 1, which would flip the weights' signs
            (torch.optim.AdamW does it silently; everywhere else this class matches it).
    """

    _update, _init, _State = staticmethod(F._adamw), staticmethod(F.adam_init), F.AdamState
    _fields = Adam._fields
    _hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _init_hyper = ("amsgrad",)
    _foreach_update = staticmethod(fe.adamw_foreach)
    _decoupled = True

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

    Raises:
        As every class (the module's docstring): ``momentum`` must be in [0, 1).
    """

    _update, _init = staticmethod(F._signsgd), staticmethod(F.signsgd_init)
    _State = F.SignSGDState
    _fields = {"m": "exp_avg"}
    _hyper = ("lr", "momentum")
    _init_hyper = ("momentum",)

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @classmethod
    def _check_hyper(cls, hyper: dict) -> None:
        check_hyper(**{k: v for k, v in hyper.items() if k != "momentum"})
        if "momentum" in hyper:
            check_beta("momentum", hyper["momentum"])


class NAdam(_PureOptimizer):
    r"""NAdam, as :class:`torch.optim.NAdam` (:func:`~companion.optim.nadam_update`):
    Adam with Nesterov's look-ahead and torch's ``momentum_decay`` schedule of :math:`\mu_t`.

    Raises:
        As :class:`Adam`, plus
        ValueError: ``lr * weight_decay`` > 1 with ``decoupled_weight_decay=True``.
    """

    _update, _init, _State = staticmethod(F._nadam), staticmethod(F.nadam_init), F.NAdamState
    _fields = {"step": "step", "m": "exp_avg", "v": "exp_avg_sq", "mu_product": "mu_product"}
    _hyper = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
              "maximize")
    _decoupled = "decoupled_weight_decay"

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
    No torch counterpart.

    Raises:
        As :class:`Adam`, plus
        ValueError: ``lr * weight_decay`` > 1 (Lion's decay is decoupled).
    """

    _update, _init, _State = staticmethod(F._lion), staticmethod(F.lion_init), F.LionState
    _fields = {"m": "exp_avg"}
    _hyper = ("lr", "betas", "weight_decay", "maximize")
    _decoupled = True

    def __init__(self, params: Iterable, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize))
