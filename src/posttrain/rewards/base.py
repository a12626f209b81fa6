"""Reward functions: the interface, weighted combination, and loading by name.

A reward function scores a batch: ``fn(prompts, completions, **columns) -> list[float | None]``,
one value per completion, where ``columns`` are the dataset's other columns, one list entry per
completion (``answer``, ``tests``...). ``None`` means "could not score" (a verifier timed out, a
sandbox failed, the row has no gold answer): the trainer leaves it out of the advantage and
counts it. It is never a silent 0.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable


@runtime_checkable
class RewardFn(Protocol):
    name: str

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]: ...


def check_scores(name: str, scores: object, n: int) -> list[float | None]:
    """Validate a reward's output: a list of ``n`` finite numbers or None; bools become floats."""
    if not isinstance(scores, (list, tuple)) or len(scores) != n:
        got = f"{len(scores)} values" if isinstance(scores, (list, tuple)) else type(scores).__name__
        raise ValueError(f"reward {name!r} must return a list of {n} values (one per completion), got {got}")
    out: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            out.append(None)
            continue
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"reward {name!r} returned {s!r} for completion {i}: expected a finite number or None")
        out.append(float(s))
    return out


@dataclass
class RewardOutput:
    """``total[i]``: weighted sum for completion i (None if a weighted component is None);
    ``components[name][i]``: each function's own value; ``counts``: counts a function reports for this call
    through an optional ``counts() -> dict[str, float]`` method (e.g. a pairwise judge's position statistics),
    summed over processes and logged by online trainers."""

    total: list[float | None]
    components: dict[str, list[float | None]]
    weights: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``reward/<name>/mean`` over scored rows (nan if none) and ``reward/<name>/none_count``,
        for every component and for the total (``reward/total/...``)."""
        out: dict[str, float] = {}
        for name, values in [*self.components.items(), ("total", self.total)]:
            scored = [v for v in values if v is not None]
            out[f"reward/{name}/mean"] = sum(scored) / len(scored) if scored else float("nan")
            out[f"reward/{name}/none_count"] = float(len(values) - len(scored))
        return out


class CombinedReward:
    """Several reward functions with weights; itself a ``RewardFn`` (returns the total).

    The total of a row is ``sum(w_k * r_k)`` over components with a non-zero weight. If any of
    those ``r_k`` is None the total is None: filling the gap with 0 would silently penalise (or,
    for a negative weight, reward) a row for a verifier's failure. A zero-weight component is
    computed and logged but never affects the total.
    """

    name = "combined"

    def __init__(self, functions: Sequence[RewardFn], weights: Sequence[float] | None = None):
        if not functions:
            raise ValueError("CombinedReward needs at least one reward function")
        weights = [1.0] * len(functions) if weights is None else [float(w) for w in weights]
        if len(weights) != len(functions):
            raise ValueError(f"CombinedReward: {len(functions)} functions but {len(weights)} weights")
        self.functions, self.weights, self.names = list(functions), weights, []
        for fn in self.functions:
            base = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
            name, k = base, 2
            while name in self.names:
                name, k = f"{base}_{k}", k + 1
            self.names.append(name)

    def score(self, prompts: list[str], completions: list[str], *, raw_prompts: list | None = None,
              **columns) -> RewardOutput:
        """`prompts`: the texts generation continued; `raw_prompts`: the prompts as the data holds them
        (strings or message lists), which TRL-style functions receive (default: `prompts`)."""
        from posttrain.rewards.trl_compat import call_trl, is_trl_style

        def one(fn):
            if is_trl_style(fn):
                return call_trl(getattr(fn, "fn", fn), raw_prompts if raw_prompts is not None else prompts,
                                completions, {**columns, **getattr(fn, "kwargs", {})})
            return fn(prompts, completions, **columns)

        components = {name: check_scores(name, one(fn), len(completions))
                      for name, fn in zip(self.names, self.functions)}
        total: list[float | None] = []
        for i in range(len(completions)):
            parts = [(w, components[n][i]) for n, w in zip(self.names, self.weights) if w != 0.0]
            total.append(None if any(v is None for _, v in parts) else sum(w * v for w, v in parts))
        counts = {k: float(v) for fn in self.functions if callable(getattr(fn, "counts", None))
                  for k, v in fn.counts().items()}
        return RewardOutput(total, components, dict(zip(self.names, self.weights)), counts)

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        return self.score(prompts, completions, **columns).total


class RewardSpecError(ValueError):
    """A reward spec cannot be resolved (unknown name, missing module or file, wrong signature)."""


class FunctionReward:
    """A plain function as a ``RewardFn``; output checked. posttrain's ``f(prompts, completions, **columns)``
    is called with the prompt texts; a TRL-style one (``trl_style``, see `trl_compat`) as TRL calls it."""

    def __init__(self, fn: Callable, name: str, trl_style: bool | None = None, **kwargs):
        from posttrain.rewards.trl_compat import is_trl_style

        self.fn, self.name, self.kwargs = fn, name, kwargs
        self.trl_style = is_trl_style(fn) if trl_style is None else trl_style

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        if self.trl_style:
            from posttrain.rewards.trl_compat import call_trl

            return check_scores(self.name, call_trl(self.fn, prompts, completions, {**columns, **self.kwargs}),
                                len(completions))
        return check_scores(self.name, self.fn(prompts, completions, **columns, **self.kwargs), len(completions))


def _builtin(name: str) -> Callable[..., RewardFn] | None:
    if name in ("math", "exact_match"):
        from posttrain.rewards.math import ExactMatchReward, MathReward
        return {"math": MathReward, "exact_match": ExactMatchReward}[name]
    if name in ("format", "length_penalty"):
        from posttrain.rewards.format import FormatReward, LengthPenalty
        return {"format": FormatReward, "length_penalty": LengthPenalty}[name]
    if name == "code":
        from posttrain.rewards.code import CodeReward
        return CodeReward
    return None


BUILTIN_REWARDS = ("math", "format", "exact_match", "length_penalty", "code")


def _is_file_spec(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import_target(target: str, spec: str):
    if _is_file_spec(target):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise RewardSpecError(f"reward {spec!r}: file {str(path)!r} does not exist")
        module_name = f"posttrain_user_reward_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise RewardSpecError(f"reward {spec!r}: cannot load {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise RewardSpecError(f"reward {spec!r}: importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise RewardSpecError(f"reward {spec!r}: cannot import module {target!r}: {exc}") from exc


def _check_signature(fn: Callable, spec: str, trl_style: bool) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and C callables: checked by their output instead
    from posttrain.rewards.trl_compat import accepts_trl_call

    if trl_style and accepts_trl_call(fn):
        return
    try:
        sig.bind(["prompt"], ["completion"], **{"__posttrain_probe_column": []})
    except TypeError:
        raise RewardSpecError(f"reward {spec!r}: {getattr(fn, '__name__', fn)!r} must accept "
                              "(prompts, completions, **columns), or be TRL-style: (completions, **kwargs) or "
                              f"(completions, column, ..., **kwargs); its signature is {sig}") from None


def load_reward(spec: str, **kwargs) -> RewardFn:
    """A reward by name: a built-in (``math``, ``format``, ``exact_match``, ``length_penalty``,
    ``code``) built with ``kwargs``, or a user's ``package.module:attr`` / ``path/to/file.py:attr``.

    A user attribute may be a class (instantiated with ``kwargs``), a ready ``RewardFn`` object
    (no ``kwargs``), a plain function ``f(prompts, completions, **columns)``, or a TRL reward function
    ``f(completions, **kwargs)`` / ``f(completions, answer, **kwargs)`` called as TRL calls it
    (``kwargs`` are passed to every call; ``style: trl`` forces TRL's call). Errors name the spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(f"reward spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if ":" not in spec:
        factory = _builtin(spec)
        if factory is None:
            raise RewardSpecError(f"unknown reward {spec!r}: built-ins are {', '.join(BUILTIN_REWARDS)}; "
                             "a user reward is 'package.module:function' or 'path/to/file.py:function'")
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise RewardSpecError(f"reward {spec!r}: bad arguments {sorted(kwargs)}: {exc}") from exc
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise RewardSpecError(f"reward {spec!r}: expected 'module:function' or 'file.py:function'")
    obj = getattr(_import_target(target, spec), attr, None)
    if obj is None:
        raise RewardSpecError(f"reward {spec!r}: {target!r} has no attribute {attr!r}")
    style = kwargs.pop("style", None)
    if style not in (None, "trl", "posttrain"):
        raise RewardSpecError(f"reward {spec!r}: style: expected trl or posttrain, found {style!r}")
    if inspect.isclass(obj):
        obj = obj(**kwargs)
        kwargs = {}
    if not callable(obj):
        raise RewardSpecError(f"reward {spec!r}: {attr!r} is a {type(obj).__name__}, not callable")
    from posttrain.rewards.trl_compat import is_trl_style

    trl = is_trl_style(obj) if style is None else style == "trl"
    _check_signature(obj, spec, trl)
    if inspect.isfunction(obj) or inspect.ismethod(obj) or kwargs or style or not isinstance(getattr(obj, "name", None), str):
        return FunctionReward(obj, getattr(obj, "name", None) or attr, trl_style=trl, **kwargs)
    return obj
