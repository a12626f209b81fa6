"""Launch helpers for the multi-process tests: torchrun on 127.0.0.1 with a free port, gloo, one thread each."""
import json
import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), *extra, *args]


def run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r


def worker(runs: list[dict], nproc: int = 2) -> subprocess.CompletedProcess:
    """Several trainings in ONE launch of `nproc` processes (tests/distributed/worker.py)."""
    return run(torchrun([os.path.join(HERE, "worker.py"), json.dumps({"runs": runs})], nproc))


def losses(out: str, key: str = "loss") -> list[float]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def weights(out: str) -> dict:
    """The final folder's tensors (a LoRA run's final folder holds the adapter)."""
    path = os.path.join(out, "final", "model.safetensors")
    return load_file(path if os.path.exists(path) else os.path.join(out, "final", "adapter_model.safetensors"))


def assert_same_run(a: str, b: str, rel: float = 1e-5, atol: float = 1e-5, loss_atol: float = 0.0) -> None:
    """Per-step losses within `rel` relative (+ `loss_atol`, for losses that are near-zero sums of
    cancelling terms, as PPO's with whitened advantages) and final weights within `atol`, same keys."""
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) and la, (la, lb)
    for x, y in zip(la, lb):
        assert abs(x - y) <= rel * max(abs(x), 1e-8) + loss_atol, (la, lb)
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)
