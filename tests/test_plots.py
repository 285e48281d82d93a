"""Tests of companion.plots (Agg backend).

References: properties of the drawn artists -- one line per run, a diverged run's line
has exactly ``diverged_at`` points, a text containing "diverged at step N", never an
empty axis (all-NaN input still draws markers and text), the given ax is returned, and
nothing global (rcParams) changes.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402

from companion import plots, surfaces  # noqa: E402
from companion.train import History  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _history(n: int, diverged_at=None, scale=1.0) -> History:
    losses = scale * np.exp(-np.arange(n) / 10.0)
    if diverged_at is not None:
        losses[diverged_at:] = np.nan
    return History(losses=losses, diverged_at=diverged_at, steps_run=diverged_at or n)


# ---------------------------------------------------------------------- loss_curves
def test_loss_curves_one_line_per_run_and_divergence(ax):
    hs = {"a": _history(50), "b": _history(50, scale=2.0), "c": _history(50, diverged_at=17)}
    rc = dict(matplotlib.rcParams)
    assert plots.loss_curves(hs, ax) is ax
    assert dict(matplotlib.rcParams) == rc
    assert len(ax.lines) == 3
    assert [len(l.get_xdata()) for l in ax.lines] == [50, 50, 17]
    assert any("c: diverged at step 17" in t for t in _texts(ax))
    assert "c: diverged at step 17" in [t.get_text() for t in ax.get_legend().get_texts()]
    marks = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(marks) == 1 and marks[0].get_offsets()[0][0] == 17
    assert ax.get_yscale() == "log"


def test_loss_curves_all_diverged_at_zero_is_not_empty(ax):
    hs = {"x": _history(10, diverged_at=0), "y": np.full(10, np.nan)}
    plots.loss_curves(hs, ax)
    assert len(ax.lines) == 2
    texts = _texts(ax)
    assert sum("diverged at step 0" in t for t in texts) == 2
    assert len([c for c in ax.collections if isinstance(c, PathCollection)]) == 2
    lo, hi = ax.get_ylim()
    assert np.isfinite([lo, hi]).all() and lo < hi


def test_loss_curves_linear_when_nonpositive_and_new_axes():
    ax = plots.loss_curves({"a": np.array([1.0, 0.0, -1.0])})
    try:
        assert ax.get_yscale() == "linear" and len(ax.lines) == 1
    finally:
        plt.close(ax.figure)


def test_loss_curves_errors():
    with pytest.raises(ValueError, match="histories"):
        plots.loss_curves({})
    with pytest.raises(TypeError, match="histories"):
        plots.loss_curves([_history(3)])


# -------------------------------------------------------------------- layer_profile
def test_layer_profile_values_and_labels(ax):
    vals = {"fc1": 1e-4, "fc2": 1e-2, "fc3": 1.0}
    assert plots.layer_profile(vals, ax, label="grad", reference=1e-2) is ax
    main = ax.lines[0]
    np.testing.assert_array_equal(main.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(main.get_ydata(), [1e-4, 1e-2, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2", "fc3"]
    assert ax.get_yscale() == "log" and len(ax.lines) == 2      # data + reference


def test_layer_profile_zeros_and_nonfinite(ax):
    plots.layer_profile([1e-3, 0.0, np.nan, np.inf, 1.0], ax)
    y = np.asarray(ax.lines[0].get_ydata(), dtype=float)
    assert y[1] > 0                                   # zero clipped to a positive floor
    assert np.isnan(y[2:4]).all()                     # non-finite not on the line...
    marks = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(marks) == 2                            # ...but marked (clipped, non-finite)
    text = " ".join(_texts(ax))
    assert "clipped" in text and "layer 2" in text and "non-finite" in text and "layer 3" in text


def test_layer_profile_all_nan_still_draws(ax):
    plots.layer_profile([np.nan, np.nan], ax)
    assert ax.texts and [c for c in ax.collections if isinstance(c, PathCollection)]
    with pytest.raises(ValueError, match="values"):
        plots.layer_profile([], ax)
    with pytest.raises(ValueError, match="reference"):
        plots.layer_profile([1.0, 2.0], ax, reference=[1.0, 2.0, 3.0])


# ----------------------------------------------------------------------- histograms
def test_histograms_ridge(ax):
    rng = np.random.default_rng(0)
    acts = {f"act{i}": np.tanh(rng.normal(0, i, 500)) for i in range(1, 5)}
    assert plots.histograms(acts, ax, bins=20) is ax
    patches = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(patches) == 4
    for p in patches:                                 # shared range -1..1, 20 bins
        edges = p.get_data().edges
        assert len(edges) == 21 and edges[0] >= -1 and edges[-1] <= 1
    assert [t.get_text() for t in ax.get_yticklabels()] == ["act4", "act3", "act2", "act1"]


def test_histograms_small_multiples_and_nonfinite():
    fig, axes = plt.subplots(3, 1)
    try:
        acts = {"a": np.array([0.0, 1.0, np.nan]), "b": np.array([]), "c": np.ones(4)}
        assert plots.histograms(acts, axes) is axes
        for a in axes:
            assert len([p for p in a.patches if isinstance(p, StepPatch)]) == 1
        assert "non-finite" in axes[0].get_title() and "empty" in axes[1].get_title()
        with pytest.raises(ValueError, match="one Axes per layer"):
            plots.histograms(acts, axes[:2])
    finally:
        plt.close(fig)


# -------------------------------------------------------------------- trajectory_2d
def test_trajectory_2d_cuts_diverged_path(ax):
    s = surfaces.get("ravine")
    ok = np.array([[1.0, 1.0], [0.5, 0.5], [0.2, 0.1]])
    bad = np.array([[1.0, 1.0], [2.0, -2.0], [np.inf, 5.0], [np.nan, np.nan]])
    out = plots.trajectory_2d(s.f, {"ok": ok, "bad": bad}, ax, xlim=(-3, 3), ylim=(-3, 3))
    assert out is ax
    assert [len(l.get_xdata()) for l in ax.lines] == [3, 2]
    assert any("bad: diverged at step 2" in t for t in _texts(ax))
    assert ax.get_xlim() == (-3, 3)


def test_trajectory_2d_accepts_surfaces_trajectory(ax):
    """A diverging surfaces.run trajectory is cut at its diverged_at; the x stays in view."""
    s = surfaces.get("ravine")
    from companion.optim import sgd_update

    traj = surfaces.run(s, sgd_update, steps=40, lr=0.6)
    assert traj.diverged_at is not None
    plots.trajectory_2d(s.f, {"lr=0.6": traj}, ax, xlim=s.xlim, ylim=s.ylim, levels=10)
    assert len(ax.lines[0].get_xdata()) == traj.diverged_at
    assert any(f"diverged at step {traj.diverged_at}" in t for t in _texts(ax))
    (x, y), = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
    assert s.xlim[0] <= x <= s.xlim[1] and s.ylim[0] <= y <= s.ylim[1]


def test_trajectory_2d_errors(ax):
    with pytest.raises(TypeError, match="f must be a callable"):
        plots.trajectory_2d(3, {}, ax, xlim=(0, 1), ylim=(0, 1))
    with pytest.raises(TypeError, match="paths"):
        plots.trajectory_2d(lambda a, b: a + b, [np.zeros((2, 2))], ax, xlim=(0, 1), ylim=(0, 1))
