"""``sandbox_self_test``: prove, on this machine, that the sandbox isolates before trusting it.

It runs probe code through the real sandbox and checks each claim twice where it can: from
inside (the probe reports what happened) and from outside (this process looks at the host).
- network_blocked: a TCP connect to a listener we hold on 127.0.0.1 and a UDP send both fail,
  and our listener saw no connection;
- writes_outside_blocked: writes to a host temp folder of ours and to /var/tmp fail, and no file
  appeared on the host; scratch_writable: the probe can write in its own folder;
- limits_active: RLIMIT_AS/FSIZE/NOFILE/CPU read back as set, and allocating twice the memory
  limit fails; no_capabilities: the probe holds no capability (CapEff is 0);
- processes_reaped: a process the probe detached (``setsid`` + ``exec``) is gone afterwards;
- verdict_unforgeable: code that calls ``os._exit(0)`` at import scores 0, not 1 and not None.
"""
from __future__ import annotations

import math
import os
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass, field

from posttrain.rewards.sandbox import SandboxLimits, run_sandboxed

_PROBE = r'''
import os, resource, socket, sys, time
MARKER = {marker!r}
if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", MARKER])

def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return "connected"
    except OSError:
        pass
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("1.1.1.1", 53))
        return "sent"
    except OSError:
        return "blocked"

def write(path):
    try:
        with open(path, "w") as fh:
            fh.write("x")
        return "wrote"
    except OSError:
        return "blocked"

def scratch():
    write("probe.txt")
    return open("probe.txt").read()

def alloc(n):
    try:
        return len(bytearray(n)) and "allocated"
    except MemoryError:
        return "blocked"

def limit(name):
    return resource.getrlimit(getattr(resource, name))[0]

def capabilities():
    line = [x for x in open("/proc/self/status").read().splitlines() if x.startswith("CapEff")][0]
    return int(line.split()[1], 16)

def escapee_running():
    for _ in range(100):  # it may still be starting: wait up to about 1 s
        for pid in os.listdir("/proc"):
            try:
                if MARKER.encode() in open(f"/proc/{{pid}}/cmdline", "rb").read():
                    return True
            except OSError:
                pass
        time.sleep(0.01)
    return False
'''

_CHECKS = ["network_blocked", "writes_outside_blocked", "scratch_writable", "limits_active", "limits_active",
           "no_capabilities", "processes_reaped"]


@dataclass
class SelfTestReport:
    ok: bool
    mode: str
    checks: dict[str, bool] = field(default_factory=dict)
    layers: dict[str, bool] = field(default_factory=dict)
    detail: str = ""

    def __str__(self) -> str:
        state = "passed" if self.ok else "FAILED"
        checks = ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in self.checks.items())
        return f"sandbox self-test {state} (mode={self.mode}): {checks}. {self.detail}".strip()


def _tests(port: int, outside: str, limits: SandboxLimits) -> list[str]:
    mib = 1024 * 1024
    cpu = limits.cpu_seconds or math.ceil(limits.timeout) + 1
    return [
        f"assert connect({port}) == 'blocked'",
        f"assert write({outside!r}) == 'blocked' and write('/var/tmp/' + MARKER) == 'blocked'",
        "assert scratch() == 'x'",
        f"assert alloc({2 * limits.memory_mb * mib}) == 'blocked' and limit('RLIMIT_AS') == {limits.memory_mb * mib}",
        f"assert limit('RLIMIT_FSIZE') == {limits.file_size_mb * mib} and limit('RLIMIT_NOFILE') == "
        f"{limits.open_files} and limit('RLIMIT_CPU') == {cpu}",
        "assert capabilities() == 0",
        "assert escapee_running()",
    ]


def _marker_alive(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    return True
        except OSError:
            continue
    return False


def _run_self_test(limits: SandboxLimits) -> SelfTestReport:
    marker = "posttrain-selftest-" + secrets.token_hex(8)
    with tempfile.TemporaryDirectory() as host_dir, socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        outside = os.path.join(host_dir, marker)
        res = run_sandboxed(_PROBE.format(marker=marker), _tests(listener.getsockname()[1], outside, limits), limits)
        if not res.scorable or len(res.outcomes) != len(_CHECKS):
            return SelfTestReport(False, res.mode, detail=f"probe run failed: {res.status}: {res.error}")
        checks = dict.fromkeys(_CHECKS, True)
        for name, outcome in zip(_CHECKS, res.outcomes):
            checks[name] = checks[name] and outcome["ok"]
        try:
            listener.accept()[0].close()
            checks["network_blocked"] = False
        except BlockingIOError:
            pass
        stray = "/var/tmp/" + marker
        checks["writes_outside_blocked"] &= not os.path.exists(outside) and not os.path.exists(stray)
        if os.path.exists(stray):  # only when isolation failed: leave nothing behind
            os.remove(stray)
        checks["processes_reaped"] &= not _marker_alive(marker)
    forged = run_sandboxed("import os\nos._exit(0)\n", "assert f() == 1", limits)
    checks["verdict_unforgeable"] = forged.score() == 0.0
    failed = [k for k, v in checks.items() if not v]
    detail = f"failed: {', '.join(failed)}" if failed else ""
    return SelfTestReport(not failed, res.mode, checks, res.layers, detail)


_CACHE: dict[SandboxLimits, SelfTestReport] = {}
_LOCK = threading.Lock()


def sandbox_self_test(limits: SandboxLimits = SandboxLimits(), *, refresh: bool = False) -> SelfTestReport:
    """Run (once per process and limits, unless ``refresh``) the isolation self-test."""
    with _LOCK:
        if refresh or limits not in _CACHE:
            _CACHE[limits] = _run_self_test(limits)
        return _CACHE[limits]
