"""core.distributed.all_reduce: identity on one process, element-wise sum / max over a real 2-process
gloo group (127.0.0.1), a clear error for an unknown op."""
import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from posttrain.core.distributed import all_reduce, is_distributed


def test_one_process_returns_its_own_values():
    assert not is_distributed()
    assert all_reduce([1.0, 2.5]) == [1.0, 2.5] and all_reduce([3.0], op="max") == [3.0]
    with pytest.raises(ValueError, match="op must be one of"):
        all_reduce([1.0], op="mean")


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        res = {"sum": all_reduce([rank + 1.0, 10.0 * rank]), "max": all_reduce([float(rank), -float(rank)], op="max"),
               "min": all_reduce([float(rank)], op="min"), "distributed": is_distributed()}
        with open(os.path.join(out, f"{rank}.json"), "w") as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_and_max(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f"{rank}.json").read_text())
        # sums: [1 + 2, 0 + 10]; max of [0, -0] and [1, -1] is [1, 0]; min of 0 and 1 is 0
        assert res == {"sum": [3.0, 10.0], "max": [1.0, 0.0], "min": [0.0], "distributed": True}
