"""The launch the DDP tests share: spawn ``world`` processes that each run
``worker(rank, world, port, path)`` and pickle their result to ``f"{path}.{rank}"``; join
them within a timeout (killing any still alive), and return the results in rank order."""
from __future__ import annotations

import os
import pickle
import tempfile
import time
from typing import Any, Callable

import torch.multiprocessing as mp

from companion.parallel import _free_port


def run_ranks(worker: Callable, world: int, what: str, timeout: float = 120.0) -> list[Any]:
    """Each rank's pickled result; a TimeoutError naming ``what`` after ``timeout`` s."""
    with tempfile.TemporaryDirectory(prefix="companion_ddp_") as tmp:
        path = os.path.join(tmp, "result")
        ctx = mp.start_processes(worker, args=(world, _free_port(), path), nprocs=world,
                                 join=False, daemon=True, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{what} did not finish in {timeout:g} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()
        out = []
        for rank in range(world):
            with open(f"{path}.{rank}", "rb") as f:
                out.append(pickle.load(f))
        return out
