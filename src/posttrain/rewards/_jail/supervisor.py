"""The supervisor: one process per sandbox run, started by ``posttrain.rewards.sandbox``.

It never executes candidate code. It reads the job (code, tests, limits, nonce, deadline) from
stdin, makes itself non-dumpable (its memory, fds and the tests in them are closed to other
users), enters the namespaces, starts the runner (which drops privileges, sets limits and
installs seccomp before ``exec``), judges the tests itself (``judge.py``), kills everything the
run started and writes one verdict line, carrying the nonce, on its stdout: a pipe only the
parent holds.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from posttrain.rewards._jail import confine, fsview, judge, wire

_HERE = Path(__file__).resolve().parent
RUNNER_NICENESS = 10  # candidate code yields the CPU to the supervisor (its deadline) and the trainer
_BOOT = """import sys, types
for _name, _src in {sources!r}:
    _mod = types.ModuleType(_name)
    exec(compile(_src, _name + ".py", "exec"), _mod.__dict__)
    sys.modules[_name] = _mod
sys.modules["runner"].main()
"""


# Read at import, before the supervisor confines itself: the package may live under a folder the
# confined view hides or replaces (a checkout under /tmp, /root or /home).
_RUNNER_SOURCES = [(name, (_HERE / f"{name}.py").read_text()) for name in ("wire", "runner")]


def runner_command(python: str) -> list[str]:
    return [python, "-I", "-S", "-B", "-c", _BOOT.format(sources=_RUNNER_SOURCES)]


def _rlimits(limits: dict, mode: str) -> dict[str, int]:
    mib = 1024 * 1024
    out = {
        "RLIMIT_AS": int(limits["memory_mb"]) * mib,
        "RLIMIT_CPU": int(limits.get("cpu_seconds") or math.ceil(limits["timeout"]) + 1),
        "RLIMIT_FSIZE": int(limits["file_size_mb"]) * mib,
        "RLIMIT_NOFILE": int(limits["open_files"]),
        "RLIMIT_CORE": 0,
    }
    if mode == "root":  # counted per uid: only meaningful with the per-run uid
        out["RLIMIT_NPROC"] = int(limits["processes"])
    return out


def _confine_runner(jail: fsview.Jail, rlimits: dict[str, int]):
    """The pre-exec hook, run in the forked runner (PID 1 of the new namespace) before ``exec``."""

    def hook() -> None:
        try:
            if jail.mode in ("root", "userns"):
                confine.unshare(confine.CLONE_NEWNS)
                confine.mount_proc()
                confine.drop_capability_bounding_set()
            if jail.uid is not None:
                confine.drop_privileges(jail.uid, jail.gid)
            confine.set_pdeathsig(signal.SIGKILL)
            os.nice(RUNNER_NICENESS)
            confine.set_limits(rlimits)
            if confine.seccomp_supported():
                confine.install_seccomp()
        except BaseException as exc:
            os.write(2, f"sandbox pre-exec failed: {exc}\n".encode())
            raise

    return hook


def _runner_env(scratch: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8"}


def _kill_descendants() -> None:
    """SIGKILL every process whose parent chain leads here (orphans come here: we are a subreaper)."""
    me = os.getpid()
    for _ in range(50):
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        mine = [p for p in parents if _descends(p, me, parents)]
        if not mine:
            return
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.01)


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen = 0
    while pid in parents and seen < 4096:
        pid, seen = parents[pid], seen + 1
        if pid == ancestor:
            return True
    return False


def _judge(channel: wire.Channel, code: str, compiled: list, deadline: float, outcomes: list) -> tuple[str, str]:
    """Run the tests; returns (status, error). ``outcomes`` is filled as tests finish."""
    rpc = judge.Rpc(channel, deadline)
    try:
        channel.send({"code": code})
        first = channel.recv()
    except (EOFError, OSError, wire.WireError) as exc:
        return "crashed", f"runner failed before loading the code: {exc}"
    if "ready" not in first or type(first["ready"]) is not dict:
        return "import_error", json.dumps(first.get("import_error", first))[:500]
    try:
        ns = judge.namespace_from(first["ready"], rpc)
    except (wire.WireError, ImportError, RecursionError) as exc:
        return "crashed", f"malformed module report: {exc}"
    judge.run_tests(compiled, ns, deadline, outcomes)
    return ("crashed", "the candidate's process died or broke the protocol") if rpc.dead else ("ok", "")


def _on_alarm(signum, frame):
    raise judge.Deadline()


def supervise(job: dict) -> dict:
    limits, deadline = job["limits"], float(job["deadline"])
    verdict: dict = {"nonce": job["nonce"], "passed": 0, "outcomes": [], "error": ""}
    try:
        compiled = judge.compile_tests(job["tests"])
    except (SyntaxError, ValueError, TypeError) as exc:
        return {**verdict, "status": "bad_tests", "total": 0, "error": f"tests do not compile: {exc}"}
    total = sum(1 for is_test, _ in compiled if is_test)
    jail = fsview.enter(limits["mode"], int(limits["disk_mb"]) * 1024 * 1024)
    verdict.update(total=total, mode=jail.mode, layers=dict(jail.layers, seccomp=confine.seccomp_supported(),
                                                            uid_drop=jail.uid is not None))
    if total == 0:
        return {**verdict, "status": "bad_tests", "error": "the tests hold no assert or test expression"}
    proc = subprocess.Popen(runner_command(jail.python), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=jail.scratch, env=_runner_env(jail.scratch),
                            preexec_fn=_confine_runner(jail, _rlimits(limits, jail.mode)), close_fds=True)
    channel = wire.Channel(proc.stdout.fileno(), proc.stdin.fileno())
    outcomes: list[dict] = []
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
    try:
        status, error = _judge(channel, job["code"], compiled, deadline, outcomes)
    except judge.Deadline:
        status, error = "timeout", "wall-clock timeout"
    except judge.Unsupported as exc:
        status, error = "unsupported", f"a test passes a value the sandbox cannot carry: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        proc.kill()
        proc.wait()
        _kill_descendants()
        if jail.mode == "plain":  # namespaced modes: the scratch tmpfs dies with the namespace
            shutil.rmtree(jail.scratch, ignore_errors=True)
    outcomes += [{"ok": False, "error": status}] * (total - len(outcomes))
    return {**verdict, "status": status, "error": error, "outcomes": outcomes,
            "passed": sum(1 for o in outcomes if o["ok"])}


def main() -> None:
    confine.set_pdeathsig(signal.SIGKILL)
    confine.set_dumpable(False)
    confine.set_child_subreaper()
    job = json.loads(sys.stdin.buffer.read())
    verdict_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the tests print goes to stderr; stdout carries the verdict alone
    try:
        verdict = supervise(job)
    except Exception as exc:  # an infrastructure failure: the parent turns it into None, never 0
        verdict = {"nonce": job.get("nonce"), "status": "infra", "error": f"{type(exc).__name__}: {exc}"}
    verdict_out.write(json.dumps(verdict) + "\n")
    verdict_out.flush()


if __name__ == "__main__":
    main()
