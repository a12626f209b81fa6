"""The supervisor's side of isolation: namespaces and the filesystem view the runner will see.

Modes (``mode_candidates``; ``auto`` takes the first one the kernel allows):
- ``root``   (we are root): new mount, network, PID, IPC and UTS namespaces; the runner later
  drops to a per-run unprivileged uid.
- ``userns`` (not root, unprivileged user namespaces allowed): the same namespaces inside a new
  user namespace; the runner keeps uid 0 *of that namespace* (our own uid outside) with every
  capability dropped.
- ``plain``  (neither): no namespaces; a private temp folder on the host only. The self-test
  then fails (writes outside the folder are not blocked) and the code reward refuses to run
  unless the user sets ``allow_unsafe``.

In the namespaced modes the whole mount tree is made read-only, ``/tmp`` becomes a fresh tmpfs
of ``disk_bytes`` holding the scratch folder (bind-mounted on itself: the only writable mount), and
the usual writable or private places (``/var/tmp``, ``/dev/shm``, ``/run``, ``/root``, ``/home``)
are hidden behind empty read-only tmpfs mounts. The Python installation is bound back read-only
if it lived under one of them.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from posttrain.rewards._jail import confine

MASKED = ("/var/tmp", "/dev/shm", "/run", "/root", "/home")
BASE_UID = 1_500_000_000  # + supervisor pid: a uid no file on the host belongs to, unique per run
_NAMESPACES = (confine.CLONE_NEWNS | confine.CLONE_NEWNET | confine.CLONE_NEWPID | confine.CLONE_NEWIPC
               | confine.CLONE_NEWUTS)


@dataclass
class Jail:
    mode: str
    scratch: str
    python: str
    uid: int | None = None          # the runner's uid (root mode) or None (keep ours)
    gid: int | None = None
    layers: dict[str, bool] = field(default_factory=dict)


def python_paths() -> tuple[str, str]:
    """(installation prefix, interpreter binary), both resolved, for the runner's ``python -I -S``."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return os.path.realpath(sys.base_prefix), exe


def mode_candidates(requested: str) -> list[str]:
    """Modes to try in order: ``auto`` falls back (root -> userns -> plain) when the kernel refuses."""
    if requested not in ("auto", "root", "userns", "plain"):
        raise ValueError(f"sandbox mode must be auto|root|userns|plain, got {requested!r}")
    if requested != "auto":
        return [requested]
    return ["root", "userns", "plain"] if os.geteuid() == 0 else ["userns", "plain"]


def _enter_userns() -> None:
    uid, gid = os.getuid(), os.getgid()
    confine.unshare(confine.CLONE_NEWUSER | _NAMESPACES)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _build_view(disk_bytes: int, prefix: str, scratch: str) -> None:
    confine.make_mounts_private()
    confine.make_tree_readonly("/")
    confine.mount_tmpfs("/tmp", disk_bytes, 0o755)
    hold = "/tmp/.python"
    os.mkdir(hold, 0o755)
    confine.bind_readonly(prefix, hold)
    masked = [m for m in MASKED if os.path.isdir(m) and not os.path.islink(m)]
    for top in masked:
        confine.mount_tmpfs(top, 1 << 16, 0o755)
    if any(_under(prefix, top) for top in [*masked, "/tmp"]):  # hidden by a tmpfs: bind it back
        os.makedirs(prefix, 0o755, exist_ok=True)
        confine.bind_readonly(hold, prefix)
    os.mkdir(scratch, 0o700)
    confine.mount(scratch, scratch, None, confine.MS_BIND)  # its own mount: stays writable
    for top in ["/tmp", *masked]:  # read-only even to a uid 0 that owns them (userns mode)
        confine.remount_readonly(top)


def _unshare_for(mode: str) -> None:
    if mode == "root":
        confine.unshare(_NAMESPACES)
    elif mode == "userns":
        _enter_userns()


def _enter_namespaces(requested: str) -> str:
    """Enter the first mode's namespaces the kernel allows (unshare is all-or-nothing)."""
    *fallible, last = mode_candidates(requested)
    for mode in fallible:
        try:
            _unshare_for(mode)
            return mode
        except OSError:
            continue
    _unshare_for(last)
    return last


def enter(requested: str, disk_bytes: int) -> Jail:
    """Enter the namespaces (this process) and build the view; the scratch folder is made last."""
    prefix, exe = python_paths()
    mode = _enter_namespaces(requested)
    if mode == "plain":
        scratch = tempfile.mkdtemp(prefix="posttrain-sandbox-")
        return Jail("plain", scratch, exe, layers={"namespaces": False, "readonly_root": False})
    scratch = "/tmp/sandbox"
    _build_view(disk_bytes, prefix, scratch)
    jail = Jail(mode, scratch, exe, layers={"namespaces": True, "readonly_root": True})
    if mode == "root":
        jail.uid = jail.gid = BASE_UID + os.getpid()
        os.chown(scratch, jail.uid, jail.gid)
    return jail
