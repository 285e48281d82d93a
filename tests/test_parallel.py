"""Tests of companion.parallel: gradient clipping under DistributedDataParallel.

References: companion.train.train on the full batch in this process (the clipped
single-process run; itself checked against torch.nn.utils.clip_grad_norm_ in
test_train.py), companion.parallel.run_single, and a hand-written "clip each half, then
average" loop with torch.nn.utils.clip_grad_norm_ for clipping before the all-reduce.
All DDP runs share ONE launch of 2 processes (a spawn costs seconds); run_ddp's own
timeout keeps the file from ever hanging, and its processes are always joined.
"""
from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import companion.optim as co
from companion.parallel import (DEFAULT_CONFIG, _problem, check_config, ddp_train_worker,
                                run_ddp, run_ddp_many, run_single)
from companion.train import train

TOL = 1e-6
BASE = dict(steps=5, lr=0.1, max_norm=0.05, n=32, in_features=4, width=8, depth=2, seed=0)
CONFIGS = {
    "none": dict(BASE, clip_mode="none"),
    "after": dict(BASE, clip_mode="after_reduce"),
    "before": dict(BASE, clip_mode="before_reduce"),
    "companion_adam": dict(BASE, clip_mode="after_reduce", optimizer="companion_adam"),
    "torch_adam": dict(BASE, clip_mode="after_reduce", optimizer="torch_adam"),
}


@pytest.fixture(scope="module")
def ddp():
    """Every DDP run of this file, in one launch; keyed like CONFIGS."""
    results = run_ddp_many(list(CONFIGS.values()), world_size=2, timeout=90.0)
    return dict(zip(CONFIGS, results))


def _close(a, b, tol=TOL):
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= tol


def _params_close(ra, rb, tol=TOL):
    return all(_close(p, q, tol) for p, q in zip(ra["params"], rb["params"]))


def _train_reference(cfg, optimizer="sgd"):
    """companion.train.train on the full batch, clip=max_norm (or None for "none")."""
    net, x, y = _problem(check_config(cfg))
    clip = None if cfg["clip_mode"] == "none" else cfg["max_norm"]
    h = train(net, x, y, steps=cfg["steps"], lr=cfg["lr"], optimizer=optimizer, clip=clip)
    return h, [p.detach().numpy() for p in net.parameters()]


@pytest.mark.parametrize("key", ["none", "after"])
def test_ddp_matches_single_process(ddp, key):
    """Reference: companion.train.train on the full batch (clip=max_norm for "after") and
    run_single: losses, pre-clip norms and final weights equal step for step to 1e-6. The
    clip is active at every step (norm > max_norm), so the test is not vacuous."""
    cfg, got = CONFIGS[key], ddp[key]
    h, params = _train_reference(cfg)
    assert _close(got["losses"], h.losses) and _close(got["grad_norms"], h.grad_norms)
    assert all(_close(p, q) for p, q in zip(got["params"], params))
    single = run_single(cfg)
    assert _close(got["losses"], single["losses"]) and _params_close(got, single)
    if key == "after":
        assert (got["grad_norms"] > cfg["max_norm"]).all() and h.clipped.all()


def test_clipping_before_reduce_is_a_different_algorithm(ddp):
    """Reference: a hand-written loop that clips each half's gradient with
    torch.nn.utils.clip_grad_norm_ and then averages them: DDP "before_reduce" equals it to
    1e-6, and differs from the full-batch clipped run (after_reduce) by far more than 1e-6."""
    cfg, got, after = CONFIGS["before"], ddp["before"], ddp["after"]
    net, x, y = _problem(check_config(cfg))
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"])
    losses, local_norms = [], []
    for _ in range(cfg["steps"]):
        summed = [torch.zeros_like(p) for p in net.parameters()]
        step_loss = 0.0
        for rank, half in enumerate((slice(0, 16), slice(16, 32))):
            opt.zero_grad()
            loss = F.mse_loss(net(x[half]), y[half])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["max_norm"])
            if rank == 0:
                local_norms.append(norm.item())
            step_loss += loss.item() / 2
            for s, p in zip(summed, net.parameters()):
                s += p.grad
        for s, p in zip(summed, net.parameters()):
            p.grad = s / 2
        opt.step()
        losses.append(step_loss)
    assert _close(got["losses"], losses) and _close(got["grad_norms"], local_norms)
    assert all(_close(p, q.detach().numpy()) for p, q in zip(got["params"], net.parameters()))
    assert got["losses"][0] == pytest.approx(after["losses"][0], abs=1e-12)  # same start
    assert np.abs(got["losses"] - after["losses"]).max() > 1e3 * TOL
    assert max(np.abs(p - q).max() for p, q in zip(got["params"], after["params"])) > 1e2 * TOL


def test_companion_adam_under_ddp(ddp):
    """Reference: companion.optim.Adam single-process (companion.train.train and
    run_single) and torch.optim.Adam under the same DDP launch: equal to 1e-6 / 1e-12."""
    got = ddp["companion_adam"]
    h, params = _train_reference(CONFIGS["companion_adam"],
                                 optimizer=lambda ps, lr: co.Adam(ps, lr=lr))
    assert _close(got["losses"], h.losses)
    assert all(_close(p, q) for p, q in zip(got["params"], params))
    assert _params_close(got, run_single(CONFIGS["companion_adam"]))
    assert _close(got["losses"], ddp["torch_adam"]["losses"], 1e-12)
    assert _params_close(got, ddp["torch_adam"], 1e-12)


def test_timeout_raises_and_processes_are_gone():
    """A run that cannot finish in 0.5 s raises TimeoutError within a few seconds, and no
    child process is left alive (run_ddp terminates and joins them)."""
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within timeout=0.5 s"):
        run_ddp(dict(BASE, steps=10_000), timeout=0.5)
    assert time.monotonic() - t0 < 15
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("config, kwargs, match", [
    (dict(clip_mode="sometimes"), {},
     r"config\['clip_mode'\] must be one of \['none', 'after_reduce', 'before_reduce'\], "
     r"got 'sometimes'"),
    (dict(optimizer="lion"), {},
     r"config\['optimizer'\] must be one of \['sgd', 'companion_adam', 'torch_adam'\], "
     r"got 'lion'"),
    (dict(max_norm=0.0), {}, r"config\['max_norm'\] must be a finite number > 0, got 0.0"),
    (dict(lr=-1), {}, r"config\['lr'\] must be a finite number > 0, got -1.0"),
    (dict(steps=0), {}, r"config\['steps'\] must be an int >= 1, got 0"),
    (dict(batch=3), {}, r"config has unknown keys \['batch'\]"),
    (dict(n=33), {}, r"config\['n'\] must be divisible by world_size=2"),
    ({}, dict(world_size=0), "world_size must be an int >= 1, got 0"),
    ({}, dict(timeout=0), "timeout must be a finite number > 0, got 0.0"),
])
def test_config_errors_before_any_spawn(config, kwargs, match):
    """Bad configs and arguments are refused in this process, before anything is spawned."""
    with pytest.raises(ValueError, match=match):
        run_ddp(config, **kwargs)
    assert multiprocessing.active_children() == []


def test_defaults_are_complete():
    assert set(check_config({})) == set(DEFAULT_CONFIG)
    with pytest.raises(TypeError, match="config must be a dict"):
        check_config([("steps", 3)])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(rank=2), ValueError, r"rank must be an int in \[0, 1\] \(world_size=2\), got 2"),
    (dict(port=0), ValueError, r"port must be an int in \[1, 65535\], got 0"),
    (dict(config=[dict(steps=0)]), ValueError, r"config\[0\]\['steps'\] must be an int >= 1"),
    (dict(result_path="/no/such/folder/r.pkl"), ValueError, "result_path must be in an existing folder"),
])
def test_worker_refuses_bad_arguments_before_joining_a_group(kwargs, exc, match, tmp_path):
    """A bad call of the worker fails at once: no process group joined (it would wait for
    peers), no environment variable set, torch's thread count untouched."""
    args = dict(rank=0, world_size=2, port=29500, config=dict(steps=1),
                result_path=str(tmp_path / "r.pkl")) | kwargs
    env, threads = dict(os.environ), torch.get_num_threads()
    t0 = time.monotonic()
    with pytest.raises(exc, match=match):
        ddp_train_worker(**args)
    assert time.monotonic() - t0 < 1
    assert dict(os.environ) == env and torch.get_num_threads() == threads


def test_run_ddp_many_checks_every_config_before_spawning():
    with pytest.raises(ValueError, match=r"configs\[1\]\['lr'\] must be a finite number > 0"):
        run_ddp_many([dict(steps=1), dict(lr=0.0)])
    with pytest.raises(TypeError, match="configs must be a list of config dicts, got"):
        run_ddp_many(dict(steps=1))
    with pytest.raises(ValueError, match="configs must not be empty"):
        run_ddp_many([])
    assert multiprocessing.active_children() == []


# ------------------------------------------------------- batch norm under data parallelism
from companion.parallel import (SyncedBatchNorm1d, check_bn_config,  # noqa: E402
                                run_ddp_batch_norm, run_single_batch_norm)

BN_CFG = dict(steps=6, lr=0.1, n=16, in_features=4, width=8, depth=2, seed=0)


@pytest.fixture(scope="module")
def ddp_bn():
    """Both batch-norm modes on 2 gloo processes, in one launch."""
    return run_ddp_batch_norm(BN_CFG, world_size=2, timeout=90.0)


def _max_gap(xs, ys):
    return max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(xs, ys))


def test_synced_batch_norm_equals_full_batch(ddp_bn):
    """Reference: single-process training with torch.nn.BatchNorm1d on the full batch of 16.
    SyncedBatchNorm1d on 2 processes (8 rows each) equals it step by step to 1e-12: losses,
    final parameters and running estimates."""
    got, ref = ddp_bn["sync"], run_single_batch_norm(BN_CFG)
    assert np.abs(got["losses"] - ref["losses"]).max() < 1e-12
    assert _max_gap(got["params"], ref["params"]) < 1e-12
    assert _max_gap(got["running_mean"], ref["running_mean"]) < 1e-12
    assert _max_gap(got["running_var"], ref["running_var"]) < 1e-12


def test_per_device_batch_norm_is_gradient_accumulation_not_full_batch(ddp_bn):
    """Per-device statistics (plain BatchNorm1d under DDP) differ from the full batch by far
    more than rounding, and equal single-process gradient accumulation over 2 micro-batches
    of 8 (each normalized with its own statistics) to 1e-12."""
    got, full = ddp_bn["local"], run_single_batch_norm(BN_CFG)
    accumulated = run_single_batch_norm(BN_CFG, micro_batches=2)
    assert np.abs(got["losses"] - full["losses"]).max() > 1e-3
    assert _max_gap(got["params"], full["params"]) > 1e-3
    assert np.abs(got["losses"] - accumulated["losses"]).max() < 1e-12
    assert _max_gap(got["params"], accumulated["params"]) < 1e-12


def test_synced_batch_norm_without_process_group_is_batchnorm1d():
    """Reference: torch.nn.BatchNorm1d with the same state, in training and eval mode."""
    torch.manual_seed(0)
    ours, ref = SyncedBatchNorm1d(3).double(), torch.nn.BatchNorm1d(3).double()
    x = torch.randn(10, 3, dtype=torch.float64) * 2 + 1
    assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    assert torch.equal(ours(x), ref(x))


def test_torch_sync_batch_norm_refuses_cpu_tensors():
    """The reason SyncedBatchNorm1d exists: torch.nn.SyncBatchNorm raises on CPU input once
    a process group is initialized (here a 1-process gloo group)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            torch.nn.SyncBatchNorm(3)(torch.randn(4, 3))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("call, error, match", [
    (lambda: check_bn_config(dict(batch=3)), ValueError, r"config has unknown keys \['batch'\]"),
    (lambda: check_bn_config(dict(steps=0)), ValueError, r"config\['steps'\] must be an int >= 1"),
    (lambda: check_bn_config(dict(lr=0)), ValueError, r"config\['lr'\] must be a finite number > 0"),
    (lambda: check_bn_config(dict(n=6), 4), ValueError, r"at least 2 rows per shard"),
    (lambda: check_bn_config([1]), TypeError, r"config"),
    (lambda: run_ddp_batch_norm(BN_CFG, modes=["global"]), ValueError, r"modes\[0\] must be one of"),
    (lambda: run_ddp_batch_norm(BN_CFG, modes=["sync", "sync"]), ValueError, r"must not repeat"),
    (lambda: run_single_batch_norm(BN_CFG, micro_batches=3), ValueError, r"divisible"),
])
def test_batch_norm_bad_calls(call, error, match):
    """Every bad argument is refused before anything is spawned."""
    with pytest.raises(error, match=match):
        call()
