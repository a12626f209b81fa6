"""Time of one checkpoint save and of its checksums (the re-read + hash of every file just written).

usage: python bench/checkpoint_save.py MODEL_DIR [--repeats 5] [--out /tmp/ckbench]
(the 27M model: bench/.trl-harness/fixture/tiny-llama-l, built by `python bench/compare.py ...`)
Prints the medians of the whole save, of `manifest_entries` (read + hash) and of hashing the same bytes
already in memory: the difference is what hashing while writing could save.
"""
import argparse
import os
import shutil
import statistics
import time

import torch


def main() -> None:
    from transformers import AutoModelForCausalLM

    from posttrain.core import checkpoint as ckpt
    from posttrain.core import checkpoint_integrity as integrity

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="/tmp/ckbench")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(a.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # AdamW state (m, v) as in a real checkpoint
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    shutil.rmtree(a.out, ignore_errors=True)
    real, hashing, saves = integrity.manifest_entries, [], []

    def timed(folder, algo=None):
        t = time.perf_counter()
        out = real(folder, algo)
        hashing.append(time.perf_counter() - t)
        return out

    integrity.manifest_entries = timed
    for i in range(a.repeats):
        t = time.perf_counter()
        ckpt.save_checkpoint(a.out, i + 1, model=model, optimizer=opt, scheduler=sched, algo_state={},
                             trainer_state={}, config_yaml="x: 1\n", is_main=True, rank=0, keep=1)
        saves.append(time.perf_counter() - t)
    folder = ckpt.latest_complete(a.out)
    files = [os.path.join(folder, n) for n in integrity.walk_files(folder)]
    blobs = [open(f, "rb").read() for f in files]
    algo = integrity.default_algo()
    in_memory = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for b in blobs:
            h = integrity._hasher(algo)
            h.update(b)
            h.hexdigest()
        in_memory.append(time.perf_counter() - t)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M, checkpoint "
          f"{sum(len(b) for b in blobs) / 1e6:.0f} MB, {algo}, load average {load}: save "
          f"{statistics.median(saves):.3f}s, checksums (read + hash) {statistics.median(hashing):.3f}s, "
          f"hash of the bytes in memory {statistics.median(in_memory):.3f}s (medians of {a.repeats})")
    shutil.rmtree(a.out, ignore_errors=True)


if __name__ == "__main__":
    main()
