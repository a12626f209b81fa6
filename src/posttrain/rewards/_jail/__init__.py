"""Internals of the code sandbox (see ``posttrain.rewards.sandbox`` for the public API and the layers).

Stdlib-only on purpose: ``wire.py`` and ``runner.py`` are also loaded, without the package, by the
sandboxed interpreter (``python -I -S``).
"""
