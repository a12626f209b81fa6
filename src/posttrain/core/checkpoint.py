"""Atomic checkpoints and exact resume.

A checkpoint is `output_dir/checkpoints/step-NNNNNNNN/` holding:
  model.safetensors     every parameter and buffer of the trained module; when part of it is frozen
                        (LoRA), only the trainable parameters (`core/trainable_state.py`)
  optimizer.pt          optimizer state dict (tensors and numbers only; loaded with weights_only=True)
  scheduler.json        LR scheduler state
  rng-rank{R}.pt        python / numpy / torch (and CUDA) RNG states of process R
  algorithm.pt          the algorithm's own state (rollout buffers, KL coefficient ...)
  trainer.json          step, skip counters, and the list of files with their sizes
  config.yaml           the resolved config
  COMPLETE              written last; a folder without it is partial and skipped
It is written in a hidden temp folder and renamed into place, so a crash at any point leaves either the
previous checkpoints or a complete new one. Nothing is ever unpickled with `weights_only=False`.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_model

from posttrain.core.trainable_state import TRAINABLE, file_kind, load_trainable_state, save_model_state

STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing a file or a file is truncated; the message names it."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[0],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_pos"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_root: str) -> list[tuple[int, str]]:
    """(step, path) of every folder named step-N, oldest first (complete or not)."""
    if not os.path.isdir(ckpt_root):
        return []
    found = [(int(m.group(1)), os.path.join(ckpt_root, d)) for d in os.listdir(ckpt_root)
             if (m := STEP_RE.match(d)) and os.path.isdir(os.path.join(ckpt_root, d))]
    return sorted(found)


def latest_complete(ckpt_root: str, log=print) -> str | None:
    """Newest checkpoint with a COMPLETE marker; partial ones are skipped with a message."""
    for step, path in reversed(list_checkpoints(ckpt_root)):
        if os.path.exists(os.path.join(path, "COMPLETE")):
            return path
        log(f"[posttrain] skipping partial checkpoint {path} (no COMPLETE marker)")
    return None


def save_checkpoint(ckpt_root: str, step: int, *, model, optimizer, scheduler, algo_state: dict,
                    trainer_state: dict, config_yaml: str, is_main: bool, rank: int, barrier=lambda: None,
                    keep: int = 2) -> str:
    """Write checkpoint `step` atomically; returns its final path. Every process calls this."""
    final = os.path.join(ckpt_root, f"step-{step:08d}")
    tmp = os.path.join(ckpt_root, f".tmp-step-{step:08d}")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    barrier()
    torch.save(rng_state(), os.path.join(tmp, f"rng-rank{rank}.pt"))
    barrier()
    if is_main:
        model_state = save_model_state(model, os.path.join(tmp, "model.safetensors"))  # LoRA: trainable only
        torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
        torch.save(algo_state, os.path.join(tmp, "algorithm.pt"))
        with open(os.path.join(tmp, "scheduler.json"), "w") as f:
            json.dump(scheduler.state_dict(), f)
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            f.write(config_yaml)
        files = {n: os.path.getsize(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
        with open(os.path.join(tmp, "trainer.json"), "w") as f:
            json.dump({**trainer_state, "step": step, "model_state": model_state, "files": files}, f, indent=1)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as fh:
                os.fsync(fh.fileno())
        with open(os.path.join(tmp, "COMPLETE"), "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        for _, old in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _check_files(path: str) -> dict:
    meta_path = os.path.join(path, "trainer.json")
    if not os.path.exists(meta_path):
        raise CheckpointError(f"checkpoint {path} is complete but trainer.json is missing")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is truncated or corrupt: {e}") from None
    for name, size in meta["files"].items():
        fp = os.path.join(path, name)
        if not os.path.exists(fp):
            raise CheckpointError(f"checkpoint file missing: {fp}")
        if os.path.getsize(fp) != size:
            raise CheckpointError(f"checkpoint file truncated: {fp} has {os.path.getsize(fp)} bytes, "
                                  f"expected {size}")
    return meta


def _load_model_state(model, file: str):
    """(missing, unexpected) after loading a full or trainable-only (LoRA) model file."""
    if file_kind(file) == TRAINABLE:
        return load_trainable_state(model, file)
    return load_model(model, file, strict=False)


def load_checkpoint(path: str, *, model, optimizer, scheduler, rank: int) -> tuple[dict, dict]:
    """Restore everything from `path`; returns (trainer_state, algo_state). Raises CheckpointError."""
    meta = _check_files(path)
    try:
        missing, unexpected = _load_model_state(model, os.path.join(path, "model.safetensors"))
    except Exception as e:
        raise CheckpointError(f"cannot read {os.path.join(path, 'model.safetensors')}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}/model.safetensors does not match the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True))
    with open(os.path.join(path, "scheduler.json")) as f:
        scheduler.load_state_dict(json.load(f))
    rng_file = os.path.join(path, f"rng-rank{rank}.pt")
    if not os.path.exists(rng_file):
        raise CheckpointError(f"checkpoint file missing: {rng_file} (was it written by fewer processes?)")
    set_rng_state(torch.load(rng_file, weights_only=True))
    algo_state = torch.load(os.path.join(path, "algorithm.pt"), weights_only=True)
    print(f"[posttrain] resumed from {path} (step {meta['step']})", file=sys.stderr)
    return meta, algo_state
