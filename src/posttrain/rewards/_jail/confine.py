"""Linux kernel primitives the code sandbox is built from (stdlib + ctypes only).

Every function raises ``OSError`` naming the call that failed; callers decide whether a missing
layer is fatal. Nothing here runs candidate code. Used by ``supervisor.py`` (namespaces, mounts)
and by the runner's pre-exec hook (privilege drop, limits, seccomp).
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_PR_SET_SECCOMP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 22, 36, 38, 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SYS_MOUNT_SETATTR = 442  # same number on every architecture (new syscall table)
_MOUNT_ATTR_RDONLY, _AT_FDCWD, _AT_RECURSIVE = 0x1, -100, 0x8000


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount({source!r} -> {target!r}, {fstype!r})")


def make_mounts_private() -> None:
    """Stop mount events in this (new) mount namespace from propagating back to the host."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_tree_readonly(path: str = "/") -> None:
    """Mark every mount under ``path`` read-only in this mount namespace (mount_setattr, Linux 5.12+)."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), _b(path),
                        ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(int(ret), f"mount_setattr({path!r}, MOUNT_ATTR_RDONLY, AT_RECURSIVE)")


def mount_tmpfs(target: str, size_bytes: int, mode: int = 0o755) -> None:
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_bytes},mode={mode:o}")


def bind_readonly(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    remount_readonly(target)


def remount_readonly(target: str) -> None:
    """Make the mount at ``target`` read-only (this mount only, not its superblock)."""
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def mount_proc(target: str = "/proc") -> None:
    """A fresh procfs for the caller's PID namespace: only the sandbox's own processes are visible."""
    mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _prctl(option: int, arg2: int, what: str, arg3: int | ctypes.c_void_p = 0) -> None:
    third = ctypes.c_ulong(arg3) if isinstance(arg3, int) else arg3  # variadic: pass full-width words
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), third, ctypes.c_ulong(0), ctypes.c_ulong(0)),
           what)


def set_pdeathsig(sig: int) -> None:
    """Get ``sig`` when the parent dies (cleared by credential changes: call after setuid)."""
    _prctl(_PR_SET_PDEATHSIG, sig, "prctl(PR_SET_PDEATHSIG)")


def set_dumpable(flag: bool) -> None:
    """Non-dumpable: /proc/<pid>/{mem,fd,environ} become root-only and ptrace is refused."""
    _prctl(_PR_SET_DUMPABLE, int(flag), "prctl(PR_SET_DUMPABLE)")


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to us (not to init), so we can find and kill them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, "prctl(PR_SET_CHILD_SUBREAPER)")


def drop_capability_bounding_set() -> None:
    """Remove every capability from the bounding set, so no later execve can grant one."""
    cap = 0
    while cap < 64:
        zero = ctypes.c_ulong(0)
        if _libc.prctl(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), zero, zero, zero) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the kernel's last capability
                break
            _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")
        cap += 1
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups (irreversible: all capabilities go)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() != uid or os.getegid() != gid:
        raise OSError(f"privilege drop to {uid}:{gid} did not take effect")


def set_limits(limits: dict[str, int]) -> None:
    """``{"RLIMIT_AS": bytes, ...}``: soft = hard = value (RLIMIT_CPU: hard = soft + 1 s)."""
    for name, value in limits.items():
        kind = getattr(resource, name)
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(kind, (value, hard))


# ---- seccomp: deny network sockets and the calls that could undo the other layers -------------
_SYSCALLS = {  # arch -> (AUDIT_ARCH, socket nr, [denied syscall numbers])
    "x86_64": (0xC000003E, 41, [101, 310, 311, 165, 166, 272, 308, 155, 161, 321, 298, 323, 425, 426,
                                427, 250, 248, 249, 428, 429, 430, 431, 432, 433, 442, 246, 175, 313,
                                176, 167, 169]),
    "aarch64": (0xC00000B7, 198, [117, 270, 271, 40, 39, 97, 268, 41, 51, 280, 241, 282, 425, 426, 427,
                                  219, 217, 218, 428, 429, 430, 431, 432, 433, 442, 104, 105, 273, 106,
                                  224, 142]),
}
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_EPERM, _EACCES, _AF_UNIX = 1, 13, 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_supported() -> bool:
    return platform.machine() in _SYSCALLS


def _seccomp_program() -> list[tuple[int, int, int, int]]:
    audit_arch, socket_nr, denied = _SYSCALLS[platform.machine()]
    prog = [
        (_LD_ABS, 0, 0, 4),                      # A = seccomp_data.arch
        (_JEQ, 1, 0, audit_arch),
        (_RET, 0, 0, _RET_ERRNO | _EPERM),       # a foreign ABI (e.g. i386 int 0x80): refuse everything
        (_LD_ABS, 0, 0, 0),                      # A = seccomp_data.nr
        (_JGE, 0, 1, 0x40000000),
        (_RET, 0, 0, _RET_ERRNO | _EPERM),       # x32 ABI numbers
        (_JEQ, 0, 4, socket_nr),
        (_LD_ABS, 0, 0, 16),                     # A = low 32 bits of args[0] (the address family)
        (_JEQ, 0, 1, _AF_UNIX),
        (_RET, 0, 0, _RET_ALLOW),
        (_RET, 0, 0, _RET_ERRNO | _EACCES),      # socket() of any family but AF_UNIX
    ]
    deny_at = len(prog) + len(denied) + 1
    for nr in denied:
        prog.append((_JEQ, deny_at - (len(prog) + 1), 0, nr))
    prog += [(_RET, 0, 0, _RET_ALLOW), (_RET, 0, 0, _RET_ERRNO | _EPERM)]
    return prog


def install_seccomp() -> None:
    """Install the filter (needs no privilege: sets no_new_privs first). Irreversible, inherited."""
    if not seccomp_supported():
        raise OSError(f"seccomp filter has no syscall table for {platform.machine()!r}")
    prog = _seccomp_program()
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    _prctl(_PR_SET_SECCOMP, 2, "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)",
           ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p))
