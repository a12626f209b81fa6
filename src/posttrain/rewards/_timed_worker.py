"""Worker process of ``timed_pool.TimedPool``: ``python -m posttrain.rewards._timed_worker module:function``.

Imports the function (so its imports happen before it reports ready), then answers one JSON line
per request: the request is a JSON list of arguments, the reply ``{"ok": result}`` or
``{"error": "Type: message"}``. Its stdout carries only replies: anything the function prints goes
to stderr. Exits when its stdin closes.
"""
from __future__ import annotations

import importlib
import json
import os
import sys


def main(target: str) -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    replies.write('{"ready": true}\n')
    replies.flush()
    for line in sys.stdin:
        try:
            reply = {"ok": fn(*json.loads(line))}
        except Exception as exc:  # reported to the caller, which decides what it means
            reply = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main(sys.argv[1])
