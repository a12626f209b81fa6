"""Call a function in worker processes with a wall-clock timeout that works from any thread.

Libraries such as math-verify time out with ``signal.alarm``, which only works in the main thread
of the main interpreter. Here the function runs in a separate process (``_timed_worker.py``,
JSON lines over pipes); a call that passes its timeout gets its worker killed (and a fresh one
started for the next call) and reports ``"timeout"``. The worker's start-up (imports) is waited
for separately and does not count against a call's timeout. Thread-safe: concurrent calls use
different workers, at most ``size`` of them.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import Any

_START_TIMEOUT_S = 120.0


class _Worker:
    def __init__(self, target: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen([sys.executable, "-m", "posttrain.rewards._timed_worker", target],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        self._buf = b""
        ready = self.read_line(time.monotonic() + _START_TIMEOUT_S)
        if ready is None or json.loads(ready).get("ready") is not True:
            self.kill()
            raise RuntimeError(f"worker for {target!r} did not start: {ready!r}")

    def read_line(self, deadline: float) -> bytes | None:
        """One line from the worker; None on timeout; b"" when the worker's output ended."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class TimedPool:
    """``TimedPool("package.module:function", size).call(args, timeout)`` -> ``(status, value)``;
    status is ``"ok"`` (value = the function's JSON result), ``"error"`` (value = the exception
    text), ``"timeout"`` or ``"crashed"`` (value None)."""

    def __init__(self, target: str, size: int = 1):
        self.target, self.size = target, max(1, int(size))
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.size)
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _checkout(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker(self.target)
            with self._lock:
                self._all.add(worker)
            return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def call(self, args: list, timeout: float) -> tuple[str, Any]:
        with self._slots:
            try:
                worker = self._checkout()
            except (OSError, RuntimeError) as exc:
                return "crashed", str(exc)
            try:
                worker.proc.stdin.write(json.dumps(args).encode() + b"\n")
                worker.proc.stdin.flush()
                line = worker.read_line(time.monotonic() + timeout)
            except OSError:
                line = b""
            if not line:
                self._discard(worker)
                return ("timeout", None) if line is None else ("crashed", None)
            self._idle.put(worker)
            reply = json.loads(line)
            return ("ok", reply["ok"]) if "ok" in reply else ("error", reply.get("error"))

    def close(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()


_SHARED: dict[tuple[str, int], TimedPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(target: str, size: int = 1) -> TimedPool:
    """One pool per (target, size) per process, so reward objects share warm workers."""
    with _SHARED_LOCK:
        key = (target, max(1, int(size)))
        if key not in _SHARED:
            _SHARED[key] = TimedPool(target, size)
        return _SHARED[key]
