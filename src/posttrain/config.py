"""Typed configuration: one dataclass per algorithm beside the shared `TrainConfig`.

Recipes are YAML, loaded strictly with OmegaConf structured configs: an unknown key is an error that
names the key and the nearest valid one; `key=value` overrides follow the file; the resolved config is
saved beside the checkpoints. Every field carries its meaning in `metadata["help"]`, which `--help` prints.
The recipes ship inside the package (`posttrain/recipes/*.yaml`, package data; `recipes/` in a clone):
`--config NAME` loads the packaged recipe NAME, `posttrain recipes` lists them.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def opt(default, help: str):  # noqa: A002 - `help` reads best in field declarations
    """A config field with its documentation."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    train: Any = opt("builtin:sft", "training data: a JSONL/JSON/Parquet path, a folder, a list of paths, a hub "
                                    "name, or builtin:NAME (the lab world's exports)")
    eval: Any = opt(None, "held-out data, same forms as data.train; null = no evaluation")
    completion_only_loss: bool = opt(True, "train only on assistant/completion tokens; false = whole sequence")
    packing: bool = opt(False, "padding-free packing of rows into one sequence (position ids restart per row)")
    max_eval_rows: int = opt(256, "evaluate on at most this many held-out rows")


@dataclass
class LoraConfig:
    r: int = opt(0, "LoRA rank; 0 = full fine-tuning")
    alpha: int = opt(16, "LoRA alpha (scaling = alpha / r)")
    dropout: float = opt(0.0, "dropout on the LoRA path")
    target_modules: Any = opt("all-linear", "module names to adapt, or 'all-linear'")
    merge_on_save: bool = opt(False, "merge the adapter into the base weights in output_dir/final")


@dataclass
class DistributedConfig:
    strategy: str = opt("auto", "none, ddp, fsdp2 or deepspeed; auto = what `accelerate launch --config_file` selects "
                                "(FSDP -> fsdp2, DeepSpeed -> deepspeed), else ddp with several processes, else none")
    cpu_offload: bool = opt(False, "fsdp2: keep sharded params, gradients and optimizer state in CPU memory; "
                                   "deepspeed: offload optimizer state (and ZeRO-3 params) to CPU")
    reshard_after_forward: bool = opt(True, "fsdp2: free gathered layer weights after forward (ZeRO-3-like); "
                                            "false keeps them until backward (ZeRO-2-like: more memory, less traffic)")
    zero_stage: int = opt(3, "deepspeed: ZeRO stage 2 or 3")
    global_batch_size: int = opt(0, "rows per optimizer step over all processes; sets batch_size to "
                                    "global_batch_size / (processes * grad_accum); 0 = use batch_size as given")


@dataclass
class ModelArgs:
    model: str = opt("builtin:tiny", "a hub name, a local folder, or builtin:tiny (the lab's base model)")
    tokenizer: Any = opt(None, "tokenizer name or folder; null = same as model")
    gguf_file: Any = opt(None, "a GGUF file inside `model` (folder) to load with transformers' GGUF support")
    torch_dtype: str = opt("float32", "weights dtype: float32, bfloat16, float16 or auto")
    attn_implementation: Any = opt(None, "sdpa, eager, flash_attention_2 ...; null = transformers' default")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass to save memory")
    trust_remote_code: bool = opt(False, "allow model code from the hub (off unless you trust it)")


@dataclass
class TrainConfig(ModelArgs):
    output_dir: str = opt("runs/out", "where metrics, checkpoints/, final/ and plots go")
    max_steps: int = opt(100, "optimizer steps")
    batch_size: int = opt(8, "rows per micro-batch per process")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    max_length: int = opt(256, "tokens per row (prompt + completion); longer completions are cut")
    learning_rate: float = opt(1e-4, "peak learning rate (AdamW)")
    lr_scheduler: str = opt("cosine", "constant, linear or cosine (after warmup)")
    warmup_steps: int = opt(0, "linear warmup steps")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    adam_betas: Any = opt([0.9, 0.999], "AdamW betas")
    max_grad_norm: float = opt(1.0, "clip the global gradient norm; 0 = no clipping")
    mixed_precision: str = opt("no", "no, bf16 or fp16 autocast (accelerate)")
    seed: int = opt(42, "seed of data order, initialisation and sampling")
    logging_steps: int = opt(1, "log every N steps")
    eval_steps: int = opt(0, "evaluate every N steps (0 = only at the end, when data.eval is set)")
    save_steps: int = opt(0, "checkpoint every N steps (0 = only at the end)")
    save_total_limit: int = opt(2, "keep the newest N checkpoints")
    max_consecutive_skips: int = opt(5, "abort after this many consecutive non-finite steps")
    max_skipped_fraction: float = opt(0.1, "refuse the final save when more than this share of all steps were "
                                            "skipped as non-finite (1 = never), once min_skipped_steps were")
    min_skipped_steps: int = opt(3, "max_skipped_fraction applies from this many skipped steps on (1 or 2 skips "
                                    "in a short run are a large share, not a divergence)")
    max_weight_growth: float = opt(100.0, "refuse the final save when the largest weight grew more than this many "
                                          "times (diverged); 0 = off")
    report_to: Any = opt(["tensorboard"], "loggers besides metrics.jsonl: tensorboard, wandb, trackio")
    resume: bool = opt(True, "resume from the newest complete checkpoint in output_dir (only if its config "
                            "matches, apart from max_steps and the logging/eval/save cadence)")
    resume_force: bool = opt(False, "resume even when the checkpoint was trained with other settings")
    threads: int = opt(0, "torch CPU threads; 0 = auto (cores available to this process / local processes)")
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


def _walk_unknown(user: Any, schema: Any, prefix: str) -> list[str]:
    """Dotted keys of `user` (a plain dict) that the schema dataclass does not have, with a suggestion."""
    if not isinstance(user, dict) or not is_dataclass(schema):
        return []
    names = {f.name: f for f in fields(schema)}
    errors = []
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            every = [f"{prefix}{n}" for n in names]
            close = difflib.get_close_matches(dotted, every, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(sorted(names))}"
            errors.append(f"unknown key '{dotted}'{hint}")
            continue
        sub = getattr(schema, key, None) if not isinstance(schema, type) else None
        default = names[key].default_factory() if names[key].default_factory is not MISSING else None
        if is_dataclass(sub) or is_dataclass(default):
            errors += _walk_unknown(value, sub if sub is not None else default, dotted + ".")
    return errors


def _parse_overrides(overrides: list[str]) -> dict:
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override '{o}' is not key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # OmegaConf's errors, and YAML's for a value like `key=a: {b}`
        first = str(e).strip().split("\n")[0]
        raise ConfigError(f"bad override among {list(overrides)}: {first} (quote a value holding ': ' or "
                          "braces: key='a: {b}')") from None


def recipes_dir() -> str:
    """The folder of the packaged recipes."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


def recipe_names() -> list[str]:
    folder = recipes_dir()
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def recipe_path(name: str) -> str:
    """The file of packaged recipe `name` (e.g. `sft-tiny`); a ConfigError listing the recipes if none."""
    path = os.path.join(recipes_dir(), f"{name}.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"no packaged recipe '{name}' in {recipes_dir()}; recipes: {', '.join(recipe_names())}")
    return path


def config_path(path: str) -> str:
    """`path` itself when it is a file; a bare recipe name (`sft-tiny`) becomes its packaged file."""
    if os.path.isfile(path):
        return path
    stem = os.path.basename(path)
    stem = stem[:-5] if stem.endswith(".yaml") else stem
    if os.sep not in path and not path.endswith((".yaml", ".yml")):
        return recipe_path(path)
    hint = f"; the packaged recipe: --config {stem} (`posttrain recipes` lists them)" if stem in recipe_names() else ""
    raise ConfigError(f"config file not found: {path}{hint}")


def nest_dotted(flat: dict) -> dict:
    """{'data.train': x, 'lr': y} -> {'data': {'train': x}, 'lr': y} (nested dicts are merged too)."""
    out: dict = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key '{key}': '{p}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(nest_dotted(value))
        else:
            node[parts[-1]] = nest_dotted(value) if isinstance(value, dict) else value
    return out


def load_config(cls: type, path: str | None = None, overrides: list[str] | dict = (), base: Any = None) -> Any:
    """An instance of the dataclass `cls` from YAML `path` (a file, or a packaged recipe's name) then
    `overrides` (['key=value', ...], or a dict whose keys may be dotted: {'data.train': ...,
    'learning_rate': ...}). `base`: a `cls` instance to start from instead of the defaults (the Python API
    passes a config object through here)."""
    layers = []
    if path:
        path = config_path(path)
        try:
            file_cfg = OmegaConf.load(path)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except Exception as e:  # yaml errors carry line numbers
            raise ConfigError(f"{path}: cannot parse YAML: {e}") from None
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        layers.append((path, OmegaConf.to_container(file_cfg)))
    if isinstance(overrides, dict):
        layers.append(("overrides", nest_dotted(overrides)))
    else:
        layers.append(("command line", _parse_overrides(list(overrides))))
    merged = OmegaConf.structured(base if base is not None else cls)
    for where, layer in layers:
        unknown = _walk_unknown(layer, cls(), "")
        if unknown:
            raise ConfigError(f"{where}: " + "; ".join(unknown))
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ConfigError(f"{where}: key '{key}': {e.msg if hasattr(e, 'msg') else e}".split("\n")[0]) from None
    return OmegaConf.to_object(merged)


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what is printed and saved in output_dir)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe(cls_or_obj: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, meaning) for every field, nested dataclasses expanded. Defaults are read
    from a default instance, so a trainer that overrides a nested default (e.g. `data.train`) shows its own."""
    obj = cls_or_obj() if isinstance(cls_or_obj, type) else cls_or_obj
    rows = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            rows += describe(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), f.metadata.get("help", "")))
    return rows


def plain(value: Any) -> Any:
    """OmegaConf containers to plain Python (lists, dicts); other values unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value)
    return value
