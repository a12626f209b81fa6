"""Sharded checkpoints (fsdp2) with `torch.distributed.checkpoint` (DCP), and resume across world sizes.

A sharded checkpoint is `checkpoints/step-NNNNNNNN/` like a full one (`core/checkpoint.py`), except that
the model and optimizer live in `dcp/` (each process writes its own shard, `__R_0.distcp`, and the main
process the `.metadata`) instead of `model.safetensors` / `optimizer.pt`:
  dcp/                      model + optimizer state, keyed by parameter name (DCP reshards on load); when
                            part of the model is frozen (LoRA) only the trainable parameters, as
                            `core/trainable_state.py` does for one process: the base comes from `model`
  scheduler.json, config.yaml, trainer.json (step, counters, world size, every file with its size and
                            checksum, as full checkpoints: `checkpoint_integrity.py`)
  rng-rank{R}.pt            each process's RNG state
  algorithm.pt, algorithm-rank{R}.pt   the algorithm's state of process 0, and of every other process
  COMPLETE                  written last, by process 0, after EVERY process finished writing
The folder is written as `.tmp-step-N` and renamed into place, so a kill at any moment leaves either the
previous checkpoints or a complete new one. Every process hashes the files it wrote (its shard, RNG and
algorithm state) and sends the digests to process 0, which hashes the rest and writes the manifest; on
resume process 0 verifies every file, and a corrupt newest checkpoint is moved aside (`step-N.corrupt`)
for the next older one, as with full checkpoints.

Loading works at any world size: DCP reads whatever shards the saving processes wrote into the loading
processes' shards (2 -> 1: into a plain model; 1 -> 2: a full `model.safetensors` checkpoint is read into
the sharded model). A process with no RNG file of its own (more processes than at save) keeps its seeded
RNG and says so.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import warnings

import torch

from posttrain.core import checkpoint as ckpt
from posttrain.core import checkpoint_integrity as integrity
from posttrain.core.checkpoint import (CheckpointError, _fsync_dir, latest_complete, rng_state,
                                       set_rng_state)
from posttrain.core.trainable_state import TRAINABLE, state_kind

DCP_DIR = "dcp"
_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _trainable_names(model) -> set[str]:
    """Names of the trainable parameters as DCP's state dicts spell them (wrapper prefixes removed)."""
    out = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            for w in _WRAPPERS:
                name = name.replace(w, "")
            out.add(name)
    return out


def _state(model, optimizer) -> tuple[dict, dict, str]:
    """(model state, optimizer state, kind): a model with frozen parameters keeps its trainable ones only."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    kind = state_kind(model)
    if kind == TRAINABLE:
        keep = _trainable_names(model)
        model_sd = {k: v for k, v in model_sd.items() if k in keep}
        if not model_sd:
            raise CheckpointError(f"no trainable parameter of the model matches its state dict keys "
                                  f"({sorted(keep)[:3]})")
    return model_sd, optim_sd, kind


def is_sharded(path: str) -> bool:
    return os.path.isdir(os.path.join(path, DCP_DIR))


def _algo_file(rank: int) -> str:
    return "algorithm.pt" if rank == 0 else f"algorithm-rank{rank}.pt"


def _own_digests(tmp: str, rank: int, algo: str) -> dict[str, tuple[int, str]]:
    """{relative path: (size, digest)} of the files process `rank` wrote: its RNG and algorithm state and
    its DCP shard(s) `__R_*.distcp`."""
    names = [f"rng-rank{rank}.pt", _algo_file(rank)]
    names += [f"{DCP_DIR}/{n}" for n in sorted(os.listdir(os.path.join(tmp, DCP_DIR))) if n.startswith(f"__{rank}_")]
    return {n: (os.path.getsize(os.path.join(tmp, n)), integrity.file_digest(os.path.join(tmp, n), algo))
            for n in names}


def _gather_digests(mine: tuple[str, dict]) -> list | None:
    """Every process's (algo, digests) on process 0 (None elsewhere); one process: its own."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, out, dst=0)
    return out


def _manifest(tmp: str, gathered: list, algo: str) -> tuple[dict, dict]:
    """(sizes, checksums) of every file in `tmp`: the other processes' digests as sent, the rest hashed here."""
    known = {name: digest for a, digests in gathered if a == algo for name, (_, digest) in digests.items()}
    names = integrity.walk_files(tmp)
    sizes = {n: os.path.getsize(os.path.join(tmp, n)) for n in names}
    sums = {n: known.get(n) or integrity.file_digest(os.path.join(tmp, n), algo) for n in names}
    return sizes, {"algo": algo, "files": sums}


def save(ckpt_root: str, step: int, *, model, optimizer, scheduler, algo_state: dict, trainer_state: dict,
         config_yaml: str, is_main: bool, rank: int, world: int, barrier, keep: int = 2) -> str:
    """Write sharded checkpoint `step` atomically; every process calls this (it is collective)."""
    import torch.distributed.checkpoint as dcp

    final = os.path.join(ckpt_root, f"step-{step:08d}")
    tmp = os.path.join(ckpt_root, f".tmp-step-{step:08d}")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    barrier()
    torch.save(rng_state(), os.path.join(tmp, f"rng-rank{rank}.pt"))
    torch.save(algo_state, os.path.join(tmp, _algo_file(rank)))
    model_sd, optim_sd, kind = _state(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=os.path.join(tmp, DCP_DIR))
    for name in os.listdir(tmp):
        if name.startswith(("rng-rank", "algorithm")):
            with open(os.path.join(tmp, name), "rb") as fh:
                os.fsync(fh.fileno())
    algo = integrity.default_algo()
    gathered = _gather_digests((algo, _own_digests(tmp, rank, algo)))  # also: every process's files are written
    if is_main:
        with open(os.path.join(tmp, "scheduler.json"), "w") as f:
            json.dump(scheduler.state_dict(), f)
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            f.write(config_yaml)
        for name in integrity.walk_files(tmp):
            with open(os.path.join(tmp, name), "rb") as fh:
                os.fsync(fh.fileno())
        sizes, checksums = _manifest(tmp, gathered, algo)
        with open(os.path.join(tmp, "trainer.json"), "w") as f:
            json.dump({**trainer_state, "step": step, "world_size": world, "format": "dcp", "model_state": kind,
                       "files": sizes, "checksums": checksums}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(tmp, "COMPLETE"), "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(os.path.join(tmp, DCP_DIR))
        _fsync_dir(tmp)
        ckpt.publish(tmp, final, ckpt_root, keep)
    barrier()
    return final


def _meta(path: str) -> dict:
    meta_path = os.path.join(path, "trainer.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is complete but trainer.json is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is truncated or corrupt: {e}") from None
    for name, size in meta["files"].items():
        fp = os.path.join(path, name)
        if not os.path.exists(fp):
            raise CheckpointError(f"checkpoint file missing: {fp}")
        if os.path.getsize(fp) != size:
            raise CheckpointError(f"checkpoint file truncated: {fp} has {os.path.getsize(fp)} bytes, expected {size}")
    return meta


def _load_dcp(path: str, model, optimizer) -> None:
    """DCP's shards into `model` (sharded or not): its trainable parameters only when part of it is frozen
    (the base was loaded from the config; a checkpoint that also holds the base works the same)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_sd, optim_sd, kind = _state(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    try:
        with warnings.catch_warnings():  # on one process DCP says it loads without a process group: intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=os.path.join(path, DCP_DIR))
    except Exception as e:
        raise CheckpointError(f"cannot read {os.path.join(path, DCP_DIR)}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(strict=kind != TRAINABLE))


def _load_full_into_sharded(path: str, model, optimizer) -> None:
    """A full checkpoint (`model.safetensors` + index-keyed `optimizer.pt`) into a sharded model."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    full = load_file(os.path.join(path, "model.safetensors"))
    # a LoRA run's checkpoint holds the trainable tensors only (core/trainable_state.py); the frozen base
    # comes from the model as loaded. Anything trainable missing is an error.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(full))
    if missing:
        raise CheckpointError(f"{path}/model.safetensors lacks trained weights of the model: {missing[:5]}")
    opts = StateDictOptions(full_state_dict=True, strict=set(full) != trainable)
    set_model_state_dict(model, full, options=opts)
    opts = StateDictOptions(full_state_dict=True)
    saved = torch.load(os.path.join(path, "optimizer.pt"), weights_only=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups, offset = [], 0
    for g in saved["param_groups"]:
        groups.append({**g, "params": [names[i] for i in g["params"]]})
        offset += len(g["params"])
    if offset != len(names):
        raise CheckpointError(f"{path}/optimizer.pt holds {offset} parameters, the model trains {len(names)}")
    by_name = {"state": {names[i]: s for i, s in saved["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, by_name, options=opts)


def load(path: str, *, model, optimizer, scheduler, rank: int, world: int) -> tuple[dict, dict]:
    """Restore a sharded (DCP) or full checkpoint into `model` (sharded or not), any world size."""
    meta = _meta(path)
    if is_sharded(path):
        _load_dcp(path, model, optimizer)
    else:
        _load_full_into_sharded(path, model, optimizer)
    with open(os.path.join(path, "scheduler.json")) as f:
        scheduler.load_state_dict(json.load(f))
    saved_world = int(meta.get("world_size", 0)) or sum(n.startswith("rng-rank") for n in meta["files"])
    rng_file = os.path.join(path, f"rng-rank{rank}.pt")
    if os.path.exists(rng_file):
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        print(f"[posttrain] rank {rank}: {path} was written by {saved_world} process(es); no RNG state for this "
              f"rank, keeping its seeded RNG", file=sys.stderr)
    algo_file = os.path.join(path, _algo_file(rank))
    if not os.path.exists(algo_file):
        algo_file = os.path.join(path, "algorithm.pt")
    algo_state = torch.load(algo_file, weights_only=True)
    if rank == 0:
        note = f", written by {saved_world} processes, now {world}" if saved_world != world else ""
        print(f"[posttrain] resumed from {path} (step {meta['step']}{note})", file=sys.stderr)
    return meta, algo_state


def resume_latest(ckpt_root: str, sharded_model: bool, *, model, optimizer, scheduler, rank: int, world: int,
                  is_main: bool, barrier, log) -> tuple[dict, dict] | None:
    """The newest checkpoint that verifies, loaded: a sharded one (or any one into a sharded model) here,
    a full one into a plain model by `core.checkpoint.resume_latest` (with its corrupt-checkpoint fallback)."""
    path = latest_complete(ckpt_root, log=lambda _msg: None)
    if path is None or not (sharded_model or is_sharded(path)):
        return ckpt.resume_latest(ckpt_root, model=model, optimizer=optimizer, scheduler=scheduler, rank=rank,
                                  world=world, is_main=is_main, barrier=barrier, log=log)
    if is_main:
        ckpt.select_verified(ckpt_root, log)  # checks every file's size (and checksum when recorded)
    barrier()
    path = latest_complete(ckpt_root, log=lambda _msg: None)
    if path is None:
        return None
    return load(path, model=model, optimizer=optimizer, scheduler=scheduler, rank=rank, world=world)
