"""Run under torchrun by tests/distributed: several trainings in one launch (process start-up is the cost).

usage: worker.py JSON   where JSON = {"runs": [{"algo": "sft", "out": DIR, "overrides": [...], "config": YAML,
                                                  "measure_bytes": FILE (optional, SFT only)}, ...]}
Each run trains like `posttrain <algo>` with the given overrides; with `measure_bytes`, rank 0 writes
there its local parameter + optimizer bytes after training (measured on the shards themselves).
"""
import json
import os
import sys

import torch

torch.set_num_threads(1)


def local_bytes(engine) -> int:
    """Bytes of this process's own parameter and optimizer-state tensors (a DTensor counts its shard)."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    total = sum(nbytes(p) for p in engine.model.parameters())
    for state in engine.optimizer.state.values():
        total += sum(nbytes(v) for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return total


def main() -> None:
    from posttrain.algorithms import load_trainer
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    spec = json.loads(sys.argv[1])
    for run in spec["runs"]:
        cfg_cls, train = load_trainer(run["algo"])
        cfg = load_config(cfg_cls, run.get("config"), run["overrides"] + [f"output_dir={run['out']}"])
        if not run.get("measure_bytes"):
            train(cfg)
            continue
        from posttrain.algorithms.sft import SFT

        engine = Engine(cfg, SFT(cfg))
        engine.train()
        if engine.rank == 0:
            with open(run["measure_bytes"], "w") as f:
                json.dump({"bytes": local_bytes(engine), "world": engine.world}, f)

if __name__ == "__main__":
    main()
