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

Batch norm under DDP (the normalization chapter): :func:`run_ddp_batch_norm` trains a small
batch-norm MLP on K processes with per-device statistics (``mode="local"``, plain
``BatchNorm1d``) and with statistics synchronized over the processes (``mode="sync"``,
:class:`SyncedBatchNorm1d`); :func:`run_single_batch_norm` is the one-process reference (full
batch, or gradient accumulation over K micro-batches).

Example::

    from companion.parallel import run_ddp, run_single
    cfg = dict(clip_mode="after_reduce", max_norm=0.05, steps=5)
    ddp, ref = run_ddp(cfg), run_single(cfg)
    abs(ddp["losses"] - ref["losses"]).max()          # ~1e-16 (float64)
"""
from __future__ import annotations

import contextlib
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

from . import _check
from . import clip as cc
from . import data, nets
from . import optim as co

__all__ = ["CLIP_MODES", "OPTIMIZERS", "DEFAULT_CONFIG", "check_config", "run_ddp",
           "run_ddp_many", "run_single", "ddp_train_worker", "BN_MODES", "BN_DEFAULT_CONFIG",
           "SyncedBatchNorm1d", "check_bn_config", "run_ddp_batch_norm",
           "run_single_batch_norm", "ddp_batch_norm_worker"]

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
    """``DEFAULT_CONFIG`` updated with ``config``, checked.

    Every key's type and value: ``clip_mode`` one of :data:`CLIP_MODES`, ``optimizer`` a
    key of :data:`OPTIMIZERS`, ``steps``, ``n``, ``in_features``, ``width``, ``depth`` ints
    >= 1, ``seed`` an int in [0, 2**64 - 1], ``lr`` and ``max_norm`` finite numbers > 0
    (``max_norm`` even for ``clip_mode="none"``); ``n`` divisible by ``world_size`` (the
    shards must be equal for DDP's average to be the full-batch mean).

    Returns:
        The full config (a new dict, ints as ``int``, reals as ``float``).

    Raises:
        TypeError: ``config`` not a dict (a mapping), a key of the wrong type (the message
            names it, e.g. ``config['steps']``); ``world_size`` not an int.
        ValueError: unknown keys (named, with the valid ones), a key with a bad value,
            ``n`` not divisible by ``world_size``, ``world_size`` < 1.
    """
    world_size = _check.integer("world_size", world_size, minimum=1)
    return _check_config(config, world_size, "config")


def _check_config(config: Any, world_size: int, name: str) -> dict:
    """:func:`check_config` of one config, its messages naming it ``name`` (``config``,
    ``configs[2]``)."""
    _check.mapping(name, config, nonempty=False)
    unknown = [k for k in config if k not in DEFAULT_CONFIG]
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(unknown, key=repr)}; valid: "
                         f"{list(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **config}
    key = lambda k: f"{name}[{k!r}]"                                     # noqa: E731
    _check.choice(key("clip_mode"), cfg["clip_mode"], CLIP_MODES)
    _check.choice(key("optimizer"), cfg["optimizer"], OPTIMIZERS)
    for k in ("steps", "n", "in_features", "width", "depth"):
        cfg[k] = _check.integer(key(k), cfg[k], minimum=1)
    cfg["seed"] = _check.seed(cfg["seed"], key("seed"))
    for k in ("lr", "max_norm"):
        cfg[k] = _check.positive(key(k), cfg[k])
    if cfg["n"] % world_size:
        raise ValueError(f"{key('n')} must be divisible by world_size={world_size} (equal "
                         f"shards), got n={cfg['n']}")
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

    Raises:
        TypeError, ValueError: a bad ``config`` (see :func:`check_config`).
    """
    cfg = check_config(config)
    net, x, y = _problem(cfg)
    return _train(cfg, net, x, y, world_size=1)


def _check_worker(rank: Any, world_size: Any, port: Any) -> tuple[int, int, int]:
    """A worker's rank, world size and port, checked (rank in [0, world_size))."""
    rank = _check.integer("rank", rank, minimum=0)
    world_size = _check.integer("world_size", world_size, minimum=1)
    if rank >= world_size:
        raise ValueError(f"rank must be an int in [0, {world_size - 1}] (world_size="
                         f"{world_size}), got {rank}")
    return rank, world_size, _check.integer("port", port, minimum=1, maximum=65535)


def _check_result_path(result_path: Any) -> None:
    """A non-empty path in a folder that exists (where rank 0 will write)."""
    _check.string("result_path", result_path, nonempty=True)
    folder = os.path.dirname(os.path.abspath(result_path))
    if not os.path.isdir(folder):
        raise ValueError(f"result_path must be in an existing folder, got {result_path!r} "
                         f"({folder} does not exist)")


@contextlib.contextmanager
def _gloo_group(rank: int, world_size: int, port: int):
    """Join the gloo group at 127.0.0.1:port for the block; always leave it."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # K processes share the cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _save_on_rank0(rank: int, results: Any, result_path: str) -> None:
    """Rank 0 pickles the results (to a temporary name, then renamed: never half a file)."""
    if rank == 0:
        with open(result_path + ".tmp", "wb") as f:
            pickle.dump(results, f)
        os.replace(result_path + ".tmp", result_path)


def ddp_train_worker(rank: int, world_size: int, port: int,
                     config: Union[dict, Sequence[dict]], result_path: str) -> None:
    """Process ``rank`` of a DDP run (top level, so ``spawn`` can pickle it).

    Joins the ``gloo`` group at ``MASTER_ADDR=127.0.0.1:port``, then for each config (a dict
    or a list of them, trained one after the other in the same group: one launch, many
    runs) wraps a fresh model in DDP and trains it on rows
    ``[rank n / K, (rank + 1) n / K)``. Rank 0 pickles the list of results to
    ``result_path`` (written to a temporary name, then renamed: never half a file).

    Every argument is checked before anything happens (no environment variable set, no
    process group joined), so a bad call fails at once instead of waiting for peers.

    Raises:
        TypeError: ``rank``, ``world_size`` or ``port`` not an int; ``config`` neither a
            dict nor a list of dicts, or a key of the wrong type; ``result_path`` not a str.
        ValueError: ``world_size`` < 1; ``rank`` outside ``[0, world_size)``; ``port``
            outside [1, 65535]; an empty list of configs, or a bad config (see
            :func:`check_config`); ``result_path`` empty or in a folder that does not exist.
    """
    rank, world_size, port = _check_worker(rank, world_size, port)
    if isinstance(config, dict):
        configs = [_check_config(config, world_size, "config")]
    else:
        items = _check.sequence("config", config, what="a dict or a list of dicts")
        configs = [_check_config(c, world_size, f"config[{i}]") for i, c in enumerate(items)]
    _check_result_path(result_path)
    with _gloo_group(rank, world_size, port):
        results = []
        for cfg in configs:
            net, x, y = _problem(cfg)
            shard = slice(rank * cfg["n"] // world_size, (rank + 1) * cfg["n"] // world_size)
            model = torch.nn.parallel.DistributedDataParallel(net)  # broadcasts rank 0's weights
            results.append(_train(cfg, model, x[shard], y[shard], world_size))
        _save_on_rank0(rank, results, result_path)


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
        TypeError: ``configs`` not a list (or tuple) of dicts, a key of the wrong type
            (named, e.g. ``configs[1]['lr']``); ``world_size`` or ``timeout`` not a number.
        ValueError: ``configs`` empty, a bad key or value (see :func:`check_config`);
            ``world_size`` < 1; ``timeout`` not > 0 and finite. All checked before any
            process is spawned.
    """
    items = _check.sequence("configs", configs, what="a list of config dicts")
    world_size = _check.integer("world_size", world_size, minimum=1)
    timeout = _check.positive("timeout", timeout)
    cfgs = [_check_config(c, world_size, f"configs[{i}]") for i, c in enumerate(items)]
    return _launch(cfgs, world_size, timeout)


def _spawn(worker, args: tuple, world_size: int, timeout: float, what: str):
    """Spawn ``worker(rank, world_size, port, *args, result_path)`` on ``world_size``
    processes, always join (or terminate, then kill) them, and return rank 0's pickle."""
    with tempfile.TemporaryDirectory(prefix="companion_ddp_") as tmp:
        path = os.path.join(tmp, "results.pkl")
        deadline = time.monotonic() + timeout
        ctx = mp.start_processes(worker, args=(world_size, _free_port(), *args, path),
                                 nprocs=world_size, join=False, daemon=True,
                                 start_method="spawn")
        try:
            while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the DDP run ({world_size} processes, {what}) did not "
                                       f"finish within timeout={timeout} s")
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


def _launch(cfgs: list[dict], world_size: int, timeout: float) -> list[dict]:
    """Spawn the workers for checked configs and collect rank 0's results."""
    return _spawn(ddp_train_worker, (cfgs,), world_size, timeout, f"{len(cfgs)} configs")


def run_ddp(config: dict, world_size: int = 2, timeout: float = 60.0) -> dict:
    """Train one config under DDP (see :func:`run_ddp_many` for the result).

    Raises:
        TypeError, ValueError: a bad ``config`` (see :func:`check_config`), ``world_size``
            or ``timeout`` (as :func:`run_ddp_many`), before any process is spawned.
        TimeoutError, torch.multiprocessing.ProcessRaisedException: as :func:`run_ddp_many`.
    """
    _check.mapping("config", config, nonempty=False)
    world_size = _check.integer("world_size", world_size, minimum=1)
    timeout = _check.positive("timeout", timeout)
    return _launch([_check_config(config, world_size, "config")], world_size, timeout)[0]


# ------------------------------------------------------- batch norm under data parallelism
# Batch norm under DDP (the normalization chapter).
#
# Under DDP each process runs the model on its own shard, so a ``BatchNorm1d`` normalizes
# with the mean and variance of that shard ("per-device" statistics, ``mode="local"``), not
# of the whole batch; the gradients are averaged afterwards, but the forward pass the
# gradient was taken through is not the full-batch one. ``torch.nn.SyncBatchNorm`` computes
# the statistics over all processes, but in torch 2.13 it refuses CPU tensors ("SyncBatchNorm
# expected input tensor to be on GPU or XPU ..."), so ``mode="sync"`` uses
# :class:`SyncedBatchNorm1d` below: the same computation, with the per-channel sums
# all-reduced by a differentiable all-reduce (whose backward all-reduces the gradient, as
# SyncBatchNorm's hand-written backward does).
BN_MODES = ("local", "sync")
#: every key a batch-norm config may have. The model is ``nets.mlp(in_features, 1, width,
#: depth, activation="relu", weight_scale=sqrt(2), norm=<batch norm>, seed=seed)`` in
#: float64, the data ``data.teacher_regression(n, in_features, seed=seed)``, the loss the
#: mean squared error, the optimizer SGD.
BN_DEFAULT_CONFIG: dict[str, Any] = dict(steps=5, lr=0.1, seed=0, n=16, in_features=4,
                                         width=8, depth=2)


class _AllReduceSum(torch.autograd.Function):
    """The sum over processes, differentiable: the gradient of a sum is the sum of the
    gradients, so the backward all-reduces too."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncedBatchNorm1d(torch.nn.BatchNorm1d):
    r"""``BatchNorm1d`` whose training statistics are those of the whole batch across processes.

    In training, with a process group of :math:`K > 1` processes initialized, the mean and
    the biased variance of each channel are computed over all :math:`N = \sum_k n_k` rows
    of all processes (two differentiable all-reduces: :math:`\sum x`, then
    :math:`\sum (x-\mu)^2`), and the running estimates are updated with them (variance
    times :math:`N/(N-1)`), as ``torch.nn.SyncBatchNorm`` does on GPUs. Otherwise (eval
    mode, or no process group) it is ``torch.nn.BatchNorm1d``. Takes (N, C) input only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: a floating (N, C) tensor; a process may hold N = 0 rows."""
        x = _check.tensor("x", x, ndim=2, nonempty=False)
        if x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (N, {self.num_features}), got "
                             f"{tuple(x.shape)}")
        if self.affine:
            _check.same_dtype("x", x, self.weight.dtype, "the layer")
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        count = all_reduce(torch.tensor(float(x.shape[0]), dtype=x.dtype))
        mean = all_reduce(x.sum(0)) / count
        var = all_reduce(((x - mean) ** 2).sum(0)) / count        # biased, over all N rows
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / (count - 1))
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def check_bn_config(config: dict | None = None, world_size: int = 1) -> dict:
    """``BN_DEFAULT_CONFIG`` updated with ``config`` (``None``: the defaults), checked:
    ``steps``, ``n``, ``in_features``, ``width``, ``depth`` ints >= 1, ``lr`` > 0, ``seed``
    an int, ``n`` divisible by ``world_size`` with at least 2 rows per process.

    Raises:
        TypeError: ``config`` not a dict, a key of the wrong type.
        ValueError: unknown keys, a bad value, ``n`` not divisible by ``world_size`` or
            fewer than 2 rows per shard (batch norm needs 2 values per channel).
    """
    world_size = _check.integer("world_size", world_size, minimum=1)
    return _check_bn_config(config, world_size, "world_size")


def _check_bn_config(config: dict | None, parts: int, parts_name: str) -> dict:
    """:func:`check_bn_config` with ``n`` split into ``parts`` shards, named ``parts_name``
    in the error (``world_size`` processes, or ``micro_batches``)."""
    config = {} if config is None else config
    _check.mapping("config", config, nonempty=False)
    unknown = [k for k in config if k not in BN_DEFAULT_CONFIG]
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown, key=repr)}; valid: "
                         f"{list(BN_DEFAULT_CONFIG)}")
    cfg = {**BN_DEFAULT_CONFIG, **config}
    for k in ("steps", "n", "in_features", "width", "depth"):
        cfg[k] = _check.integer(f"config[{k!r}]", cfg[k], minimum=1)
    cfg["seed"] = _check.seed(cfg["seed"], "config['seed']")
    cfg["lr"] = _check.positive("config['lr']", cfg["lr"])
    if cfg["n"] % parts or cfg["n"] // parts < 2:
        raise ValueError(f"config['n'] must be divisible by {parts_name}={parts} with at "
                         f"least 2 rows per shard, got n={cfg['n']}")
    return cfg


def _bn_problem(cfg: dict, synced: bool):
    x, y = data.teacher_regression(cfg["n"], cfg["in_features"], seed=cfg["seed"])
    norm = SyncedBatchNorm1d if synced else torch.nn.BatchNorm1d
    net = nets.mlp(cfg["in_features"], 1, cfg["width"], cfg["depth"], activation="relu",
                   weight_scale=2 ** 0.5, norm=norm, seed=cfg["seed"])
    return net.double(), x.double(), y.double()


def _bn_train(cfg: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              world_size: int, micro_batches: int = 1) -> dict:
    """SGD on (x, y): this process's shard under DDP, else the full batch split into
    ``micro_batches`` equal parts whose gradients are averaged (gradient accumulation)."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    losses = []
    for _ in range(cfg["steps"]):
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), dtype=x.dtype)
        for xm, ym in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
            part = F.mse_loss(model(xm), ym) / micro_batches    # accumulate the mean
            part.backward()
            loss += part.detach()
        opt.step()
        if world_size > 1:
            dist.all_reduce(loss)
            loss /= world_size
        losses.append(loss.item())
    net = model.module if world_size > 1 else model
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    return dict(losses=np.array(losses),
                params=[p.detach().numpy().copy() for p in net.parameters()],
                running_mean=[b.running_mean.numpy().copy() for b in bns],
                running_var=[b.running_var.numpy().copy() for b in bns], config=dict(cfg))


def run_single_batch_norm(config: dict | None = None, *, micro_batches: int = 1) -> dict:
    """The batch-norm training of :func:`run_ddp_batch_norm` in this process.

    ``micro_batches=1``: full-batch batch norm, the reference. ``micro_batches=K``:
    gradient accumulation over K equal micro-batches, each normalized with its own
    statistics (so it equals ``mode="local"`` on K processes, not the full batch).

    Returns:
        ``losses`` (steps,) -- the loss before each step (the mean over micro-batches);
        ``params``, ``running_mean``, ``running_var`` -- final values (numpy arrays, one
        per parameter / per batch-norm layer); ``config``.

    Raises:
        TypeError, ValueError: a bad config (see :func:`check_bn_config`) or
            ``micro_batches`` (an int >= 1 dividing ``n`` with >= 2 rows each).
    """
    micro_batches = _check.integer("micro_batches", micro_batches, minimum=1)
    cfg = _check_bn_config(config, micro_batches, "micro_batches")
    net, x, y = _bn_problem(cfg, synced=False)
    return _bn_train(cfg, net, x, y, world_size=1, micro_batches=micro_batches)


def ddp_batch_norm_worker(rank: int, world_size: int, port: int, config: dict,
                          modes: Sequence[str], result_path: str) -> None:
    """Process ``rank`` of :func:`run_ddp_batch_norm` (top level, so ``spawn`` can pickle it).

    Joins the ``gloo`` group, then for each mode wraps a fresh model in DDP and trains it
    on rows ``[rank n / K, (rank + 1) n / K)``; rank 0 pickles ``{mode: result}`` to
    ``result_path`` (via a temporary name).

    Every argument is checked before anything happens, as in :func:`ddp_train_worker`.

    Raises:
        TypeError, ValueError: ``rank``, ``world_size``, ``port`` or ``result_path`` as in
            :func:`ddp_train_worker`; a bad ``config`` (see :func:`check_bn_config`); an
            unknown, repeated or empty list of ``modes``.
    """
    rank, world_size, port = _check_worker(rank, world_size, port)
    config = check_bn_config(config, world_size)
    modes = _check_bn_modes(modes)
    _check_result_path(result_path)
    with _gloo_group(rank, world_size, port):
        results = {}
        for mode in modes:
            net, x, y = _bn_problem(config, synced=mode == "sync")
            shard = slice(rank * config["n"] // world_size,
                          (rank + 1) * config["n"] // world_size)
            # DDP broadcasts rank 0's buffers (running estimates) before each forward
            model = torch.nn.parallel.DistributedDataParallel(net)
            results[mode] = _bn_train(config, model, x[shard], y[shard], world_size)
        _save_on_rank0(rank, results, result_path)


def run_ddp_batch_norm(config: dict | None = None, *, modes: Sequence[str] = BN_MODES,
                       world_size: int = 2, timeout: float = 60.0) -> dict[str, dict]:
    """Train a small ReLU MLP with batch norm under DDP on ``world_size`` CPU processes.

    One launch trains one model per mode: ``"local"`` -- ``torch.nn.BatchNorm1d``, each
    process normalizes with its own shard's statistics (what plain DDP does);
    ``"sync"`` -- :class:`SyncedBatchNorm1d`, statistics over all processes (what
    ``torch.nn.SyncBatchNorm`` does on GPUs). ``"sync"`` equals
    :func:`run_single_batch_norm` (full batch) step by step; ``"local"`` equals
    ``run_single_batch_norm(config, micro_batches=world_size)`` (tests/test_parallel.py).
    Call it under ``if __name__ == "__main__":`` in a script.

    Returns:
        ``{mode: result}``, each result as :func:`run_single_batch_norm`'s (losses: the
        mean over the processes of their shard losses; the rest: rank 0's).

    Raises:
        TypeError, ValueError: a bad config (see :func:`check_bn_config`), an unknown or
            repeated mode, ``world_size`` < 1, a bad ``timeout``: all before spawning.
        TimeoutError, torch.multiprocessing.ProcessRaisedException: as :func:`run_ddp_many`.
    """
    world_size = _check.integer("world_size", world_size, minimum=1)
    cfg = check_bn_config(config, world_size)
    items = _check_bn_modes(modes)
    timeout = _check.positive("timeout", timeout)
    return _spawn(ddp_batch_norm_worker, (cfg, items), world_size, timeout,
                  f"{len(items)} modes")


def _check_bn_modes(modes: Sequence[str]) -> list[str]:
    items = list(_check.sequence("modes", modes, what="a non-empty list of modes"))
    if not items:
        raise ValueError("modes must be a non-empty list of modes, got []")
    for i, mode in enumerate(items):
        _check.choice(f"modes[{i}]", mode, BN_MODES)
    if len(set(items)) != len(items):
        raise ValueError(f"modes must not repeat a mode, got {items}")
    return items
