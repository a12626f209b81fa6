"""The judge: runs the row's (trusted) tests in the supervisor, outside the candidate's process.

Names the candidate's module defines become proxies (``Remote``) whose calls travel to the runner
as data and whose results come back as fresh built-in values, so every comparison an ``assert``
makes happens here, on values the candidate cannot give a forged ``__eq__``. A test passes only
when its code runs here to the end without raising.

Tests: a string of Python code, where each top-level ``assert`` and each bare expression (such
as ``check(candidate)``) is one test and every other statement (imports, defs, assignments) is
setup run in order; or a list of strings, each one test. All share one namespace.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import time

from posttrain.rewards._jail import wire

#: stdlib modules the judge re-imports when the candidate's module imported them (tests often
#: rely on the prompt's ``import math``); any other module name is ignored.
SAFE_MODULES = frozenset({
    "math", "cmath", "random", "string", "re", "collections", "itertools", "functools", "heapq",
    "bisect", "copy", "typing", "statistics", "fractions", "decimal", "operator", "hashlib",
    "datetime", "json", "sys", "numbers", "array", "textwrap", "unicodedata",
})
_UNSAFE_EXCEPTIONS = {"BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration",
                      "StopAsyncIteration"}


class Deadline(BaseException):
    """The wall-clock budget is spent (BaseException: a test's ``except Exception`` cannot eat it)."""


class RunnerGone(Exception):
    """The runner process exited or broke the protocol: every later call fails."""


class Unsupported(Exception):
    """A test passed a value that cannot cross to the runner (e.g. a lambda): the row is unscorable."""


class RemoteError(Exception):
    """An exception raised by candidate code whose type is not a safe built-in one."""


def _exception_from(info: object) -> Exception:
    if type(info) is not dict:
        return RunnerGone("malformed exception report")
    name, msg = str(info.get("type", "")), str(info.get("msg", ""))
    cls = getattr(builtins, name, None)
    if (name not in _UNSAFE_EXCEPTIONS and isinstance(cls, type) and issubclass(cls, Exception)
            and not issubclass(cls, (Deadline, RunnerGone))):
        try:
            return cls(msg)
        except Exception:  # exceptions whose constructor wants other arguments
            pass
    return RemoteError(f"{name}: {msg}")


class Rpc:
    def __init__(self, channel: wire.Channel, deadline: float):
        self.channel, self.deadline = channel, deadline
        self.next_id, self.dead = 0, False

    def _ref_of(self, obj: object) -> int:
        if isinstance(obj, Remote) and obj._rpc is self:
            return obj._ref
        raise wire.WireError(f"cannot send a {type(obj).__name__} to the candidate")

    def request(self, op: str, ref: int, **fields):
        if self.dead:
            raise RunnerGone("the candidate's process is gone")
        if time.monotonic() >= self.deadline:
            raise Deadline()
        self.next_id += 1
        try:
            enc = {k: wire.encode(v, self._ref_of) for k, v in fields.items()}
        except (wire.WireError, RecursionError) as exc:
            raise Unsupported(str(exc)) from None
        try:
            self.channel.send({"id": self.next_id, "op": op, "ref": ref, **enc})
            while True:
                reply = self.channel.recv()
                if reply.get("id") == self.next_id:
                    break
            value = None if "raise" in reply else wire.decode(reply.get("value"), lambda r: Remote(r, self))
        except (EOFError, OSError, wire.WireError) as exc:
            self.dead = True
            raise RunnerGone(f"runner broke the protocol: {exc}") from None
        if "raise" in reply:
            raise _exception_from(reply["raise"])
        return value


class Remote:
    """A proxy for an object living in the runner (a function, class, instance, generator...)."""

    __slots__ = ("_ref", "_rpc")

    def __init__(self, ref: int, rpc: Rpc):
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_rpc", rpc)

    def __call__(self, *args, **kwargs):
        return self._rpc.request("call", self._ref, args=list(args), kwargs=kwargs)

    def __getattr__(self, name: str):
        return self._rpc.request("getattr", self._ref, name=name)

    def __iter__(self):
        return iter(self._rpc.request("list", self._ref))

    def __len__(self) -> int:
        n = self._rpc.request("len", self._ref)
        if type(n) is not int:
            raise TypeError("len() of a sandboxed object did not return an int")
        return n

    def __getitem__(self, key):
        return self._rpc.request("getitem", self._ref, key=key)

    def __repr__(self) -> str:
        return f"<sandboxed object #{self._ref}>"


def namespace_from(ready: dict, rpc: Rpc) -> dict:
    """The test namespace: the candidate's top-level names as data or proxies."""
    ns: dict = {"__name__": "__tests__"}
    for name, enc in ready.items():
        if type(enc) is dict and set(enc) == {"module"}:
            if enc["module"] in SAFE_MODULES:
                ns[name] = importlib.import_module(enc["module"])
            continue
        ns[name] = wire.decode(enc, lambda r: Remote(r, rpc))
    return ns


def compile_tests(tests: str | list[str]) -> list[tuple[bool, object]]:
    """``[(is_test, code object)]`` in execution order; ``SyntaxError`` for broken test code."""
    if isinstance(tests, str):
        out = []
        for node in ast.parse(tests).body:
            code = compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec")
            out.append((isinstance(node, (ast.Assert, ast.Expr)), code))
        return out
    return [(True, compile(t, f"<test {i}>", "exec")) for i, t in enumerate(tests)]


def run_tests(compiled: list[tuple[bool, object]], ns: dict, deadline: float, outcomes: list[dict]) -> None:
    """Append one outcome per test, ``{"ok": bool, "error": str}``, to ``outcomes`` (kept when
    ``Deadline`` interrupts). ``Unsupported`` propagates: the row cannot be judged here."""
    for is_test, code in compiled:
        if time.monotonic() >= deadline:
            raise Deadline()
        try:
            exec(code, ns)
            error = ""
        except (Deadline, Unsupported):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of a test is that test failing
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if is_test:
            outcomes.append({"ok": not error, "error": error})
