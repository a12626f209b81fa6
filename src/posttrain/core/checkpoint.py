"""Atomic checkpoints and exact resume.

A checkpoint is `output_dir/checkpoints/step-NNNNNNNN/` holding:
  model.safetensors     every parameter and buffer of the trained module; when part of it is frozen
                        (LoRA), only the trainable parameters (`core/trainable_state.py`)
  optimizer.pt          optimizer state dict (tensors and numbers only; loaded with weights_only=True)
  scheduler.json        LR scheduler state
  rng-rank{R}.pt        python / numpy / torch (and CUDA) RNG states of process R
  algorithm.pt          the algorithm's own state (rollout buffers, KL coefficient ...)
  trainer.json          step, skip counters, every file's size and checksum (the manifest)
  config.yaml           the resolved config
  COMPLETE              written last; a folder without it is partial and skipped
It is written in a hidden temp folder and renamed into place, so a crash at any point leaves either the
previous checkpoints or a complete new one. Nothing is ever unpickled with `weights_only=False`.

Resume (`resume_latest`) verifies the newest checkpoint against its manifest and falls back to older
ones: a corrupt checkpoint is moved aside as `step-N.corrupt` (never deleted) and named, with the reason
(`checkpoint_integrity.py`). A full disk while saving removes the partial folder and raises one
`CheckpointError` that says so and names the newest complete checkpoint.
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

from posttrain.core import checkpoint_integrity as integrity
from posttrain.core.checkpoint_integrity import CorruptCheckpoint

STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written (damaged, does not match the model, disk full); the message
    names the file or folder."""


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


def _write_main_files(tmp: str, step: int, *, model, optimizer, scheduler, algo_state: dict,
                      trainer_state: dict, config_yaml: str) -> None:
    """Every file the main process writes, then the manifest (sizes and checksums), fsynced."""
    model_state = save_model_state(model, os.path.join(tmp, "model.safetensors"))  # LoRA: trainable only
    torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
    torch.save(algo_state, os.path.join(tmp, "algorithm.pt"))
    with open(os.path.join(tmp, "scheduler.json"), "w") as f:
        json.dump(scheduler.state_dict(), f)
    with open(os.path.join(tmp, "config.yaml"), "w") as f:
        f.write(config_yaml)
    sizes, checksums = integrity.manifest_entries(tmp)
    with open(os.path.join(tmp, "trainer.json"), "w") as f:
        json.dump({**trainer_state, "step": step, "model_state": model_state, "files": sizes, "checksums": checksums},
                  f, indent=1)
    for name in integrity.walk_files(tmp):
        with open(os.path.join(tmp, name), "rb") as fh:
            os.fsync(fh.fileno())
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


def newest_complete_name(ckpt_root: str) -> str:
    path = latest_complete(ckpt_root, log=lambda _msg: None)
    if path is None:
        return "there is no complete checkpoint yet"
    return f"the newest complete checkpoint is {os.path.basename(path)}"


def disk_full_error(what: str, folder: str, needed: int, ckpt_root: str) -> CheckpointError:
    return CheckpointError(f"no space left on device while writing {what} to {folder} (needs ~{integrity.mb(needed)}, "
                           f"{integrity.mb(integrity.free_bytes(folder))} free); {newest_complete_name(ckpt_root)}")


def _write_or_explain(write, *, tmp: str, step: int, ckpt_root: str, model, optimizer) -> None:
    """Run `write()`; on failure remove the partial `tmp` folder, and if the disk is full say so plainly."""
    try:
        write()
    except Exception as e:
        needed = integrity.estimate_bytes(model, optimizer)
        names = integrity.walk_files(tmp) if os.path.isdir(tmp) else []
        written = sum(os.path.getsize(os.path.join(tmp, n)) for n in names)
        full = integrity.is_disk_full(e, ckpt_root, max(needed - written, 2**20))
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(f"checkpoint step-{step:08d}", ckpt_root, needed, ckpt_root) from None
        raise


def save_checkpoint(ckpt_root: str, step: int, *, model, optimizer, scheduler, algo_state: dict,
                    trainer_state: dict, config_yaml: str, is_main: bool, rank: int, barrier=lambda: None,
                    keep: int = 2) -> str:
    """Write checkpoint `step` atomically; returns its final path. Every process calls this."""
    final = os.path.join(ckpt_root, f"step-{step:08d}")
    tmp = os.path.join(ckpt_root, f"{integrity.TEMP_CKPT_PREFIX}{step:08d}")
    guard = dict(tmp=tmp, step=step, ckpt_root=ckpt_root, model=model, optimizer=optimizer)
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    barrier()
    _write_or_explain(lambda: torch.save(rng_state(), os.path.join(tmp, f"rng-rank{rank}.pt")), **guard)
    barrier()
    if is_main:
        _write_or_explain(lambda: _write_main_files(
            tmp, step, model=model, optimizer=optimizer, scheduler=scheduler, algo_state=algo_state,
            trainer_state=trainer_state, config_yaml=config_yaml), **guard)
        publish(tmp, final, ckpt_root, keep)
    barrier()
    return final


# ----------------------------------------------------------------- resume
def publish(tmp: str, final: str, ckpt_root: str, keep: int) -> None:
    """Rename a fully written temp folder into place (atomic), then drop all but the newest `keep`."""
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    for _, old in list_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def select_verified(ckpt_root: str, log=print) -> str | None:
    """Newest complete checkpoint whose files match its manifest. Corrupt ones on the way are moved aside
    (`step-N.corrupt`) and named with the reason. Call on the main process only."""
    corrupt = 0
    for _, path in reversed(list_checkpoints(ckpt_root)):
        if not os.path.exists(os.path.join(path, "COMPLETE")):
            log(f"skipping partial checkpoint {path} (no COMPLETE marker)")
            continue
        try:
            integrity.verify(path)
            return path
        except CorruptCheckpoint as e:
            corrupt += 1
            moved = integrity.quarantine(path)
            log(f"checkpoint {os.path.basename(path)} is corrupt: {e.reason}; skipped it and moved it aside to "
                f"{moved} (not deleted); trying an older one")
    if corrupt:
        log(f"no checkpoint in {ckpt_root} verifies: starting from step 0 (the corrupt ones are kept as *.corrupt)")
    return None


def _read_state(path: str, rank: int) -> dict:
    """Everything but the weights, read into memory (nothing applied yet). Raises `CorruptCheckpoint`."""
    out = {}
    rng_file = os.path.join(path, f"rng-rank{rank}.pt")
    if not os.path.exists(rng_file):
        raise CheckpointError(f"checkpoint file missing: {rng_file} (was it written by fewer processes?)")
    for key, name in (("optimizer", "optimizer.pt"), ("rng", f"rng-rank{rank}.pt"), ("algo", "algorithm.pt")):
        try:
            out[key] = torch.load(os.path.join(path, name), weights_only=True)
        except Exception as e:
            first = (str(e).splitlines() or [""])[0][:200]
            raise CorruptCheckpoint(path, f"cannot read {name} ({type(e).__name__}: {first})") from None
    try:
        with open(os.path.join(path, "scheduler.json")) as f:
            out["scheduler"] = json.load(f)
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(path, f"cannot read scheduler.json ({e})") from None
    return out


def _load_model_state(model, file: str):
    """(missing, unexpected) after loading a full or trainable-only (LoRA) model file."""
    if file_kind(file) == TRAINABLE:
        return load_trainable_state(model, file)
    return load_model(model, file, strict=False)


def load_checkpoint(path: str, *, model, optimizer, scheduler, rank: int, verify: bool = True) -> tuple[dict, dict]:
    """Restore everything from `path`; returns (trainer_state, algo_state). A damaged checkpoint raises
    `CorruptCheckpoint` before anything is changed; one that does not fit the model raises `CheckpointError`."""
    meta = integrity.verify(path) if verify else integrity.read_manifest(path)
    state = _read_state(path, rank)
    weights = os.path.join(path, "model.safetensors")
    try:
        missing, unexpected = _load_model_state(model, weights)
    except RuntimeError as e:
        if "size mismatch" in str(e):
            raise CheckpointError(f"{weights} does not match the model: {str(e).splitlines()[-1][:300]}") from None
        raise CorruptCheckpoint(path, f"cannot read model.safetensors ({type(e).__name__}: {e})") from None
    except Exception as e:
        raise CorruptCheckpoint(path, f"cannot read model.safetensors ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}/optimizer.pt does not match the optimizer: {e}") from None
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if rank == 0:
        print(f"[posttrain] resumed from {path} (step {meta['step']})", file=sys.stderr)
    return meta, state["algo"]


def resume_latest(ckpt_root: str, *, model, optimizer, scheduler, rank: int, world: int, is_main: bool,
                  barrier=lambda: None, log=print) -> tuple[dict, dict] | None:
    """Load the newest checkpoint that verifies (every process the same one); None when there is none.
    The main process verifies and moves corrupt ones aside first; the others then load what is left."""
    if is_main:
        select_verified(ckpt_root, log)
    barrier()
    while (path := latest_complete(ckpt_root, log=lambda _msg: None)) is not None:
        try:
            return load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, rank=rank,
                                   verify=False)
        except CorruptCheckpoint as e:
            if world > 1:  # the processes could disagree on the fallback; stop with the reason instead
                raise CheckpointError(f"checkpoint {path} is corrupt: {e.reason}; move it aside and rerun") from None
            moved = integrity.quarantine(path)
            log(f"checkpoint {os.path.basename(path)} is corrupt: {e.reason}; skipped it and moved it aside to "
                f"{moved} (not deleted); trying an older one")
    return None
