"""Rows for companion.report: Report (built from a real diagnose() measurement) and its
plot; Finding and Symptom are records."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from badcalls import Row  # noqa: E402
from companion import nets, report  # noqa: E402
from companion.diagnose import diagnose  # noqa: E402


def _diagnosed() -> report.Report:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    return diagnose(nets.mlp(4, 2, 8, 2, seed=0), x, torch.zeros(8, 2))


_M = _diagnosed()._m
_BAD_FINDING = report.Finding("vanishing", "fatal", (), "", "", "")

ROWS = [
    Row(report.Finding, reason="a record diagnose fills in from SYMPTOMS: its fields are "
                               "checked where a Report is built", run_good=False),
    Row(report.Symptom, reason="a record of the SYMPTOMS table, written in the module",
        run_good=False),
    Row(report.Report,
        good=dict(measurement=_M, findings=[], loss=0.3, baseline=0.2, losses=np.zeros(3),
                  steps=[0, 10]),
        bad=dict(measurement=[None, "m", 3, _diagnosed()],
                 findings=[None, "f", [3], [_BAD_FINDING], 3],
                 loss=["0.3", True, [0.3]],
                 baseline=["0.1", True, -1.0, math.inf, math.nan],
                 losses=["x", [0.1, 0.2], torch.zeros(3), np.zeros((2, 2)),
                         np.zeros(3, dtype=complex)],
                 steps=[None, "0", [0.5], [-1], [True], 3]),
        accepted=dict(loss=([None, math.nan, math.inf], "a diverged run's loss is NaN"),
                      losses=([None, np.zeros(0)], "diagnose logs none; watch may log none"),
                      steps=([(), range(3)], "no measured steps, or any sequence of them"))),
    Row(report.Report.plot, call=lambda **kw: _diagnosed().plot(**kw), good=dict(fig=None),
        bad=dict(fig=["fig", 3, plt.figure().add_subplot(), plt, np.zeros(2)]),
        accepted=dict(fig=([Figure(), Figure().subfigures(1, 2)[0]],
                           "a Figure or a SubFigure to draw into"))),
]
plt.close("all")
