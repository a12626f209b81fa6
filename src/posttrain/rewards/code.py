"""``code`` reward: run the completion's Python against the row's hidden tests in the sandbox.

Columns: ``tests`` (required: a string of test code or a list of test strings, see
``posttrain.rewards._jail.judge``) and ``code_prefix`` (optional: code put before the completion's,
e.g. a HumanEval prompt with its imports and helper functions, so a body-only completion works).

Reward: the fraction of tests passed, or 1/0 for all-pass when ``all_pass=True``. ``None`` only
when the row cannot be judged (no tests, broken tests, a sandbox infrastructure failure).
The sandbox's self-test runs once per process before the first use; if it fails, constructing
the reward raises ``SandboxUnavailable`` unless ``allow_unsafe=True`` is set explicitly.
"""
from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor

from posttrain.rewards.sandbox import SandboxLimits, SandboxResult, run_sandboxed
from posttrain.rewards.sandbox_selftest import sandbox_self_test

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


class SandboxUnavailable(RuntimeError):
    """The isolation self-test failed on this machine (message: which checks and why)."""


def extract_code(completion: str) -> str:
    """The last fenced Python block (```python / ```py / bare ```; an unclosed last fence counts),
    else the whole completion."""
    blocks = _FENCE.findall(completion)
    if not blocks:
        return completion
    python = [body for lang, body in blocks if lang]
    return (python or [body for _, body in blocks])[-1]


def _join(prefix: str | None, code: str) -> str:
    if not prefix:
        return code
    return prefix + code if prefix.endswith("\n") else prefix + "\n" + code


class CodeReward:
    name = "code"

    def __init__(self, *, timeout: float = 10.0, all_pass: bool = False, memory_mb: int = 1024,
                 workers: int = 2, allow_unsafe: bool = False, mode: str = "auto", **limits):
        """``limits``: further ``SandboxLimits`` fields (file_size_mb, disk_mb, open_files, processes,
        cpu_seconds). ``workers``: sandbox runs at once (each uses about one CPU core)."""
        self.limits = SandboxLimits(timeout=timeout, memory_mb=memory_mb, mode=mode, **limits)
        self.all_pass, self.workers = all_pass, max(1, int(workers))
        self.last_results: list[SandboxResult | None] = []
        report = sandbox_self_test(self.limits)
        if not report.ok:
            if not allow_unsafe:
                raise SandboxUnavailable(f"{report}\nThe code reward will not run untrusted code without "
                                         "this isolation; pass allow_unsafe=True to run it anyway.")
            warnings.warn(f"running untrusted code with allow_unsafe=True: {report}", stacklevel=2)
        self.self_test = report

    def _one(self, completion: str, tests, prefix: str | None) -> SandboxResult | None:
        if tests is None or (isinstance(tests, (str, list)) and not tests):
            return None
        return run_sandboxed(_join(prefix, extract_code(completion)), tests, self.limits)

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        if "tests" not in columns:
            raise ValueError("the 'code' reward needs a 'tests' column (test code per row); "
                             f"columns given: {sorted(columns)}")
        tests, prefixes = columns["tests"], columns.get("code_prefix") or [None] * len(completions)
        if len(tests) != len(completions) or len(prefixes) != len(completions):
            raise ValueError(f"'code' reward: {len(completions)} completions but {len(tests)} tests "
                             f"and {len(prefixes)} code_prefix values")
        with ThreadPoolExecutor(self.workers) as pool:
            results = list(pool.map(self._one, completions, tests, prefixes))
        self.last_results = results
        return [None if r is None else r.score(self.all_pass) for r in results]
