"""Host memory that stays mapped between steps: glibc's malloc told to reuse what torch frees.

torch allocates CPU tensors with the C library's malloc. glibc serves a large block (above
`M_MMAP_THRESHOLD`, 128 KiB at start, adapting upward as mmapped blocks are freed) with a fresh `mmap`
and returns it with `munmap` when freed, and it gives the top of its heap back to the system once more
than `M_TRIM_THRESHOLD` is free there. Every training step allocates and frees the same activations,
logits and gradients again, so each step maps them anew: every 4 KiB page is faulted in and zero-filled
by the kernel before torch writes it. A GRPO step of the bench's tiny-llama took up to ~32,000 minor page
faults (`resource.getrusage`; up to 0.15 s of system time), and every pass that writes a fresh buffer pays
for it: a [2048, 2048] float32 `exp` into a new tensor took 15.2 ms, 6.6 ms with the memory kept
(bench/README.md, "Freed memory kept mapped").

`keep_freed_memory()` sets both thresholds once per process (`mallopt`): blocks up to `MMAP_THRESHOLD`
(glibc's maximum on 64-bit, 32 MiB) come from the heap, and freed memory stays in it for the next step
(after the first steps: 0-10 faults a step). The process's resident memory then stays at its high-water
mark rather than falling between steps, as torch's own caching allocator does on a GPU; the peak is the
same. The engine calls it when it trains on a CPU; `POSTTRAIN_MALLOC=system` leaves glibc's defaults. It is
a no-op on any other C library (musl, macOS, Windows), where `mallopt` is absent or means something else.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1            # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20        # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = 1 << 30         # free memory at the heap's top is given back only beyond 1 GiB

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (above) once; True when they are set (now or before). False:
    not glibc, `POSTTRAIN_MALLOC=system`, or `mallopt` refused."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("POSTTRAIN_MALLOC", "").strip().lower() == "system" or not _running_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # pragma: no cover - glibc always has it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done


def _running_glibc() -> bool:
    """The C library this process runs on is glibc (asked of it, rather than read from the python binary)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):   # not a POSIX confstr, or no such name: not glibc
        return False
