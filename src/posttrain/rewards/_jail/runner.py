"""The runner: the only process that executes candidate code. It is launched inside the sandbox as
``python -I -S -B -c <bootstrap>`` (see ``supervisor.runner_command``) and knows nothing secret.

It executes the candidate's module, then answers the judge's requests (call / getattr / list / len /
getitem on objects it holds) with plain data over the wire. The judge never asks it whether a test
passed: the tests are not here, only the arguments of the calls the judge chooses to make. Whatever
the candidate does to this process (patching builtins, ``os._exit(0)``, printing "PASS", writing on
the channel itself) can only change the values the judge receives, which is exactly what is judged.
"""
from __future__ import annotations

import builtins
import os
import sys

try:
    from . import wire
except ImportError:  # launched standalone inside the sandbox, without the package
    import wire  # type: ignore[no-redef]


def _become_init_then_fork() -> None:
    """As PID 1 of a fresh PID namespace, stay a plain init: fork, wait, mirror the child's exit.

    The kernel kills every process of the namespace when PID 1 exits, so nothing the candidate
    forks (even after ``setsid``) outlives the run, and PID 1 itself never runs candidate code.
    """
    child = os.fork()
    if child == 0:
        return
    while True:
        pid, status = os.wait()
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _describe(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "msg": str(exc)[:500]}


class Server:
    def __init__(self, channel: wire.Channel):
        self.channel = channel
        self.objects: dict[int, object] = {}

    def to_ref(self, obj: object) -> int:
        ref = len(self.objects) + 1
        self.objects[ref] = obj
        return ref

    def from_ref(self, ref: int) -> object:
        if ref not in self.objects:
            raise wire.WireError(f"unknown handle {ref}")
        return self.objects[ref]

    def load(self, code: str) -> dict:
        module = {"__name__": "solution", "__builtins__": builtins}
        try:
            exec(compile(code, "solution.py", "exec"), module)
        except BaseException as exc:  # SyntaxError, SystemExit, anything: the candidate's failure
            return {"import_error": _describe(exc)}
        names = {}
        for name, value in list(module.items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            if type(value) is type(sys):
                names[name] = {"module": value.__name__}
            else:
                names[name] = wire.encode(value, self.to_ref)
        return {"ready": names}

    def handle(self, msg: dict) -> dict:
        op, target = msg.get("op"), self.from_ref(msg.get("ref"))
        if op == "call":
            args = wire.decode(msg.get("args"), self.from_ref)
            kwargs = wire.decode(msg.get("kwargs"), self.from_ref)
            result = target(*args, **kwargs)
        elif op == "getattr":
            result = getattr(target, msg.get("name"))
        elif op == "list":
            result = list(target)
        elif op == "len":
            result = len(target)
        elif op == "getitem":
            result = target[wire.decode(msg.get("key"), self.from_ref)]
        else:
            raise wire.WireError(f"unknown operation {op!r}")
        return {"value": wire.encode(result, self.to_ref)}

    def serve(self) -> None:
        while True:
            try:
                msg = self.channel.recv()
            except EOFError:
                return
            try:
                reply = self.handle(msg)
            except BaseException as exc:  # the candidate's exception (or SystemExit) goes to the judge
                reply = {"raise": _describe(exc)}
            reply["id"] = msg.get("id")
            self.channel.send(reply)


def main() -> None:
    if os.getpid() == 1:
        _become_init_then_fork()
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the candidate's prints go nowhere; the channel lives on private fds
        os.dup2(null, fd)
    sys.setrecursionlimit(5000)
    server = Server(wire.Channel(rfd, wfd))
    first = server.channel.recv()
    server.channel.send(server.load(str(first.get("code", ""))))
    server.serve()
    os._exit(0)
