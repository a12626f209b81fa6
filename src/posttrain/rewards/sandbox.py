"""Run untrusted code against hidden tests, isolated, and get a verdict it cannot forge.

``run_sandboxed(code, tests, limits)`` starts a *supervisor* process (its own session and
process group) that never executes candidate code; the supervisor starts a *runner* that does.
The tests stay in the supervisor, which judges them itself, calling into the runner only for the
candidate's functions, whose results come back as plain data (see ``_jail/judge.py``).

Layers, and what each one gives (``mode="root"``, the default when we run as root):
- process: the supervisor in a new session (``start_new_session``); wall-clock deadline enforced
  by the supervisor (SIGALRM) and, ``grace`` seconds later, by this process killing the whole group
  (the run is then not scored: ``None``). The grace covers the supervisor's killing and reaping of
  the run: a killed runner at nice +10 on a loaded machine needs CPU time to die (measured: up to
  0.7 s on 2 cores at load 12, so the former 0.8 s let a timeout become ``None``; 2 s by default).
- PID namespace: the runner is PID 1 of a fresh namespace (a bare init that forks the real
  runner); when it dies the kernel kills every process of the run, even ones that called
  ``setsid``. The supervisor is also a child subreaper and kills any descendant left.
- network namespace: no interface but a down loopback: no connection to anything, host loopback
  included; abstract unix sockets are per namespace too.
- seccomp (x86_64/aarch64): ``socket()`` of any family but AF_UNIX, ptrace, process_vm_*, mount
  calls, unshare/setns, bpf, perf, io_uring, keyctl, module and kexec calls fail.
- mount namespace: whole tree read-only, fresh tmpfs ``/tmp`` of ``disk_mb`` holding the scratch
  folder (the only writable place, the cwd), ``/var/tmp /dev/shm /run /root /home`` hidden, a fresh
  ``/proc`` showing only the run's processes.
- credentials: the runner drops to a per-run uid/gid (1.5e9 + supervisor pid: no host file is
  theirs, concurrent runs cannot signal each other), no groups, empty capability bounding set,
  ``no_new_privs``; the supervisor is non-dumpable, so its memory and fds are root-only.
- rlimits on the runner: RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC (per-run
  uid), RLIMIT_CORE=0.
- scheduling: the runner and its children run at nice +10, so the supervisor meets its deadline
  and the trainer stays responsive however hard the candidate spins.
- environment: scrubbed (PATH, HOME and TMPDIR = scratch, LANG); ``python -I -S -B``; candidate
  stdout/stderr go to /dev/null; the code's ``__name__`` is ``"solution"``.
Without root, ``userns`` mode gives the same namespaces inside a user namespace (uid unchanged,
no capabilities, no NPROC limit); ``plain`` mode only limits, seccomp, a temp folder and a new
session, so ``sandbox_self_test`` fails there unless the machine provides the rest.

What the judge design costs: values cross the boundary as copies of plain data (or handles), so a
test cannot see the candidate mutate an argument in place, and a test that passes a function (a
lambda) to the candidate is reported ``unsupported``. Helpers the candidate's module defines are
the candidate's (HumanEval/32's tests call the prompt's ``poly``, which a completion may redefine).
Not enforced: CPU share among concurrent runs (no cgroups: 2 runs that spin use 2 cores until
their deadline), and in ``userns`` mode RLIMIT_NPROC (it would count all of the user's processes).

``None`` (could not score) comes only from infrastructure: the supervisor failed or missed its
deadline, bad or missing tests, a test value the wire cannot carry. Anything the candidate does
gives failed tests, never ``None``.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

INFRA_STATUSES = frozenset({"infra", "bad_tests", "unsupported"})
_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the ``posttrain`` package


@dataclass(frozen=True)
class SandboxLimits:
    timeout: float = 10.0          # wall-clock seconds for the whole run (start, import, all tests)
    memory_mb: int = 1024          # RLIMIT_AS of the runner
    cpu_seconds: int | None = None  # RLIMIT_CPU; default ceil(timeout) + 1
    file_size_mb: int = 16         # RLIMIT_FSIZE: largest file the code may write
    disk_mb: int = 64              # size of the private tmpfs holding the scratch folder
    open_files: int = 64           # RLIMIT_NOFILE
    processes: int = 32            # RLIMIT_NPROC (root mode: counted for the run's own uid)
    mode: str = "auto"             # auto | root | userns | plain (see the module docstring)
    grace: float = 2.0             # seconds past `timeout` the supervisor may take to kill the run and report


@dataclass
class SandboxResult:
    """``status``: ok | timeout | crashed | import_error (the candidate's doing: scored) or
    infra | bad_tests | unsupported (not scorable). ``outcomes``: one ``{"ok", "error"}`` per test."""

    status: str
    passed: int = 0
    total: int = 0
    outcomes: list[dict] = field(default_factory=list)
    error: str = ""
    mode: str = ""
    layers: dict[str, bool] = field(default_factory=dict)
    elapsed: float = 0.0
    supervisor_pid: int = 0

    @property
    def scorable(self) -> bool:
        return self.status not in INFRA_STATUSES and self.total > 0

    def score(self, all_pass: bool = False) -> float | None:
        """Fraction of tests passed (or 1/0 when ``all_pass``); ``None`` when not scorable."""
        if not self.scorable:
            return None
        if all_pass:
            return 1.0 if self.passed == self.total else 0.0
        return self.passed / self.total


def _supervisor_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": _SRC_ROOT, "PYTHONDONTWRITEBYTECODE": "1"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parse_verdict(stdout: bytes, nonce: str) -> dict | None:
    lines = stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        verdict = json.loads(lines[-1])
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) and verdict.get("nonce") == nonce else None


def run_sandboxed(code: str, tests: str | list[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``code`` against ``tests`` (see ``_jail/judge.py`` for their format). Thread-safe."""
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    job = {"code": code, "tests": tests, "limits": asdict(limits), "nonce": nonce,
           "deadline": start + float(limits.timeout)}
    try:
        proc = subprocess.Popen([sys.executable, "-B", "-m", "posttrain.rewards._jail.supervisor"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env=_supervisor_env(), close_fds=True)
    except OSError as exc:
        return SandboxResult("infra", error=f"cannot start the sandbox supervisor: {exc}")
    try:
        out, err = proc.communicate(json.dumps(job).encode(), timeout=float(limits.timeout) + float(limits.grace))
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        return SandboxResult("infra", error="the sandbox supervisor missed its deadline",
                             elapsed=time.monotonic() - start, supervisor_pid=proc.pid)
    finally:
        _kill_group(proc.pid)
    verdict = _parse_verdict(out, nonce)
    elapsed = time.monotonic() - start
    if verdict is None:
        tail = err.decode(errors="replace")[-800:]
        return SandboxResult("infra", error=f"no valid verdict (exit {proc.returncode}): {tail}",
                             elapsed=elapsed, supervisor_pid=proc.pid)
    known = {k: verdict[k] for k in ("status", "passed", "total", "outcomes", "error", "mode", "layers")
             if k in verdict}
    return SandboxResult(**known, elapsed=elapsed, supervisor_pid=proc.pid)
