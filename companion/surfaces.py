"""2-D test functions with analytic gradients, and :func:`run` to trace any optimizer on them.

Surfaces (``get(name)``, ``names()``):

* ``ravine`` -- :math:`f = 0.1 x_1^2 + 2 x_2^2`: Hessian diag(0.2, 4), condition number 20,
  :math:`\\lambda_{\\max} = 4`, so gradient descent is stable only for
  :math:`\\eta < 2/\\lambda_{\\max} = 0.5`. Other conditionings: :func:`quadratic`.
* ``scaled`` -- :math:`f = \\tfrac12 (100 x_1^2 + x_2^2)`: at equal distance from the minimum
  the gradient along :math:`x_1` is 100x the one along :math:`x_2` (a frequent feature next to
  a rare one). One lr cannot suit both axes; per-coordinate scaling (Adagrad, RMSProp, Adam,
  signSGD) moves both at the same pace.
* ``rosenbrock`` -- :math:`(1-x_1)^2 + 100 (x_2 - x_1^2)^2`, a curved narrow valley, minimum (1, 1).
* ``beale`` -- :math:`\\sum_i (c_i - x_1 + x_1 x_2^i)^2`, c = (1.5, 2.25, 2.625); minimum (3, 0.5).
* ``saddle`` -- :math:`x_1^2 - x_2^2`; the start (-2, 1e-3) lies just off the stable manifold
  :math:`x_2 = 0`, so plain GD first heads for the saddle point and only slowly escapes it.
* ``rotated`` -- the ravine turned by 45 degrees (``quadratic(0.1, 2.0, angle=45)``): the same
  eigenvalues (0.2, 4), condition number 20, but the steep and flat directions are diagonals,
  not axes, so scaling each coordinate by its own gradient size leaves the conditioning in place.

Each :class:`Surface` has ``f(x1, x2)`` (vectorised over numpy arrays, for contour plots;
plain arithmetic, so torch tensors work too), ``grad(p)``, ``start``, ``minimum``, ``xlim``,
``ylim`` and, for quadratics, ``hessian`` / ``lambda_max``.

Example::

    from companion import optim, surfaces
    traj = surfaces.run("ravine", optim.sgd_update, steps=20, lr=0.4)
    traj.points.shape, traj.diverged_at          # ((21, 2), None)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
import torch

from . import _check
from . import optim as _optim
from .optim._functional import UNCHECKED as _UNCHECKED

__all__ = ["Surface", "Trajectory", "quadratic", "get", "names", "run", "DIVERGED_NORM",
           "heavy_ball_rate", "nesterov_rate", "sgd_noise_floor"]

#: ``run`` stops once ``|p|`` exceeds this (or p is not finite).
DIVERGED_NORM = 1e6


def _check_point(name: str, value: Any) -> tuple[float, float]:
    """A point ``(x1, x2)``: a list/tuple of 2 finite reals, or an array of shape (2,)
    (numpy or torch) of them; returned as a tuple of floats."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if tuple(value.shape) != (2,):
            raise ValueError(f"{name} must be a point (x1, x2) of 2 finite reals, got "
                             f"{_check.show(value)}")
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) != 2:
        raise ValueError(f"{name} must be a point (x1, x2) of 2 finite reals, got "
                         f"{_check.show(value)}")
    items = _check.sequence(name, value, length=2, what="a point (x1, x2) of 2 finite reals")
    return tuple(_check.real(f"{name}[{i}]", v) for i, v in enumerate(items))


def _check_interval(name: str, value: Any) -> tuple[float, float]:
    """Plot limits ``(low, high)``: 2 finite reals, low < high."""
    items = _check.sequence(name, value, length=2, what="a pair (low, high)")
    low, high = (_check.real(f"{name}[{i}]", v) for i, v in enumerate(items))
    if not low < high:
        raise ValueError(f"{name} must be a pair (low, high) with low < high, got {value!r}")
    return low, high


@dataclass(frozen=True, eq=False)
class Surface:
    """A 2-D loss :math:`f(x_1, x_2)` with its gradient and plotting defaults.

    The fields are checked when the surface is built (a bad ``start`` is refused here, not
    at the first step of :func:`run`); points become tuples of floats.

    Raises:
        TypeError: ``name`` not a str, ``f`` or ``df`` not callable, ``start``,
            ``minimum``, ``xlim`` or ``ylim`` not a pair of reals, ``hessian`` not a
            numpy array.
        ValueError: an empty ``name``, a point or limit that is not finite, ``xlim`` /
            ``ylim`` with low >= high, ``hessian`` not a finite (2, 2) matrix.
    """

    name: str
    f: Callable[[Any, Any], Any]                     #: f(x1, x2), elementwise on arrays
    df: Callable[[Any, Any], tuple[Any, Any]]        #: (df/dx1, df/dx2), elementwise
    start: tuple[float, float]                       #: default starting point
    minimum: Optional[tuple[float, float]]           #: known minimiser (None: no minimum)
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    hessian: Optional[np.ndarray] = None             #: constant Hessian (quadratics only)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _check.string("name", self.name, nonempty=True)
        _check.function("f", self.f, "a callable f(x1, x2)")
        _check.function("df", self.df, "a callable df(x1, x2) -> (df/dx1, df/dx2)")
        set_(self, "start", _check_point("start", self.start))
        if self.minimum is not None:
            set_(self, "minimum", _check_point("minimum", self.minimum))
        set_(self, "xlim", _check_interval("xlim", self.xlim))
        set_(self, "ylim", _check_interval("ylim", self.ylim))
        if self.hessian is not None:
            _check.instance("hessian", self.hessian, np.ndarray, "None or a (2, 2) numpy array")
            _check.array("hessian", self.hessian, ndim=2, finite=True)
            if self.hessian.shape != (2, 2):
                raise ValueError(f"hessian must be a (2, 2) matrix, got "
                                 f"{_check.show(self.hessian)}")

    def grad(self, p: Any) -> np.ndarray:
        """:math:`\\nabla f(p)` as a float64 array of shape (2,).

        Raises:
            TypeError: ``p`` not a pair of reals (a list, tuple or array of shape (2,)).
            ValueError: ``p`` of another length or shape, or not finite.
        """
        return self._grad(_check_point("p", p))

    def _grad(self, p: Any) -> np.ndarray:
        d1, d2 = self.df(float(p[0]), float(p[1]))
        return np.array([d1, d2], dtype=np.float64)

    def loss(self, p: Any) -> float:
        """:math:`f(p)` as a float.

        Raises:
            TypeError: ``p`` not a pair of reals (a list, tuple or array of shape (2,)).
            ValueError: ``p`` of another length or shape, or not finite.
        """
        return self._loss(_check_point("p", p))

    def _loss(self, p: Any) -> float:
        return float(self.f(float(p[0]), float(p[1])))

    @property
    def lambda_max(self) -> Optional[float]:
        """Largest Hessian eigenvalue (quadratics); GD diverges for lr > 2 / lambda_max."""
        return None if self.hessian is None else float(np.linalg.eigvalsh(self.hessian).max())

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``X1, X2, F`` on an n x n grid over xlim x ylim, ready for ``ax.contour``.

        Raises:
            TypeError: ``n`` not an int.
            ValueError: ``n`` < 2.
        """
        n = _check.integer("n", n, minimum=2)
        x1, x2 = np.meshgrid(np.linspace(*self.xlim, n), np.linspace(*self.ylim, n))
        return x1, x2, self.f(x1, x2)


def quadratic(a: float, b: float, *, name: Optional[str] = None,
              start: tuple[float, float] = (-5.0, -2.0),
              xlim: tuple[float, float] = (-5.5, 5.5),
              ylim: tuple[float, float] = (-3.0, 3.0), angle: float = 0.0) -> Surface:
    r"""The quadratic :math:`f = a x_1^2 + b x_2^2`: Hessian diag(2a, 2b); turned by ``angle``.

    Gradient descent acts on each coordinate alone: :math:`x_{i,t} = (1 - 2\eta a_i)^t x_{i,0}`,
    stable iff :math:`\eta < 1 / \max(a, b) = 2/\lambda_{\max}`. Condition number
    :math:`\max(a,b)/\min(a,b)` when both are positive; a negative coefficient makes a saddle.

    With ``angle`` :math:`\theta` (degrees, counter-clockwise) the surface is turned about the
    origin: :math:`f(p) = \tfrac12 p^\top H p` with :math:`H = R\,\mathrm{diag}(2a, 2b)\,R^\top`,
    :math:`R` the rotation by :math:`\theta`. The eigenvalues, and so every rate of gradient
    descent and momentum, stay the same; per-coordinate methods (AdaGrad, RMSProp, Adam) see
    other coordinates. ``start`` is turned with the surface.

    Raises:
        TypeError: ``a``, ``b`` or ``angle`` not a real number, ``name`` neither None nor a
            str, ``start``, ``xlim`` or ``ylim`` not a pair of reals.
        ValueError: ``a`` or ``b`` zero or not finite, ``angle`` not finite, ``start`` not
            finite, limits with low >= high or not finite.
    """
    a, b = _check.real("a", a), _check.real("b", b)
    theta = np.deg2rad(_check.real("angle", angle))
    for arg, value in (("a", a), ("b", b)):
        if value == 0:
            raise ValueError(f"{arg} must be finite and non-zero, got {value}")
    if name is not None:
        _check.string("name", name, nonempty=True)
    minimum = (0.0, 0.0) if a > 0 and b > 0 else None
    if theta == 0.0:
        return Surface(
            name=name or f"quadratic({a:g}, {b:g})",
            f=lambda x1, x2: a * x1 ** 2 + b * x2 ** 2,
            df=lambda x1, x2: (2 * a * x1, 2 * b * x2),
            start=start, minimum=minimum, xlim=xlim, ylim=ylim,
            hessian=np.diag([2 * a, 2 * b]))
    c, s = float(np.cos(theta)), float(np.sin(theta))
    rot = np.array([[c, -s], [s, c]])
    hessian = rot @ np.diag([2 * a, 2 * b]) @ rot.T
    (h11, h12), (_, h22) = hessian.tolist()
    start = tuple((rot @ np.array(_check_point("start", start))).tolist())
    return Surface(
        name=name or f"quadratic({a:g}, {b:g}, angle={angle:g})",
        f=lambda x1, x2: 0.5 * (h11 * x1 * x1 + 2 * h12 * x1 * x2 + h22 * x2 * x2),
        df=lambda x1, x2: (h11 * x1 + h12 * x2, h12 * x1 + h22 * x2),
        start=start, minimum=minimum, xlim=xlim, ylim=ylim, hessian=hessian)


def _rosenbrock_df(x1, x2):
    return -2 * (1 - x1) - 400 * x1 * (x2 - x1 ** 2), 200 * (x2 - x1 ** 2)


def _beale_f(x1, x2):
    return ((1.5 - x1 + x1 * x2) ** 2 + (2.25 - x1 + x1 * x2 ** 2) ** 2
            + (2.625 - x1 + x1 * x2 ** 3) ** 2)


def _beale_df(x1, x2):
    t1, t2, t3 = 1.5 - x1 + x1 * x2, 2.25 - x1 + x1 * x2 ** 2, 2.625 - x1 + x1 * x2 ** 3
    d1 = 2 * t1 * (x2 - 1) + 2 * t2 * (x2 ** 2 - 1) + 2 * t3 * (x2 ** 3 - 1)
    d2 = 2 * t1 * x1 + 2 * t2 * 2 * x1 * x2 + 2 * t3 * 3 * x1 * x2 ** 2
    return d1, d2


_SURFACES = {s.name: s for s in (
    quadratic(0.1, 2.0, name="ravine"),
    quadratic(50.0, 0.5, name="scaled", start=(-1.0, -1.0), xlim=(-1.5, 1.5), ylim=(-1.5, 1.5)),
    Surface("rosenbrock", lambda x1, x2: (1 - x1) ** 2 + 100 * (x2 - x1 ** 2) ** 2,
            _rosenbrock_df, start=(-1.5, 2.0), minimum=(1.0, 1.0), xlim=(-2.0, 2.0),
            ylim=(-1.0, 3.0)),
    Surface("beale", _beale_f, _beale_df, start=(1.0, 1.5), minimum=(3.0, 0.5),
            xlim=(-4.5, 4.5), ylim=(-4.5, 4.5)),
    quadratic(1.0, -1.0, name="saddle", start=(-2.0, 1e-3), xlim=(-2.5, 2.5), ylim=(-2.5, 2.5)),
    quadratic(0.1, 2.0, name="rotated", angle=45.0, xlim=(-5.5, 5.5), ylim=(-5.5, 5.5)),
)}


def names() -> tuple[str, ...]:
    """Names :func:`get` accepts."""
    return tuple(_SURFACES)


def get(name: str) -> Surface:
    """The surface called ``name`` (one of :func:`names`).

    Raises:
        TypeError: ``name`` not a str.
        ValueError: ``name`` not one of :func:`names` (the message lists them).
    """
    return _SURFACES[_check.choice("name", name, _SURFACES)]


class Trajectory(NamedTuple):
    points: np.ndarray             #: (steps + 1, 2): p_0 .. p_steps; NaN from divergence on
    losses: np.ndarray             #: (steps + 1,): f(p_t); NaN from divergence on
    diverged_at: Optional[int]     #: first t with p_t non-finite or |p_t| > 1e6, else None


_UPDATE = "a callable update(p, g, state, **hyper) returning (p, state)"


def _check_update(update: Any) -> Callable:
    """A function, not an optimizer: ``optim.Adam`` for ``optim.adam_update`` is named."""
    optimizer = isinstance(update, torch.optim.Optimizer)
    if optimizer or (isinstance(update, type) and issubclass(update, torch.optim.Optimizer)):
        cls = type(update) if optimizer else update
        pure = f"{cls.__name__.lower()}_update"
        hint = (f"pass the pure function optim.{pure}" if pure in _optim.__all__
                else "pass a pure update function such as optim.sgd_update")
        got = f"an instance of {cls.__name__}" if optimizer else f"the class {cls.__name__}"
        raise TypeError(f"update must be {_UPDATE}, got {got} (a torch.optim-style "
                        f"optimizer steps a model's parameters; {hint})")
    return _check.function("update", update, _UPDATE)


def _check_returned_point(out: Any, update: Callable) -> np.ndarray:
    """What an update returned: a pair ``(p, state)`` with p a real point of shape (2,)."""
    fname = getattr(update, "__name__", "update")
    if not isinstance(out, (tuple, list)) or len(out) != 2 or hasattr(out, "_fields"):
        raise TypeError(f"update must return a pair (p, state), got {_check.show(out)} "
                        f"from {fname} (a custom update returns its state too, e.g. "
                        f"'return p - lr * g, state')")
    new = out[0]
    kind = getattr(getattr(new, "dtype", None), "kind", None)
    try:
        p = np.asarray(new, dtype=np.float64) if kind not in ("c", "b", "U", "S", "O") else None
    except (TypeError, ValueError):
        p = None
    if p is None or p.shape != (2,):
        raise ValueError(f"update must return (p, state) with p a real point of shape (2,), "
                         f"got p = {_check.show(new)} from {fname}")
    return p


def run(surface: Union[Surface, str], update: Callable, state: Any = None, *, steps: int,
        start: Optional[tuple[float, float]] = None, **hyper: Any) -> Trajectory:
    """Trace ``steps`` updates ``p, state = update(p, surface.grad(p), state, **hyper)``.

    ``update`` is any pure function of :mod:`companion.optim` (``sgd_update``,
    ``adam_update``, ...), or your own with the same convention; ``state=None`` lets it
    start from its ``*_init``. Once p_t is not finite or :math:`|p_t| >` 1e6, the run stops:
    ``diverged_at = t`` and rows t.. of ``points`` and ``losses`` are NaN, so a plot can
    show "diverged at step t".

    A companion update checks ``state`` and ``hyper`` on the first call (even for
    ``steps=0``); the later steps call its unchecked core, so a widget frame of thousands
    of steps pays for the checks once.

    >>> from companion.optim import sgd_update
    >>> run("ravine", sgd_update, steps=20, lr=0.6).points[-1].round(1).tolist()  # |1 - 0.6*4| > 1
    [-0.4, -1673.4]

    Raises:
        TypeError: ``surface`` neither a :class:`Surface` nor a name, ``update`` not
            callable or an optimizer class (``optim.Adam`` for ``optim.adam_update``),
            an update that does not return a pair ``(p, state)``, ``steps`` not an int,
            ``start`` not a pair of reals; the update's own errors for a bad ``state`` or
            hyperparameter.
        ValueError: an unknown surface name, ``steps`` < 0, ``start`` of another length
            or not finite, an update returning p of another shape than (2,); the
            update's own for a hyperparameter out of range.
    """
    if isinstance(surface, str):
        surface = _SURFACES[_check.choice("surface", surface, _SURFACES)]
    elif not isinstance(surface, Surface):
        raise TypeError(f"surface must be a Surface or one of {names()}, got "
                        f"{_check.show(surface)}")
    update = _check_update(update)
    steps = _check.integer("steps", steps, minimum=0)
    p = np.array(surface.start if start is None else _check_point("start", start), dtype=np.float64)
    core = _UNCHECKED.get(update)
    grad, loss = surface._grad, surface._loss
    points = np.full((steps + 1, 2), np.nan)
    losses = np.full(steps + 1, np.nan)
    points[0], losses[0] = p, loss(p)
    if core is not None and steps == 0:
        update(p, grad(p), state, **hyper)  # checks state and hyper; the result is unused
    step = update
    for t in range(1, steps + 1):
        out = step(p, grad(p), state, **hyper)
        if step is not core and core is not None:  # checked once: the core from now on
            step, hyper = core, {**update.__kwdefaults__, **hyper}
        new = out[0] if type(out) is tuple and len(out) == 2 else None
        if type(new) is np.ndarray and new.dtype == np.float64 and new.shape == (2,):
            p = new
        else:
            p = _check_returned_point(out, update)
        state = out[1]
        if not np.all(np.isfinite(p)) or np.linalg.norm(p) > DIVERGED_NORM:
            return Trajectory(points, losses, t)
        points[t], losses[t] = p, loss(p)
    return Trajectory(points, losses, None)


def _check_curvatures(value: Any) -> np.ndarray:
    """A nonempty list/tuple or 1-D array/tensor of finite reals > 0, as a float64 array."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if value.ndim != 1 or len(value) == 0:
            raise ValueError(f"curvatures must be a nonempty 1-D array, got {_check.show(value)}")
        items = value.tolist()
    else:
        items = _check.sequence("curvatures", value, what="a sequence of positive curvatures")
    return np.array([_check.positive(f"curvatures[{i}]", v) for i, v in enumerate(items)])


def _largest_modulus(trace: np.ndarray, det: np.ndarray) -> float:
    """max over curvatures of the largest |eigenvalue| of 2x2 matrices with this trace and
    determinant: the roots of r^2 - trace r + det (a complex pair has modulus sqrt(det))."""
    disc = trace * trace - 4 * det
    root = np.sqrt(np.abs(disc))
    real_roots = np.maximum(np.abs(trace + root), np.abs(trace - root)) / 2
    return float(np.where(disc >= 0, real_roots, np.sqrt(np.abs(det))).max())


def heavy_ball_rate(lr: float, momentum: float, curvatures: Any) -> float:
    r"""Worst per-step contraction of heavy-ball momentum on a quadratic (closed form).

    On a direction of curvature :math:`\lambda`, torch's momentum (``sgd_update``,
    constant lr) is :math:`x_{t+1} = (1 + \mu - \eta\lambda)\,x_t - \mu\,x_{t-1}`, whose
    iteration matrix :math:`\begin{pmatrix}1+\mu-\eta\lambda & -\mu\\ 1 & 0\end{pmatrix}`
    has the eigenvalues :math:`r = \tfrac12\big(a \pm \sqrt{a^2 - 4\mu}\big)`,
    :math:`a = 1 + \mu - \eta\lambda` (modulus :math:`\sqrt\mu` when they are complex).
    The rate is the largest modulus over all curvatures: the distance to the minimum
    shrinks like rate^t (grows where rate > 1). With ``momentum=0`` it is gradient
    descent's :math:`\max_i |1-\eta\lambda_i|`. Polyak's optimum
    :math:`\eta^* = (2/(\sqrt{\lambda_{\max}}+\sqrt{\lambda_{\min}}))^2`,
    :math:`\mu^* = ((\sqrt\kappa-1)/(\sqrt\kappa+1))^2` gives :math:`(\sqrt\kappa-1)/(\sqrt\kappa+1)`.

    Args:
        lr: the learning rate :math:`\eta`, finite and >= 0.
        momentum: :math:`\mu`, in [0, 1).
        curvatures: the Hessian's eigenvalues :math:`\lambda_i` (a nonempty sequence of
            finite reals > 0).

    Returns:
        The rate, a float >= 0.

    Raises:
        TypeError: ``lr`` or ``momentum`` not a real number, ``curvatures`` not a
            sequence or array of reals.
        ValueError: ``lr`` < 0 or not finite, ``momentum`` outside [0, 1), an empty
            ``curvatures``, or one that is not finite and > 0.

    >>> round(heavy_ball_rate(0.4, 0.0, [0.2, 4.0]), 3)   # GD on the ravine: |1 - 0.4*0.2|
    0.92
    """
    lr = _check.nonnegative("lr", lr)
    mu = _check.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    lam = _check_curvatures(curvatures)
    return _largest_modulus(trace=1 + mu - lr * lam, det=np.full_like(lam, mu))


def nesterov_rate(lr: float, momentum: float, curvatures: Any) -> float:
    r"""Worst per-step contraction of torch's Nesterov momentum on a quadratic (closed form).

    torch's Nesterov (``sgd_update(..., nesterov=True)``, constant lr) takes
    :math:`v_t = \mu v_{t-1} + g_t` and :math:`p_t = p_{t-1} - \eta\,(g_t + \mu v_t)`. On a
    direction of curvature :math:`\lambda`, with :math:`h = \eta\lambda` and
    :math:`u = \eta v`, the pair :math:`(x, u)` evolves by

    .. math::
        \begin{pmatrix} x_t \\ u_t \end{pmatrix} =
        \begin{pmatrix} 1 - h(1+\mu) & -\mu^2 \\ h & \mu \end{pmatrix}
        \begin{pmatrix} x_{t-1} \\ u_{t-1} \end{pmatrix},

    trace :math:`a = 1 + \mu - h(1+\mu)`, determinant :math:`d = \mu(1-h)`, eigenvalues
    :math:`\tfrac12(a \pm \sqrt{a^2 - 4d})`. The Jury conditions :math:`|d| < 1`,
    :math:`|a| < 1 + d` give stability iff :math:`0 < h < 2(1+\mu)/(1+2\mu)`: below heavy
    ball's :math:`2(1+\mu)` and, for :math:`\mu > 0`, below gradient descent's 2. The rate is
    the largest eigenvalue modulus over all curvatures; with ``momentum=0`` it is gradient
    descent's :math:`\max_i |1-\eta\lambda_i|`.

    Args:
        lr: the learning rate :math:`\eta`, finite and >= 0.
        momentum: :math:`\mu`, in [0, 1).
        curvatures: the Hessian's eigenvalues :math:`\lambda_i` (a nonempty sequence of
            finite reals > 0).

    Returns:
        The rate, a float >= 0 (> 1: the iterates grow).

    Raises:
        TypeError: ``lr`` or ``momentum`` not a real number, ``curvatures`` not a
            sequence or array of reals.
        ValueError: ``lr`` < 0 or not finite, ``momentum`` outside [0, 1), an empty
            ``curvatures``, or one that is not finite and > 0.

    >>> round(nesterov_rate(0.4, 0.9, [0.2, 4.0]), 3)   # 0.4 * 4 > 2 * 1.9 / 2.8: diverges
    1.5
    """
    lr = _check.nonnegative("lr", lr)
    mu = _check.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    lam = _check_curvatures(curvatures)
    h = lr * lam
    return _largest_modulus(trace=(1 + mu) * (1 - h), det=mu * (1 - h))


def sgd_noise_floor(lr: float, curvatures: Any, noise_std: float, *,
                    momentum: float = 0.0) -> float:
    r"""Stationary expected loss of constant-lr SGD on a noisy quadratic (closed form).

    For :math:`f(x) = \tfrac12\sum_i \lambda_i x_i^2` and stochastic gradients
    :math:`g_i = \lambda_i x_i + \sigma\,\xi_i` (:math:`\xi_i` independent, mean 0,
    variance 1), each coordinate follows :math:`x_{t+1} = (1-\eta\lambda_i)\,x_t -
    \eta\sigma\xi_t`. Its stationary variance solves
    :math:`s = (1-\eta\lambda_i)^2 s + \eta^2\sigma^2`, so
    :math:`s_i = \eta\sigma^2 / (\lambda_i(2-\eta\lambda_i))` and

    .. math::
        \mathbb E f = \sum_i \tfrac12\lambda_i s_i = \sum_i \frac{\eta\sigma^2}{2\,(2-\eta\lambda_i)} ,

    proportional to :math:`\eta` for small :math:`\eta`: the *noise floor* a constant
    learning rate cannot go below.

    With heavy-ball ``momentum`` :math:`\mu` (torch's form, as ``sgd_update``), each
    coordinate is the AR(2) process :math:`x_{t+1} = (1+\mu-\eta\lambda_i)\,x_t -
    \mu\,x_{t-1} - \eta\sigma\xi_t`, whose stationary variance gives

    .. math::
        \mathbb E f = \sum_i \frac{(1+\mu)\,\eta\sigma^2}
                                 {2\,(1-\mu)\,\big(2(1+\mu)-\eta\lambda_i\big)} ,

    about :math:`1/(1-\mu)` times the floor without momentum (the same for ``mu=0``).

    Args:
        lr: :math:`\eta`, > 0 and below the stability limit :math:`2(1+\mu)/\lambda_{\max}`.
        curvatures: the :math:`\lambda_i` (a nonempty sequence of finite reals > 0).
        noise_std: :math:`\sigma`, finite and >= 0.
        momentum: :math:`\mu`, in [0, 1) (default 0: plain SGD).

    Returns:
        :math:`\mathbb E f` at stationarity, a float.

    Raises:
        TypeError: ``lr``, ``noise_std`` or ``momentum`` not a real number,
            ``curvatures`` not a sequence or array of reals.
        ValueError: ``lr`` not > 0, ``lr`` >= 2(1 + momentum)/max(curvatures) (no
            stationary state: the iterates diverge), ``noise_std`` < 0 or not finite,
            ``momentum`` outside [0, 1), a bad ``curvatures``.

    >>> round(sgd_noise_floor(0.1, [1.0], 1.0), 5)   # 0.1 / (2 * 1.9)
    0.02632
    """
    lr = _check.positive("lr", lr)
    lam = _check_curvatures(curvatures)
    sigma = _check.nonnegative("noise_std", noise_std)
    mu = _check.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    limit = 2 * (1 + mu)                                   # stable iff eta * lambda < limit
    if lr * lam.max() >= limit:
        raise ValueError(f"lr must be below the stability limit 2(1 + momentum)/max(curvatures)"
                         f" = {limit / lam.max():.4g}, got lr={lr!r} (no stationary state)")
    return float(np.sum((1 + mu) * lr * sigma ** 2 / (2 * (1 - mu) * (limit - lr * lam))))
