"""Rows for companion.activations: the lookup and each Activation's f and f'."""
from __future__ import annotations

import math

import numpy as np
import torch

from badcalls import Row, bad_choice
from companion import activations


def _bad_x() -> list:
    """Nothing numeric, complex or boolean, a ragged list."""
    return [None, "x", np.ones(3, dtype=np.complex128), torch.ones(3, dtype=torch.complex64),
            torch.ones(3, dtype=torch.bool), np.ones(3, dtype=bool), np.array([object()]),
            [[1.0], [1.0, 2.0]], True]


_ACCEPTED_X = ([[1.0, 2.0], np.arange(3), torch.arange(3), 0.5, np.array([math.nan, 1.0]),
                np.empty((0, 2)), torch.tensor([math.inf])],
               "elementwise, like a numpy ufunc: numbers, lists and int arrays are promoted "
               "to float (documented, tested in test_activations), any shape; NaN in gives "
               "NaN out, as torch's modules")

ROWS = [
    Row(activations.Activation,
        reason="a record of one activation (name, formulas, bound, module factory), built "
               "by the module itself; readers get one from get(name)",
        run_good=False),
    Row(activations.names, reason="takes no arguments"),
    Row(activations.get, good=dict(name="gelu"), bad=dict(name=bad_choice("Relu", "ReLU"))),
    Row(activations.derivative_bound, good=dict(name="sigmoid"),
        bad=dict(name=bad_choice("swish"))),
    Row(activations.Activation.forward,
        call=lambda **kw: activations.get("tanh").forward(**kw),
        good=dict(x=np.linspace(-1.0, 1.0, 5)), bad=dict(x=_bad_x()),
        accepted=dict(x=_ACCEPTED_X)),
    Row(activations.Activation.derivative,
        call=lambda **kw: activations.get("selu").derivative(**kw),
        good=dict(x=torch.linspace(-1.0, 1.0, 5)), bad=dict(x=_bad_x()),
        accepted=dict(x=_ACCEPTED_X)),
]
