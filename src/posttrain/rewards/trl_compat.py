"""TRL-style reward functions, unchanged: `def f(completions, **kwargs)` or with named dataset columns
(`def f(completions, answer, **kwargs)`).

TRL calls a reward function with keywords: `prompts=` (as the data holds them: strings, or message lists
for conversational data), `completions=` (strings, or `[{"role": "assistant", "content": text}]` per
completion for conversational data), `completion_ids=`, and every other dataset column, one entry per
completion. A function is called that way when it is TRL-style: its parameters include `completions`
and do not start with `prompts` (that is posttrain's own `f(prompts, completions, **columns)`, which gets
the prompt texts and completion strings), or when its spec says `style: trl`. A function without
`**kwargs` receives only the keywords it names.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _params(fn: Callable):
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def is_trl_style(fn: Callable) -> bool:
    """True for `f(completions, ...)` / `f(completions, answer, **kwargs)`; an explicit `trl_style`
    attribute (set from a spec's `style`) wins."""
    explicit = getattr(fn, "trl_style", None)
    if explicit is not None:
        return bool(explicit)
    params = _params(fn)
    if params is None:
        return False
    names = [p.name for p in params if p.kind in POSITIONAL or p.kind == inspect.Parameter.KEYWORD_ONLY]
    return "completions" in names and names[0] != "prompts"


def accepts_trl_call(fn: Callable) -> bool:
    """Can `fn` be called with `completions=` (and the columns it names)?"""
    params = _params(fn)
    return params is None or any(p.name == "completions" for p in params)


def is_conversational(prompts: Sequence) -> bool:
    return bool(prompts) and isinstance(prompts[0], (list, tuple))


def trl_completions(prompts: Sequence, completions: Sequence[str]) -> list:
    """Completions as TRL passes them: message lists when the prompts are messages, else strings."""
    if is_conversational(prompts):
        return [[{"role": "assistant", "content": c}] for c in completions]
    return list(completions)


def call_trl(fn: Callable, prompts: Sequence, completions: Sequence[str], columns: dict) -> list:
    """Call `fn` the way TRL's GRPOTrainer does (keywords; columns it does not accept left out when it
    takes no `**kwargs`)."""
    kwargs = {"prompts": list(prompts), "completions": trl_completions(prompts, completions), **columns}
    params = _params(fn)
    if params is not None and not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        names = {p.name for p in params}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return fn(**kwargs)
