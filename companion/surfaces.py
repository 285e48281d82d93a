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

Each :class:`Surface` has ``f(x1, x2)`` (vectorised over numpy arrays, for contour plots;
plain arithmetic, so torch tensors work too), ``grad(p)``, ``start``, ``minimum``, ``xlim``,
``ylim`` and, for quadratics, ``hessian`` / ``lambda_max``.

Example::

    from companion import optim, surfaces
    traj = surfaces.run("ravine", optim.sgd_update, steps=20, lr=0.4)
    traj.points.shape, traj.diverged_at          # ((21, 2), None)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

__all__ = ["Surface", "Trajectory", "quadratic", "get", "names", "run", "DIVERGED_NORM"]

#: ``run`` stops once ``|p|`` exceeds this (or p is not finite).
DIVERGED_NORM = 1e6


@dataclass(frozen=True, eq=False)
class Surface:
    """A 2-D loss :math:`f(x_1, x_2)` with its gradient and plotting defaults."""

    name: str
    f: Callable[[Any, Any], Any]                     #: f(x1, x2), elementwise on arrays
    df: Callable[[Any, Any], tuple[Any, Any]]        #: (df/dx1, df/dx2), elementwise
    start: tuple[float, float]                       #: default starting point
    minimum: Optional[tuple[float, float]]           #: known minimiser (None: no minimum)
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    hessian: Optional[np.ndarray] = None             #: constant Hessian (quadratics only)

    def grad(self, p: Any) -> np.ndarray:
        """:math:`\\nabla f(p)` as a float64 array of shape (2,)."""
        d1, d2 = self.df(float(p[0]), float(p[1]))
        return np.array([d1, d2], dtype=np.float64)

    def loss(self, p: Any) -> float:
        return float(self.f(float(p[0]), float(p[1])))

    @property
    def lambda_max(self) -> Optional[float]:
        """Largest Hessian eigenvalue (quadratics); GD diverges for lr > 2 / lambda_max."""
        return None if self.hessian is None else float(np.linalg.eigvalsh(self.hessian).max())

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``X1, X2, F`` on an n x n grid over xlim x ylim, ready for ``ax.contour``."""
        x1, x2 = np.meshgrid(np.linspace(*self.xlim, n), np.linspace(*self.ylim, n))
        return x1, x2, self.f(x1, x2)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def quadratic(a: float, b: float, *, name: Optional[str] = None,
              start: tuple[float, float] = (-5.0, -2.0),
              xlim: tuple[float, float] = (-5.5, 5.5),
              ylim: tuple[float, float] = (-3.0, 3.0)) -> Surface:
    r"""The quadratic :math:`f = a x_1^2 + b x_2^2`: Hessian diag(2a, 2b).

    Gradient descent acts on each coordinate alone: :math:`x_{i,t} = (1 - 2\eta a_i)^t x_{i,0}`,
    stable iff :math:`\eta < 1 / \max(a, b) = 2/\lambda_{\max}`. Condition number
    :math:`\max(a,b)/\min(a,b)` when both are positive; a negative coefficient makes a saddle.
    """
    a, b = _real("a", a), _real("b", b)
    for arg, value in (("a", a), ("b", b)):
        if value == 0 or not np.isfinite(value):
            raise ValueError(f"{arg} must be finite and non-zero, got {value}")
    return Surface(
        name=name or f"quadratic({a:g}, {b:g})",
        f=lambda x1, x2: a * x1 ** 2 + b * x2 ** 2,
        df=lambda x1, x2: (2 * a * x1, 2 * b * x2),
        start=start, minimum=(0.0, 0.0) if a > 0 and b > 0 else None, xlim=xlim, ylim=ylim,
        hessian=np.diag([2 * a, 2 * b]))


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
)}


def names() -> tuple[str, ...]:
    """Names :func:`get` accepts."""
    return tuple(_SURFACES)


def get(name: str) -> Surface:
    """The surface called ``name`` (one of :func:`names`)."""
    if name not in _SURFACES:
        raise ValueError(f"unknown surface {name!r}; valid names: {', '.join(_SURFACES)}")
    return _SURFACES[name]


class Trajectory(NamedTuple):
    points: np.ndarray             #: (steps + 1, 2): p_0 .. p_steps; NaN from divergence on
    losses: np.ndarray             #: (steps + 1,): f(p_t); NaN from divergence on
    diverged_at: Optional[int]     #: first t with p_t non-finite or |p_t| > 1e6, else None


def run(surface: Union[Surface, str], update: Callable, state: Any = None, *, steps: int,
        start: Optional[tuple[float, float]] = None, **hyper: Any) -> Trajectory:
    """Trace ``steps`` updates ``p, state = update(p, surface.grad(p), state, **hyper)``.

    ``update`` is any pure function of :mod:`companion.optim` (``sgd_update``,
    ``adam_update``, ...), or your own with the same convention; ``state=None`` lets it
    start from its ``*_init``. Once p_t is not finite or :math:`|p_t| >` 1e6, the run stops:
    ``diverged_at = t`` and rows t.. of ``points`` and ``losses`` are NaN, so a plot can
    show "diverged at step t".

    >>> from companion.optim import sgd_update
    >>> run("ravine", sgd_update, steps=20, lr=0.6).points[-1].round(1).tolist()  # |1 - 0.6*4| > 1
    [-0.4, -1673.4]
    """
    surface = get(surface) if isinstance(surface, str) else surface
    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a Surface or one of {names()}, got {surface!r}")
    if not callable(update):
        raise TypeError(f"update must be callable, got {update!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    points = np.full((steps + 1, 2), np.nan)
    losses = np.full(steps + 1, np.nan)
    p = np.array(surface.start if start is None else start, dtype=np.float64)
    if p.shape != (2,):
        raise ValueError(f"start must be a point (x1, x2), got {start!r}")
    points[0], losses[0] = p, surface.loss(p)
    for t in range(1, steps + 1):
        p, state = update(p, surface.grad(p), state, **hyper)
        p = np.asarray(p, dtype=np.float64)
        if not np.all(np.isfinite(p)) or np.linalg.norm(p) > DIVERGED_NORM:
            return Trajectory(points, losses, t)
        points[t], losses[t] = p, surface.loss(p)
    return Trajectory(points, losses, None)
