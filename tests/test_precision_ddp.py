"""companion.precision.GradScaler under DistributedDataParallel (gloo, 2 processes).

Reference: torch.amp.GradScaler("cpu") on the same DDP setup, in the same processes. A
float32 model wrapped in DDP trains under float16 autocast, each rank on its own half of
the batch, once with our scaler and once with torch's. DDP all-reduces the gradients
before the scaler looks at them, so an overflow on one rank is an inf or NaN on both:
the two ranks must make the same decisions (scale trajectory, skipped steps) and end
with identical weights, and each of those equals torch's, bit for bit. Overflows come
from the default scale 2**16 at the start, and from one huge target on rank 0 only
at step 9. One launch of 2 spawned processes, joined (or killed) within the timeout.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from companion import precision as pr
from _ddp import run_ranks

WORLD = 2
STEPS = 12
SPIKE = 9     # the step at which rank 0 alone sees a target that overflows float16


def _net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def _batch(step: int, rank: int):
    """Rank ``rank``'s half of step ``step``'s batch (the same on every run)."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 8, generator=gen) * 2
    y = torch.randn(16, 4, generator=gen) * 2
    if step == SPIKE and rank == 0:
        y[0] = 3e4   # 2 (out - y) * scale overflows float16 in backward, on this rank only
    return x, y


def _train(rank: int, make_scaler) -> dict:
    model = nn.parallel.DistributedDataParallel(_net())
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    ran: list = []
    opt.register_step_post_hook(lambda *_: ran.append(1))
    scaler = make_scaler()
    scales, stepped, found = [], [], []
    for step in range(STEPS):
        x, y = _batch(step, rank)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        scaler.scale(F.mse_loss(out.float(), y, reduction="sum")).backward()
        before = len(ran)
        scaler.step(opt)
        stepped.append(len(ran) > before)
        found.append(getattr(scaler, "found_inf", None))
        scaler.update()
        scales.append(scaler.get_scale())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"scales": scales, "stepped": stepped, "found_inf": found, "weights": flat,
            "state": scaler.state_dict()}


def _work(rank: int, world: int) -> dict:
    """One rank's run (in a gloo process group set up by tests/_ddp.py)."""
    return {"ours": _train(rank, lambda: pr.GradScaler("cpu")),
            "torch": _train(rank, lambda: torch.amp.GradScaler("cpu"))}


@pytest.fixture(scope="module")
def ddp_results():
    return run_ranks(_work, WORLD, "the DDP GradScaler run")


def test_torch_run_overflows_at_the_start_and_at_the_spike(ddp_results):
    """The setup does what the other test relies on (reference: torch's scaler): some
    steps are skipped at 2**16, later ones are taken, and the spike on rank 0 makes both
    ranks skip that step."""
    for got in ddp_results:
        stepped = got["torch"]["stepped"]
        assert not stepped[0] and any(stepped[:SPIKE]), stepped
        assert not stepped[SPIKE] and stepped[SPIKE - 1], stepped


def test_both_ranks_decide_alike_and_like_torch(ddp_results):
    """Reference: torch.amp.GradScaler on the same DDP run, and the other rank: the same
    scale after every update, the same skipped steps (our found_inf agrees), the same
    state_dict, and bit-identical final weights."""
    ours = [r["ours"] for r in ddp_results]
    ref = [r["torch"] for r in ddp_results]
    for rank in range(WORLD):
        a, b = ours[rank], ref[rank]
        assert a["scales"] == b["scales"], (rank, a["scales"], b["scales"])
        assert a["stepped"] == b["stepped"], (rank, a["stepped"], b["stepped"])
        assert a["found_inf"] == [not s for s in a["stepped"]], rank
        assert a["state"] == b["state"], rank
        assert torch.equal(a["weights"], b["weights"]), rank
    assert ours[0]["scales"] == ours[1]["scales"]
    assert ours[0]["stepped"] == ours[1]["stepped"]
    assert torch.equal(ours[0]["weights"], ours[1]["weights"])
