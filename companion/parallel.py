r"""Gradient clipping under data parallelism: clip after the all-reduce, not before.

With :class:`torch.nn.parallel.DistributedDataParallel` (DDP) on :math:`K` processes, each
process :math:`k` computes the gradient :math:`g^{(k)}` of the mean loss on its own shard of
the batch, and DDP's all-reduce replaces every :math:`g^{(k)}` by their average

.. math::

    \bar g = \frac1K \sum_k g^{(k)} = \nabla_\theta \frac1K \sum_k \ell^{(k)},

which is the full-batch gradient of the mean loss when the shards have equal sizes. Then:

* ``clip_mode="after_reduce"`` -- ``clip_grad_norm_`` after ``backward()`` (DDP has reduced
  by then) clips :math:`\bar g` by its own norm :math:`\lVert\bar g\rVert`: every process
  takes the step that single-process training on the full batch takes;
* ``clip_mode="before_reduce"`` -- each process clips its *local* :math:`g^{(k)}` by
  :math:`\lVert g^{(k)}\rVert`, then the clipped gradients are averaged:
  :math:`\frac1K\sum_k g^{(k)} \min(1, \tau / \lVert g^{(k)}\rVert)`, which is not
  :math:`\bar g \min(1, \tau/\lVert\bar g\rVert)`. Done with ``model.no_sync()`` (no
  all-reduce during ``backward()``), ``clip_grad_norm_`` on the local gradients, then one
  ``torch.distributed.all_reduce`` (sum) per gradient divided by K. (A DDP comm hook sees
  one bucket at a time, so it cannot know the local norm over all buckets.)
* ``clip_mode="none"`` -- no clipping.

:func:`run_ddp` trains on K processes (``gloo`` backend, CPU, spawned), :func:`run_single`
trains the same model on the full batch in this process; tests/test_parallel.py checks that
"after_reduce" equals :func:`run_single` step by step and that "before_reduce" does not.

Example::

    from companion.parallel import run_ddp, run_single
    cfg = dict(clip_mode="after_reduce", max_norm=0.05, steps=5)
    ddp, ref = run_ddp(cfg), run_single(cfg)
    abs(ddp["losses"] - ref["losses"]).max()          # ~1e-16 (float64)
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import pickle
import socket
import tempfile
import time
from datetime import timedelta
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from . import clip as cc
from . import data, nets
from . import optim as co

__all__ = ["CLIP_MODES", "OPTIMIZERS", "DEFAULT_CONFIG", "check_config", "run_ddp",
           "run_ddp_many", "run_single", "ddp_train_worker"]

CLIP_MODES = ("none", "after_reduce", "before_reduce")
OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "companion_adam": lambda params, lr: co.Adam(params, lr=lr),
    "torch_adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
#: every key a config may have; a config gives any subset. The model is
#: ``nets.mlp(in_features, 1, width, depth, seed=seed)`` in float64, the data
#: ``data.teacher_regression(n, in_features, seed=seed)``, the loss the mean squared error.
DEFAULT_CONFIG: dict[str, Any] = dict(clip_mode="after_reduce", optimizer="sgd", steps=5,
                                      lr=0.1, max_norm=0.1, seed=0, n=32, in_features=4,
                                      width=8, depth=2)


def check_config(config: dict, world_size: int = 1) -> dict:
    """``DEFAULT_CONFIG`` updated with ``config``, checked; raises ValueError/TypeError
    naming the key and the value (unknown keys, modes, optimizers; ``n`` not divisible by
    ``world_size``: the halves must be equal for DDP's average to be the full-batch mean)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {list(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **config}
    if cfg["clip_mode"] not in CLIP_MODES:
        raise ValueError(f"clip_mode must be one of {list(CLIP_MODES)}, got {cfg['clip_mode']!r}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {cfg['optimizer']!r}")
    for key in ("steps", "seed", "n", "in_features", "width", "depth"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < (key != "seed"):
            raise ValueError(f"{key} must be an int >= {int(key != 'seed')}, got {v!r}")
    for key in ("lr", "max_norm"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
            raise ValueError(f"{key} must be positive and finite, got {v!r}")
    if cfg["n"] % world_size:
        raise ValueError(f"n must be divisible by world_size={world_size} (equal shards), "
                         f"got n={cfg['n']}")
    return cfg


# ------------------------------------------------------------------------ the training
def _problem(cfg: dict):
    x, y = data.teacher_regression(cfg["n"], cfg["in_features"], seed=cfg["seed"])
    net = nets.mlp(cfg["in_features"], 1, cfg["width"], cfg["depth"], seed=cfg["seed"])
    return net.double(), x.double(), y.double()


def _train(cfg: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
           world_size: int) -> dict:
    """``cfg["steps"]`` steps on (x, y) -- this process's shard under DDP (world_size > 1),
    the full batch otherwise. Returns losses (the mean over all shards), the norm each
    step's clip saw before clipping, and the final parameters."""
    params = list(model.parameters())
    opt = OPTIMIZERS[cfg["optimizer"]](params, cfg["lr"])
    mode, tau = cfg["clip_mode"], cfg["max_norm"]
    losses, norms = [], []
    local = mode == "before_reduce" and world_size > 1
    for _ in range(cfg["steps"]):
        opt.zero_grad(set_to_none=True)
        # forward and backward both inside no_sync, else DDP still reduces in backward
        with model.no_sync() if local else contextlib.nullcontext():
            loss = F.mse_loss(model(x), y)                      # mean over this shard
            loss.backward()                                     # DDP: grads averaged here
        if local:
            norm = cc.clip_grad_norm_(params, tau)              # 1. clip g_k by ||g_k||
            for p in params:                                    # 2. average the clipped
                dist.all_reduce(p.grad)
                p.grad.div_(world_size)
        elif mode == "none":
            norm = cc.get_total_norm([p.grad for p in params])
        else:
            norm = cc.clip_grad_norm_(params, tau)              # clip g_bar by ||g_bar||
        opt.step()
        loss = loss.detach().clone()
        if world_size > 1:                                      # mean of the shard means
            dist.all_reduce(loss)
            loss /= world_size
        losses.append(loss.item())
        norms.append(norm.item())
    return dict(losses=np.array(losses), grad_norms=np.array(norms),
                params=[p.detach().numpy().copy() for p in params], config=dict(cfg))


def run_single(config: dict) -> dict:
    """The same training in this process on the full batch: the reference for DDP.

    "after_reduce" and "before_reduce" both clip the full-batch gradient here (with one
    process there is nothing to reduce). Returns the dict of :func:`run_ddp`.
    """
    cfg = check_config(config)
    net, x, y = _problem(cfg)
    return _train(cfg, net, x, y, world_size=1)


def ddp_train_worker(rank: int, world_size: int, port: int,
                     config: Union[dict, Sequence[dict]], result_path: str) -> None:
    """Process ``rank`` of a DDP run (top level, so ``spawn`` can pickle it).

    Joins the ``gloo`` group at ``MASTER_ADDR=127.0.0.1:port``, then for each config (a dict
    or a list of them, trained one after the other in the same group: one launch, many
    runs) wraps a fresh model in DDP and trains it on rows
    ``[rank n / K, (rank + 1) n / K)``. Rank 0 pickles the list of results to
    ``result_path`` (written to a temporary name, then renamed: never half a file).
    """
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # K processes share the cores
    configs = [config] if isinstance(config, dict) else list(config)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        results = []
        for cfg in configs:
            net, x, y = _problem(cfg)
            shard = slice(rank * cfg["n"] // world_size, (rank + 1) * cfg["n"] // world_size)
            model = torch.nn.parallel.DistributedDataParallel(net)  # broadcasts rank 0's weights
            results.append(_train(cfg, model, x[shard], y[shard], world_size))
        if rank == 0:
            with open(result_path + ".tmp", "wb") as f:
                pickle.dump(results, f)
            os.replace(result_path + ".tmp", result_path)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------- the launcher
def _free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp_many(configs: Sequence[dict], world_size: int = 2, timeout: float = 60.0) -> list[dict]:
    """Train every config under DDP on ``world_size`` spawned CPU processes, in one launch.

    The processes are always joined, or terminated (then killed) if still alive -- after
    an error, a timeout or a KeyboardInterrupt. Spawning costs a few seconds (each process
    imports torch), so put all the runs you need in one call. In a script, call it under
    ``if __name__ == "__main__":`` (``spawn`` re-imports the main module; notebooks and
    pytest need nothing).

    Returns:
        One dict per config: ``losses`` (steps,) -- the full-batch mean loss before each
        step; ``grad_norms`` (steps,) -- the 2-norm the clip saw before clipping, on rank
        0 (the averaged gradient's, or rank 0's local one for "before_reduce"); ``params``
        -- rank 0's final parameters (numpy arrays); ``config`` -- the full config.

    Raises:
        TimeoutError: not finished after ``timeout`` seconds.
        torch.multiprocessing.ProcessRaisedException: a worker raised (its traceback
            is in the message).
        ValueError, TypeError: a bad config, ``world_size`` or ``timeout``.
    """
    if (isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral)
            or world_size < 1):
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    cfgs = [check_config(c, world_size) for c in configs]
    with tempfile.TemporaryDirectory(prefix="companion_ddp_") as tmp:
        path = os.path.join(tmp, "results.pkl")
        deadline = time.monotonic() + timeout
        ctx = mp.start_processes(ddp_train_worker, args=(world_size, _free_port(), cfgs, path),
                                 nprocs=world_size, join=False, daemon=True,
                                 start_method="spawn")
        try:
            while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the DDP run ({world_size} processes, {len(cfgs)} "
                                       f"configs) did not finish within timeout={timeout} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            for p in ctx.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
        with open(path, "rb") as f:
            return pickle.load(f)


def run_ddp(config: dict, world_size: int = 2, timeout: float = 60.0) -> dict:
    """Train one config under DDP (see :func:`run_ddp_many` for the result and errors)."""
    return run_ddp_many([config], world_size, timeout)[0]
