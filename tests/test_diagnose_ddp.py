"""diagnose and watch on a model wrapped in DistributedDataParallel (gloo, 2 processes).

Reference: the same model diagnosed in this process on the full batch. Each rank holds
half the batch; DDP averages the two halves' gradients, which for a mean loss over equal
halves is the full batch's gradient -- so one SGD step's update ratio per layer under
DDP equals the single-process one (to 1e-5), while the backward signal, read from each
rank's own activations, is that rank's. Also: diagnose leaves the DDP model's weights
and (None) gradients as they were on both ranks, names layers ``module.fc1`` ..., and a
watched DDP run keeps the two ranks' weights identical and gives no finding. One launch
of 2 spawned processes, joined (or killed) within the timeout.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from companion import data, nets
from companion.diagnose import diagnose, watch
from _ddp import run_ranks

WORLD = 2


def _model():
    return nets.mlp(2, 3, 32, 4, "relu", init="kaiming_normal", seed=0)


def _work(rank: int, world: int) -> dict:
    """One rank's run (in a gloo process group set up by tests/_ddp.py)."""
    model = torch.nn.parallel.DistributedDataParallel(_model())
    x, y = data.spirals(300, 3, seed=0)
    x, y = x[rank * 150:(rank + 1) * 150], y[rank * 150:(rank + 1) * 150]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    report = diagnose(model, x, y, optimizer=opt)
    untouched = (all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
                 and all(p.grad is None for p in model.parameters()))
    with watch(model, opt, every=2) as w:
        for _ in range(6):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.log(loss)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    result = {"findings": [str(f) for f in report.findings],
              "rows": {r["name"]: r for r in report.rows if r["kind"] == "layer"},
              "untouched": untouched, "synced": torch.equal(gathered[0], gathered[1]),
              "watch": [str(f) for f in w.report().findings]}
    return result


@pytest.fixture(scope="module")
def ddp_results():
    return run_ranks(_work, WORLD, "the DDP diagnose run")


def test_diagnose_under_ddp_matches_the_full_batch(ddp_results):
    x, y = data.spirals(300, 3, seed=0)
    model = _model()
    single = {r["name"]: r for r in diagnose(model, x, y, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.05)).rows if r["kind"] == "layer"}
    for rank, got in enumerate(ddp_results):
        assert got["findings"] == [] and got["watch"] == [], got
        assert got["untouched"] and got["synced"], rank
        assert list(got["rows"]) == [f"module.{n}" for n in single]
        for name, row in single.items():
            assert got["rows"][f"module.{name}"]["update_ratio"] == pytest.approx(
                row["update_ratio"], rel=1e-5), (rank, name)
