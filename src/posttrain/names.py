"""Named sources that a plugin resolves to local paths, e.g. the lab's `builtin:NAME` models and data.

The library names no plugin: plugins are found through the `posttrain.plugins` entry-point group of the
installed packages (posttrain's own `pyproject.toml` registers `posttrain.lab.builtin`). A plugin module
provides `resolve(value)` (a string, list or mapping with names replaced; anything else unchanged) and
`resolve_config(cfg)` (every field of a config dataclass resolved in place). Entry points (CLI, Python API,
`posttrain serve`) resolve once, where the config or model name comes in.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any


@lru_cache(maxsize=1)
def plugins() -> tuple:
    """The installed resolver modules, loaded once."""
    return tuple(ep.load() for ep in entry_points(group="posttrain.plugins"))


def resolve(value: Any) -> Any:
    """`value` with every plugin's names replaced by local paths."""
    for plugin in plugins():
        value = plugin.resolve(value)
    return value


def resolve_config(cfg):
    """`cfg` (a config dataclass, changed in place and returned) with every plugin's names resolved."""
    for plugin in plugins():
        cfg = plugin.resolve_config(cfg)
    return cfg
