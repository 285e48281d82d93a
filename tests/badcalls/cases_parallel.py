"""Rows for companion.parallel. run_ddp, run_ddp_many and ddp_train_worker spawn processes
or join a process group, so their good calls are not run here (tests/test_parallel.py runs
them); every bad call must fail before anything is spawned, in this process, at once."""
import math
import os
import tempfile

import torch

from companion import parallel
from badcalls import Row, bad_array, not_int, positive_int, positive_real


def _configs_bad():
    """Bad single configs (world_size 2: n must be even)."""
    return [None, "cfg", [("steps", 3)], dict(batch=3), {3: 1}, dict(clip_mode="sometimes"),
            dict(clip_mode=None), dict(optimizer="lion"), dict(optimizer=["sgd"]),
            dict(steps=0), dict(steps=2.5), dict(steps=True), dict(seed=-1), dict(seed=2 ** 64),
            dict(n=0), dict(n=33), dict(in_features="4"), dict(width=0), dict(depth=None),
            dict(lr=0.0), dict(lr="0.1"), dict(lr=math.nan), dict(max_norm=math.inf),
            dict(max_norm=-1.0)]


def _bn_configs_bad():
    """Bad batch-norm configs (world_size 2: n must be even, >= 2 rows per shard)."""
    return ["cfg", [("steps", 3)], dict(batch=3), {3: 1}, dict(clip_mode="none"),
            dict(steps=0), dict(steps=2.5), dict(steps=True), dict(seed=-1), dict(n=0),
            dict(n=3), dict(n=17), dict(in_features="4"), dict(width=0), dict(depth=None),
            dict(lr=0.0), dict(lr="0.1"), dict(lr=math.nan)]


def _modes_bad():
    return [None, "sync", [], ["global"], ["sync", "sync"], [None], ("local", 3)]


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


SPAWNS = "the good call spawns processes (tests/test_parallel.py runs it)"
GOOD_PATH = os.path.join(tempfile.gettempdir(), "companion_ddp_results.pkl")

ROWS = [
    Row(parallel.check_config, good=dict(config=dict(steps=1), world_size=2),
        bad=dict(config=_configs_bad(), world_size=positive_int() + [3]),
        accepted={"config": ([{}, dict(parallel.DEFAULT_CONFIG), dict(steps=1, lr=1)],
                             "any subset of the keys; an int lr is a number")}),
    Row(parallel.run_single, good=dict(config=dict(steps=1, n=8, width=4)),
        bad=dict(config=[c for c in _configs_bad() if c != dict(n=33)])),
    Row(parallel.run_ddp, good=dict(config=dict(steps=1), world_size=2, timeout=60.0),
        bad=dict(config=_configs_bad(), world_size=positive_int() + [3],
                 timeout=positive_real()),
        run_good=False),
    Row(parallel.run_ddp_many, good=dict(configs=[dict(steps=1)], world_size=2, timeout=60.0),
        bad=dict(configs=[None, "cfg", dict(steps=1), [], [None], [dict(batch=3)],
                          [dict(steps=1), dict(steps=0)], [dict(n=33)], [dict(lr="0.1")]],
                 world_size=positive_int() + [3], timeout=positive_real()),
        run_good=False),
    Row(parallel.ddp_train_worker,
        good=dict(rank=0, world_size=2, port=29500, config=dict(steps=1),
                  result_path=GOOD_PATH),
        bad=dict(rank=not_int() + [-1, 2], world_size=positive_int() + [3],
                 port=not_int() + [0, -1, 70000],
                 config=[None, "cfg", [], [None], dict(batch=3), [dict(steps=0)], dict(n=33)],
                 result_path=[None, 3, "", os.path.join(os.sep, "no", "such", "folder", "r.pkl")]),
        run_good=False, reason=SPAWNS),
    Row(parallel.check_bn_config, good=dict(config=dict(steps=1), world_size=2),
        bad=dict(config=_bn_configs_bad(), world_size=positive_int() + [3]),
        accepted={"config": ([None, {}, dict(parallel.BN_DEFAULT_CONFIG), dict(lr=1)],
                             "None or any subset of the keys; an int lr is a number")}),
    Row(parallel.run_single_batch_norm, good=dict(config=dict(steps=1), micro_batches=2),
        bad=dict(config=[c for c in _bn_configs_bad() if c != dict(n=17)],
                 micro_batches=positive_int() + [3, 16]),
        accepted={"micro_batches": ([1, 4, 8], "divides n = 16, >= 2 rows each")}),
    Row(parallel.run_ddp_batch_norm,
        good=dict(config=dict(steps=1), modes=parallel.BN_MODES, world_size=2, timeout=60.0),
        bad=dict(config=_bn_configs_bad(), modes=_modes_bad(),
                 world_size=positive_int() + [3], timeout=positive_real()),
        run_good=False),
    Row(parallel.ddp_batch_norm_worker,
        good=dict(rank=0, world_size=2, port=29500, config=dict(steps=1), modes=["sync"],
                  result_path=GOOD_PATH),
        bad=dict(rank=not_int() + [-1, 2], world_size=positive_int() + [3],
                 port=not_int() + [0, -1, 70000], config=_bn_configs_bad(), modes=_modes_bad(),
                 result_path=[None, 3, "", os.path.join(os.sep, "no", "such", "folder", "r.pkl")]),
        run_good=False, reason=SPAWNS),
    Row(parallel.SyncedBatchNorm1d, reason="the constructor is torch.nn.BatchNorm1d's, "
                                           "unchanged (torch checks its arguments)",
        run_good=False),
    Row(parallel.SyncedBatchNorm1d.forward,
        call=lambda **kw: parallel.SyncedBatchNorm1d(3)(**kw),
        good=dict(x=_x(5, 3)),
        bad=dict(x=bad_array(_x(5, 3), torch_only=True, nan=False, empty=False)
                 + [_x(5), _x(5, 4), _x(5, 3).double()]),
        accepted={"x": ([_x(0, 3)], "an empty shard is legal input, as in BatchNorm1d")}),
]
