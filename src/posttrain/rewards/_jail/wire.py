"""The wire between the judge (trusted) and the runner (executes candidate code).

Messages are newline-delimited JSON objects, at most ``limit`` bytes each. Values cross as plain
data only: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, and tagged objects for
``tuple``, ``set``, ``frozenset``, ``dict``, ``bytes``, ``complex``; anything else is a handle
``{"ref": n}`` to an object that stays in the runner. The decoder builds fresh built-in objects,
so a candidate cannot smuggle in an object with a forged ``__eq__``; malformed input raises
``WireError``. This file is stdlib-only: the runner loads it without the package.
"""
from __future__ import annotations

import json
import os

MAX_DEPTH = 200          # deepest value ``encode`` sends
MAX_DECODE_DEPTH = 100   # deepest value ``decode`` accepts: anything decoded can be sent back
DEFAULT_LIMIT = 16 * 1024 * 1024


class WireError(Exception):
    """A message or value that does not follow the protocol."""


def encode(value, to_ref=None, depth: int = 0):
    """Plain data -> JSON-able; other objects -> ``{"ref": to_ref(obj)}`` (``WireError`` if no ``to_ref``)."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    enc = lambda v: encode(v, to_ref, depth + 1)  # noqa: E731
    if isinstance(value, list):
        return [enc(v) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"tuple": [enc(v) for v in tuple.__iter__(value)]}
    if isinstance(value, frozenset):
        return {"frozenset": [enc(v) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"set": [enc(v) for v in set.__iter__(value)]}
    if isinstance(value, dict):
        return {"dict": [[enc(k), enc(v)] for k, v in dict.items(value)]}
    if to_ref is None:
        raise WireError(f"cannot send a {type(value).__name__} across the sandbox boundary")
    return {"ref": to_ref(value)}


def decode(obj, from_ref, depth: int = 0):
    """Inverse of :func:`encode`; ``from_ref(n)`` resolves handles. Only built-in types come out."""
    if depth > MAX_DECODE_DEPTH:
        raise WireError("value nested too deeply")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    dec = lambda v: decode(v, from_ref, depth + 1)  # noqa: E731
    if type(obj) is list:
        return [dec(v) for v in obj]
    if type(obj) is not dict or len(obj) != 1:
        raise WireError(f"malformed value {str(obj)[:80]!r}")
    (tag, val), = obj.items()
    try:
        return _decode_tagged(tag, val, dec, from_ref)
    except (TypeError, ValueError) as exc:  # unhashable set member, bad hex, ...
        raise WireError(f"malformed {tag!r} value: {exc}") from None


def _decode_tagged(tag: str, val, dec, from_ref):
    if tag == "ref" and type(val) is int:
        return from_ref(val)
    if tag == "bytes" and type(val) is str:
        return bytes.fromhex(val)
    if tag == "complex" and type(val) is list and len(val) == 2:
        return complex(float(val[0]), float(val[1]))
    if type(val) is not list:
        raise WireError(f"malformed {tag!r} value")
    if tag == "tuple":
        return tuple(dec(v) for v in val)
    if tag == "set":
        return {dec(v) for v in val}
    if tag == "frozenset":
        return frozenset(dec(v) for v in val)
    if tag == "dict":
        if not all(type(p) is list and len(p) == 2 for p in val):
            raise WireError("malformed 'dict' value")
        return {dec(k): dec(v) for k, v in val}
    raise WireError(f"unknown value tag {tag!r}")


class Channel:
    """Newline-delimited JSON over two raw file descriptors (no Python-level buffering to trust)."""

    def __init__(self, rfd: int, wfd: int, limit: int = DEFAULT_LIMIT):
        self.rfd, self.wfd, self.limit = rfd, wfd, limit
        self._buf = bytearray()

    def send(self, message: dict) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def recv(self) -> dict:
        """Next message; ``EOFError`` when the peer closed; ``WireError`` when it is not a JSON object."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return self._parse(line)
            if len(self._buf) > self.limit:
                raise WireError(f"message longer than {self.limit} bytes")
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                raise EOFError("peer closed the channel")
            self._buf += chunk

    @staticmethod
    def _parse(line: bytes) -> dict:
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise WireError(f"not JSON: {exc}") from None
        if type(msg) is not dict:
            raise WireError("message is not a JSON object")
        return msg
