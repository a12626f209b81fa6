"""What keeps checkpoints trustworthy: per-file checksums, corrupt ones moved aside, temp folders of a
killed run cleaned, and disk space (an estimate before the first save, a plain message when it runs out).

Checksums: every file of a checkpoint is hashed right after it is written (xxh3-128 from `xxhash`,
which `datasets` already installs; blake2b from the standard library otherwise) and the digests go
into the manifest (`trainer.json`: `"checksums": {"algo": ..., "files": {relative path: hex}}`). On
resume the newest checkpoint is verified file by file; a missing, truncated or altered file makes it
corrupt: it is renamed `step-N.corrupt` (never deleted) and the next older one is tried.
Checkpoints written before checksums existed are verified by size only.
Hashing re-reads each file just written (from the page cache). Measured on the 27M model (329 MB of
checkpoint, busy 2-core machine): 0.076 s of a 0.69 s save, ~0.034 s of it the hash itself, so hashing the
bytes while writing them would save ~0.04 s, and safetensors writes from Rust (no stream to hash without
holding the whole file in memory), other processes write their own files (RNG, DCP shards): not done.
(`python bench/checkpoint_save.py bench/.trl-harness/fixture/tiny-llama-l`; bench/README.md.)
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

CHUNK = 1 << 22  # 4 MiB reads
TEMP_CKPT_PREFIX = ".tmp-step-"   # save_checkpoint's temp folder inside checkpoints/
TEMP_FINAL_PREFIX = ".final-"     # save_final's temp folder inside output_dir


class CorruptCheckpoint(Exception):
    """A checkpoint folder whose files do not match its manifest (or cannot be read); `reason` says how."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _hasher(algo: str):
    if algo == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    if algo == "blake2b":
        return hashlib.blake2b(digest_size=16)
    raise ValueError(f"unknown checksum algorithm {algo!r}")


def default_algo() -> str:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "blake2b"
    return "xxh3_128"


def file_digest(path: str, algo: str) -> str:
    h = _hasher(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def walk_files(folder: str) -> list[str]:
    """Relative paths of every file under `folder`, sorted (sharded checkpoints have sub-folders)."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files]
    return sorted(out)


def manifest_entries(folder: str, algo: str | None = None) -> tuple[dict, dict]:
    """({relative path: size}, {"algo": ..., "files": {relative path: digest}}) of every file in `folder`."""
    algo = algo or default_algo()
    names = walk_files(folder)
    sizes = {n: os.path.getsize(os.path.join(folder, n)) for n in names}
    digests = {n: file_digest(os.path.join(folder, n), algo) for n in names}
    return sizes, {"algo": algo, "files": digests}


def read_manifest(path: str) -> dict:
    """`trainer.json` of checkpoint folder `path`; raises `CorruptCheckpoint` if missing or unreadable."""
    meta_path = os.path.join(path, "trainer.json")
    if not os.path.exists(meta_path):
        raise CorruptCheckpoint(path, "trainer.json (the manifest) is missing")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(path, f"trainer.json is truncated or corrupt ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise CorruptCheckpoint(path, "trainer.json has no file list")
    return meta


def verify(path: str) -> dict:
    """The manifest of checkpoint `path` after checking every file it lists: present, of the recorded
    size and (when recorded) checksum. Raises `CorruptCheckpoint` naming the first bad file."""
    meta = read_manifest(path)
    for name, size in meta["files"].items():
        fp = os.path.join(path, name)
        if not os.path.isfile(fp):
            raise CorruptCheckpoint(path, f"file missing: {name}")
        if os.path.getsize(fp) != size:
            raise CorruptCheckpoint(path, f"{name} has {os.path.getsize(fp)} bytes, the manifest says {size} "
                                          "(truncated or overwritten)")
    sums = meta.get("checksums")
    if sums:
        try:
            _hasher(sums["algo"])
        except (ImportError, ValueError) as e:
            raise CorruptCheckpoint(path, f"cannot check its {sums.get('algo')!r} checksums ({e})") from None
        for name, digest in sums["files"].items():
            if file_digest(os.path.join(path, name), sums["algo"]) != digest:
                raise CorruptCheckpoint(path, f"{name} does not match its checksum (the bytes changed after "
                                              "it was written)")
    return meta


def quarantine(path: str) -> str:
    """Rename a corrupt checkpoint folder to `step-N.corrupt` (`.corrupt-2`, ... if taken); never delete."""
    target = path.rstrip(os.sep) + ".corrupt"
    k = 2
    while os.path.exists(target):
        target = f"{path.rstrip(os.sep)}.corrupt-{k}"
        k += 1
    os.replace(path, target)
    return target


def clean_temp_folders(output_dir: str, ckpt_root: str) -> list[str]:
    """Remove the temp folders a killed run of this output folder leaves behind: `checkpoints/.tmp-step-N`
    (a checkpoint being written), `output_dir/.final-XXXX` (the final folder being written) and
    `final.old` when `final` exists (the previous final folder being replaced). Returns what was removed."""
    found = []
    if os.path.isdir(ckpt_root):
        found += [os.path.join(ckpt_root, d) for d in os.listdir(ckpt_root) if d.startswith(TEMP_CKPT_PREFIX)]
    if os.path.isdir(output_dir):
        found += [os.path.join(output_dir, d) for d in os.listdir(output_dir) if d.startswith(TEMP_FINAL_PREFIX)]
        if os.path.isdir(os.path.join(output_dir, "final")):
            found.append(os.path.join(output_dir, "final.old"))
    removed = []
    for p in sorted(found):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# ----------------------------------------------------------------- disk space
def _tensor_bytes(obj) -> int:
    import torch

    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def model_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (what its weights file takes; tied weights once). Read
    from the modules, not `state_dict()`, which may gather shards across processes."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def estimate_bytes(model, optimizer) -> int:
    """Approximate size of one checkpoint: the model's state dict plus the optimizer state (AdamW keeps
    two fp32 moments per trainable parameter; before its first step the state is still empty, so those
    are counted from the parameters)."""
    size = model_bytes(model)
    state = optimizer.state_dict().get("state") or {}
    if state:
        size += _tensor_bytes(state)
    else:
        size += sum(2 * p.numel() * 4 for g in optimizer.param_groups for p in g["params"] if p.requires_grad)
    return size


def free_bytes(path: str) -> int:
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path.rstrip(os.sep))
        if parent == path:
            break
        path = parent
    return shutil.disk_usage(path or ".").free


def mb(n: float) -> str:
    x = n / 2**20
    return f"{x:.0f} MB" if x >= 10 else (f"{x:.1f} MB" if x >= 0.1 else f"{x:.2f} MB")


def is_disk_full(exc: BaseException, folder: str, needed: int) -> bool:
    """Whether `exc`, raised while writing into `folder`, comes from a full disk: ENOSPC / EDQUOT anywhere
    in its chain, or a serializer error (torch's 'unexpected pos', 'failed writing') while the free space is
    below what the write needed."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    try:
        return free_bytes(folder) < needed
    except OSError:
        return False
