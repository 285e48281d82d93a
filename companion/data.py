r"""Small synthetic datasets, generated with numpy from a seed (nothing is downloaded).

* :func:`teacher_regression` -- inputs :math:`x \sim \mathcal N(0, I)` and targets from a
  fixed random one-hidden-layer tanh "teacher" net: learnable exactly by a big enough
  student, so a stalled loss is the optimizer's fault, not the data's.
* :func:`spirals` -- the classic interleaved 2-D spirals (one arm per class), not
  linearly separable.
* :func:`sequence_sum` and :func:`first_element` -- sequences for a recurrent net: the
  target is the (scaled) sum of all steps, or only the first step, which the net must
  carry through all :math:`T` steps (the long-range case where gradients vanish in time).
* :func:`sparse_features` -- linear regression in which some features are frequent and
  some rare, for the adaptive-optimizer chapter.

Every function takes ``seed`` and is deterministic: the same arguments give identical
arrays. Draws come from ``np.random.default_rng`` children of ``SeedSequence(seed)``, one
per ingredient, so e.g. the teacher of :func:`teacher_regression` does not depend on ``n``.

Example::

    from companion import data
    x, y = data.teacher_regression(256, 8, seed=0)      # (256, 8), (256, 1) float32
    x, labels = data.spirals(300, classes=3)            # (300, 2) float32, (300,) int64
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import _check

__all__ = ["teacher_regression", "spirals", "sequence_sum", "first_element", "sparse_features"]

#: :math:`\mathbb E[\tanh^2(Z)]` for :math:`Z \sim \mathcal N(0,1)`, to give the teacher's
#: output unit variance (computed by quadrature; 0.3942944...).
_E_TANH2 = 0.39429449

_TEACHER_WIDTH = 32


# ---------------------------------------------------------------------------- checks
def _rngs(seed: int, k: int) -> list[np.random.Generator]:
    """``k`` independent generators from ``SeedSequence(seed)`` (``seed`` already checked)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(k)]


# -------------------------------------------------------------------------- datasets
def teacher_regression(n: int = 512, in_features: int = 16, out_features: int = 1, *,
                       seed: int = 0, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Regression on a random smooth teacher: :math:`y = A \tanh(Bx) + \epsilon`.

    :math:`x \sim \mathcal N(0, I_d)`, :math:`B \in \mathbb R^{32\times d}` with entries
    :math:`\mathcal N(0, 1/d)` (so :math:`Bx` has unit variance per unit),
    :math:`A \in \mathbb R^{k\times 32}` with entries :math:`\mathcal N(0,
    1/(32\,\mathbb E\tanh^2 Z))`, which makes :math:`\operatorname{Var} y \approx 1`
    (averaged over teachers), and :math:`\epsilon \sim \mathcal N(0, \text{noise}^2)`.
    A net that predicts 0 therefore has MSE about ``1 + noise**2``.

    The teacher depends only on ``seed``, ``in_features`` and ``out_features``, and the
    first rows of ``x`` do not depend on ``n``.

    Returns:
        ``(x, y)``: float32 tensors of shapes (n, in_features) and (n, out_features).

    Raises:
        TypeError: a size or ``seed`` that is not an int (bools and floats included),
            a ``noise`` that is not a real number.
        ValueError: a value out of its range: sizes >= 1, ``seed`` in
            ``[0, 2**64 - 1]``, ``noise`` finite and >= 0.
    """
    n = _check.integer("n", n, minimum=1)
    d = _check.integer("in_features", in_features, minimum=1)
    k = _check.integer("out_features", out_features, minimum=1)
    seed = _check.seed(seed)
    noise = _check.nonnegative("noise", noise)
    teacher_rng, x_rng, noise_rng = _rngs(seed, 3)
    B = teacher_rng.standard_normal((_TEACHER_WIDTH, d)) / math.sqrt(d)
    A = teacher_rng.standard_normal((k, _TEACHER_WIDTH)) / math.sqrt(_TEACHER_WIDTH * _E_TANH2)
    x = x_rng.standard_normal((n, d))                       # (n, d)
    y = np.tanh(x @ B.T) @ A.T                              # (n, 32) -> (n, k)
    y = y + noise * noise_rng.standard_normal((n, k))
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def spirals(n: int = 600, classes: int = 3, *, noise: float = 0.2,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Interleaved 2-D spirals, one arm per class (CS231n's toy data).

    Class :math:`c` gets :math:`m_c` points (``n`` split as evenly as possible, the first
    classes getting the remainder); point :math:`i` of the arm has radius
    :math:`r_i = i/(m_c-1)` and angle :math:`\theta_i = 4c + 4 r_i + \text{noise}\,\epsilon_i`,
    :math:`\epsilon_i\sim\mathcal N(0,1)`, and sits at :math:`r_i(\sin\theta_i, \cos\theta_i)`.
    Rows are grouped by class (class 0 first); shuffle if order matters.

    Returns:
        ``(x, labels)``: float32 (n, 2) and int64 (n,) tensors with labels in 0..classes-1.

    Raises:
        TypeError: a size, ``classes`` or ``seed`` that is not an int (bools and floats
            included), a ``noise`` that is not a real number.
        ValueError: a value out of its range: sizes >= 1, ``seed`` in
            ``[0, 2**64 - 1]``, ``noise`` finite and >= 0,
            ``classes`` >= 2 and ``n`` >= ``classes``.
    """
    n = _check.integer("n", n, minimum=1)
    classes = _check.integer("classes", classes, minimum=2)
    if n < classes:
        raise ValueError(f"n must be >= classes ({classes}), got {n}")
    noise = _check.nonnegative("noise", noise)
    (rng,) = _rngs(_check.seed(seed), 1)
    counts = [n // classes + (c < n % classes) for c in range(classes)]
    xs, labels = [], []
    for c, m in enumerate(counts):
        r = np.linspace(0.0, 1.0, m)
        theta = 4.0 * c + 4.0 * r + noise * rng.standard_normal(m)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))  # (m, 2)
        labels.append(np.full(m, c))
    return (torch.from_numpy(np.concatenate(xs)).float(),
            torch.from_numpy(np.concatenate(labels)).long())


def _check_sequences(seq_len: object, batch: object, seed: object) -> np.ndarray:
    T = _check.integer("seq_len", seq_len, minimum=1)
    B = _check.integer("batch", batch, minimum=1)
    (rng,) = _rngs(_check.seed(seed), 1)
    return rng.standard_normal((T, B, 1))                   # (T, B, 1), time first


def sequence_sum(seq_len: int, batch: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sequences :math:`x_t \sim \mathcal N(0,1)` with target
    :math:`y = \frac{1}{\sqrt T}\sum_{t=1}^T x_t` (scaled so :math:`\operatorname{Var} y = 1`
    for every ``seq_len``). Every step matters equally.

    Returns:
        ``(x, y)``: float32 tensors (seq_len, batch, 1), time first like
        :class:`companion.nets.SimpleRNN` expects, and (batch, 1).

    Raises:
        TypeError: a size or ``seed`` that is not an int (bools and floats included).
        ValueError: a value out of its range: sizes >= 1, ``seed`` in
            ``[0, 2**64 - 1]``.
    """
    x = _check_sequences(seq_len, batch, seed)
    y = x.sum(axis=0) / math.sqrt(x.shape[0])               # (B, 1)
    return torch.from_numpy(x).float(), torch.from_numpy(y).float()


def first_element(seq_len: int, batch: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sequences :math:`x_t \sim \mathcal N(0,1)` with target :math:`y = x_1`: the net must
    remember the first step through :math:`T-1` later ones, so the only useful gradient
    travels back :math:`T-1` steps. Same ``x`` as :func:`sequence_sum` for the same seed.

    Returns:
        ``(x, y)``: float32 tensors (seq_len, batch, 1) and (batch, 1).

    Raises:
        TypeError: a size or ``seed`` that is not an int (bools and floats included).
        ValueError: a value out of its range: sizes >= 1, ``seed`` in
            ``[0, 2**64 - 1]``.
    """
    x = _check_sequences(seq_len, batch, seed)
    return torch.from_numpy(x).float(), torch.from_numpy(x[0].copy()).float()


def sparse_features(n: int = 1000, dim: int = 20, *, rare_fraction: float = 0.05,
                    n_rare: int | None = None, noise: float = 0.0, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Linear regression :math:`y = X w^\star + \epsilon` with frequent and rare features.

    The first ``dim - n_rare`` columns of :math:`X` are frequent: dense
    :math:`\mathcal N(0,1)`. The last ``n_rare`` (default ``dim // 2``) are rare: each
    entry is :math:`\mathcal N(0,1)` with probability ``rare_fraction`` and 0 otherwise.
    :math:`w^\star \sim \mathcal N(0, I)`, :math:`\epsilon \sim \mathcal N(0, \text{noise}^2)`.

    A rare feature's gradient is nonzero only in the rows that contain it, so with one
    global learning rate its weight learns about ``rare_fraction`` times as fast as a
    frequent one's -- the case Adagrad's per-coordinate step sizes were made for
    (Duchi, Hazan & Singer, 2011). A rare column may be all zero when
    ``n * rare_fraction`` is small.

    Returns:
        ``(X, y, w_true, frequent_mask)``: float32 (n, dim), float32 (n, 1),
        float32 (dim,) and bool (dim,) tensors; ``frequent_mask[j]`` is True for a
        frequent feature.

    Raises:
        TypeError: a size, count or ``seed`` that is not an int (bools and floats
            included), a rate or ``noise`` that is not a real number.
        ValueError: a value out of its range: sizes >= 1, ``seed`` in
            ``[0, 2**64 - 1]``, ``noise`` finite and >= 0,
            ``rare_fraction`` in (0, 1], ``n_rare`` (None: ``dim // 2``) in [0, dim].
    """
    n = _check.integer("n", n, minimum=1)
    dim = _check.integer("dim", dim, minimum=1)
    rare_fraction = _check.real("rare_fraction", rare_fraction, low=0.0, high=1.0,
                                low_open=True)
    n_rare = dim // 2 if n_rare is None else _check.integer("n_rare", n_rare, minimum=0)
    if n_rare > dim:
        raise ValueError(f"n_rare must be <= dim ({dim}), got {n_rare}")
    noise = _check.nonnegative("noise", noise)
    x_rng, mask_rng, w_rng, noise_rng = _rngs(_check.seed(seed), 4)
    X = x_rng.standard_normal((n, dim))                       # (n, dim)
    frequent = np.arange(dim) < dim - n_rare                  # (dim,)
    present = mask_rng.random((n, n_rare)) < rare_fraction    # (n, n_rare) Bernoulli
    X[:, ~frequent] = np.where(present, X[:, ~frequent], 0.0)
    w = w_rng.standard_normal(dim)                            # (dim,)
    y = X @ w + noise * noise_rng.standard_normal(n)          # (n,)
    return (torch.from_numpy(X).float(), torch.from_numpy(y[:, None]).float(),
            torch.from_numpy(w).float(), torch.from_numpy(frequent))
