"""The launch the DDP tests share: ``run_ranks(work, world, what)`` spawns ``world``
processes, each of which joins a gloo process group, runs ``work(rank, world)`` (a
module-level function, so that it pickles) and saves what it returns; the processes are
joined within a timeout (any still alive are killed) and the results returned in rank
order."""
from __future__ import annotations

import os
import pickle
import tempfile
import time
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from companion.parallel import _free_port


def _rank_main(rank: int, world: int, port: int, path: str, work: Callable) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        result = work(rank, world)
        with open(f"{path}.{rank}", "wb") as f:
            pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


def run_ranks(work: Callable[[int, int], Any], world: int, what: str,
              timeout: float = 120.0) -> list[Any]:
    """Each rank's ``work(rank, world)``; a TimeoutError naming ``what`` after ``timeout`` s."""
    with tempfile.TemporaryDirectory(prefix="companion_ddp_") as tmp:
        path = os.path.join(tmp, "result")
        ctx = mp.start_processes(_rank_main, args=(world, _free_port(), path, work),
                                 nprocs=world, join=False, daemon=True, start_method="spawn")
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
