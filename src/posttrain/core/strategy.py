"""How the trained model is spread over processes (`distributed.strategy`), on PyTorch's own engines.

  none       one process holds everything (a run with several processes must pick ddp or fsdp2)
  ddp        `torch.nn.parallel.DistributedDataParallel`: every process holds the whole model; DDP's
             reducer all-reduces gradients in buckets during backward (no sync on accumulation steps)
  fsdp2      `torch.distributed.fsdp.fully_shard` on every decoder layer and on the root: each process
             holds 1/N of the parameters, gradients and AdamW moments; optional CPU offload, bf16 compute
             with fp32 reduction (mixed_precision=bf16), frozen references sharded the same way
  deepspeed  ZeRO-2/3 through accelerate's DeepSpeed plugin (GPU; `core/strategy_deepspeed.py`)

The engine's loss is a SUM over the step's items divided by the global item count, so gradients must be
summed over processes; DDP and FSDP2 average, so the backward pass scales the loss by the world size
(`grad_scale`). Everything that runs the policy in training goes through `Strategy.forward(fn, ...)`,
i.e. through the wrapped module's forward, so the engine's hooks (DDP's reducer, FSDP's gather and
reduce-scatter) always fire, even for the chunked log-prob head that calls `model.get_decoder()` and
`model.get_output_embeddings()` directly: under FSDP2 the root's parameters (embeddings, final norm,
lm_head, value head) are gathered by `call_root` around that code, never read as a local shard.
"""
from __future__ import annotations

import contextlib
import os
import types

import torch
import torch.distributed as dist
from torch import nn

from posttrain.config import ConfigError

STRATEGIES = ("auto", "none", "ddp", "fsdp2", "deepspeed")
_ROOT_METHOD = "_posttrain_root_call"


def _launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def accelerate_config_kind(accelerator) -> str:
    """What accelerate was configured for: its state's distributed type, or, when that is a plain multi-process
    type, what `accelerate launch --config_file X` put in the environment (ACCELERATE_USE_FSDP /
    ACCELERATE_USE_DEEPSPEED): without a GPU accelerate's own state says MULTI_CPU even for an FSDP config."""
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED"):
        return kind
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "DEEPSPEED"
    return kind


def adopt_accelerate_fsdp(cfg) -> list[str]:
    """Settings of accelerate's FSDP config (the FSDP_* environment its launcher sets) that posttrain's fsdp2
    has: CPU offload, no reshard after forward, activation checkpointing, turned on in `cfg` when the
    accelerate config asks for them. Returns what was adopted (`key=value`), to be said."""
    env, d, adopted = os.environ, cfg.distributed, []
    if env.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true" and not d.cpu_offload:
        d.cpu_offload = True
        adopted.append("distributed.cpu_offload=true")
    if env.get("FSDP_RESHARD_AFTER_FORWARD", "").lower() in ("false", "no_reshard", "shard_grad_op") \
            and d.reshard_after_forward:
        d.reshard_after_forward = False
        adopted.append("distributed.reshard_after_forward=false")
    if env.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true" and not cfg.gradient_checkpointing:
        cfg.gradient_checkpointing = True
        adopted.append("gradient_checkpointing=true")
    return adopted


def resolve_name(name: str, accelerator) -> str:
    """The strategy to run: `name` checked, `auto` resolved from accelerate's config and the world size."""
    if name not in STRATEGIES:
        import difflib

        close = difflib.get_close_matches(str(name), STRATEGIES, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"distributed.strategy: expected one of {', '.join(STRATEGIES)}, found '{name}'{hint}")
    world = accelerator.num_processes
    if name == "auto":
        kind = accelerate_config_kind(accelerator)
        if kind == "FSDP":
            return "fsdp2"
        if kind == "DEEPSPEED":
            return "deepspeed"
        return "ddp" if world > 1 else "none"
    if name == "none" and world > 1:
        raise ConfigError(f"distributed.strategy=none with {world} processes: every process would train alone; "
                         "use ddp or fsdp2")
    return name


def _parent_cmdline() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return []


def _config_processes(argv: list[str]) -> int:
    """`num_processes` of the accelerate config file named by `--config_file X` in `argv` (1 if none)."""
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config_file", "--config-file")),
                next((a.split("=", 1)[1] for a in argv if a.startswith(("--config_file=", "--config-file="))), None))
    if path is None:
        return 1
    import yaml

    try:
        with open(path) as f:
            return int((yaml.safe_load(f) or {}).get("num_processes", 1))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return 1


def launcher_mismatch(world: int, parent: list[str] | None = None) -> str | None:
    """A warning when `accelerate launch --num_processes N` (N > 1, or `--config_file X` whose num_processes
    is N) started this single process: on a machine without a GPU accelerate's plain launcher runs one
    process unless `--multi_gpu` is given (or the config's distributed_type is MULTI_GPU or FSDP).
    `parent`: the launching process's argv (read from /proc when None)."""
    if world > 1:
        return None
    parent = _parent_cmdline() if parent is None else parent
    if not any(a.endswith("accelerate") or "accelerate.commands" in a for a in parent) or "launch" not in parent:
        return None
    asked = _config_processes(parent)
    for i, a in enumerate(parent):
        if a in ("--num_processes", "--num-processes") and i + 1 < len(parent) and parent[i + 1].isdigit():
            asked = int(parent[i + 1])
        elif a.startswith(("--num_processes=", "--num-processes=")) and a.split("=", 1)[1].isdigit():
            asked = int(a.split("=", 1)[1])
    if asked <= 1:
        return None
    return (f"warning: accelerate launch asked for {asked} processes but started this ONE (without a GPU, accelerate "
            f"needs --multi_gpu, or distributed_type: MULTI_GPU in its config file, to start several); use "
            f"`torchrun --nproc_per_node {asked} -m posttrain ...` or "
            f"`accelerate launch --multi_gpu --num_processes {asked} ...`")


def ensure_process_group(strategy: str, device: torch.device) -> None:
    """FSDP2 and DDP need a process group. One launched by torchrun with a single process has none yet
    (accelerate only starts one for several CPU processes): start it; with no launcher at all, say how."""
    if dist.is_available() and dist.is_initialized():
        return
    if not _launched():
        raise ConfigError(f"distributed.strategy={strategy} needs a process group, and this process was not started "
                         f"by a launcher: run it as `torchrun --nproc_per_node N -m posttrain ...` (N >= 1)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks to shard one by one: modules whose class the model lists in
    `_no_split_modules` (transformers' own list of its decoder layer classes)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__.removeprefix("FSDP") in names]
    if not layers:
        raise ConfigError(f"fsdp2: cannot find the decoder layers of {type(base).__name__} "
                         f"(_no_split_modules = {sorted(names)})")
    return layers


# ------------------------------------------------------------------ root calls (FSDP2)
def _enable_root_calls(model: nn.Module) -> None:
    """Give `model` (an FSDP root) a method that runs any function as one FSDP forward of the root."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    def _root_call(self, fn, *args, **kwargs):
        self._posttrain_root_depth = getattr(self, "_posttrain_root_depth", 0) + 1
        try:
            return fn(self, *args, **kwargs)
        finally:
            self._posttrain_root_depth -= 1

    setattr(model, _ROOT_METHOD, types.MethodType(_root_call, model))
    register_fsdp_forward_method(model, _ROOT_METHOD)


def call_root(model: nn.Module, fn, *args, **kwargs):
    """`fn(model, *args, **kwargs)`, inside one FSDP forward of `model` when it is an FSDP2 root (its
    embeddings, norm and heads gathered; gradients reduce-scattered in backward). Nested calls and
    plain models call `fn` directly."""
    if not hasattr(model, _ROOT_METHOD) or getattr(model, "_posttrain_root_depth", 0):
        return fn(model, *args, **kwargs)
    return getattr(model, _ROOT_METHOD)(fn, *args, **kwargs)


@contextlib.contextmanager
def gathered(model: nn.Module):
    """Inside: an FSDP2 model keeps each layer's gathered weights after its first forward (one all-gather
    per layer for a whole generation instead of one per layer per token); after: sharded again. A plain
    model is unchanged. (Restores each group's own post-forward setting, a private FSDP2 field.)"""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        yield model
        return
    mods = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not mods:
        yield model
        return
    saved = [(g, g.post_forward_mesh_info) for m in mods for g in m._get_fsdp_state()._fsdp_param_groups]
    for g, _ in saved:
        g.post_forward_mesh_info = None
    try:
        yield model
    finally:
        for g, info in saved:
            g.post_forward_mesh_info = info
        for m in mods:
            m.reshard()


def accelerator_kwargs(cfg) -> dict:
    """Extra `Accelerator(...)` arguments of the configured strategy (DeepSpeed's plugin)."""
    if cfg.distributed.strategy != "deepspeed":
        return {}
    from posttrain.core.strategy_deepspeed import plugin

    return {"deepspeed_plugin": plugin(cfg)}


def inference_context(model: nn.Module):
    """`torch.inference_mode()` for a plain model; `torch.no_grad()` for an FSDP2 one, whose gathered weight
    buffers are reused by later training steps and must not become inference tensors."""
    return torch.no_grad() if hasattr(model, _ROOT_METHOD) else torch.inference_mode()


class _Runner(nn.Module):
    """DDP wraps this: its forward runs `fn(model, ...)`, so a whole loss is one DDP forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.inner, *args, **kwargs)


# ------------------------------------------------------------------ strategies
class Strategy:
    """`none`: the model as it is."""

    name = "none"
    sharded = False

    def __init__(self, cfg, accelerator):
        self.cfg, self.accelerator = cfg, accelerator
        self.world, self.device = accelerator.num_processes, accelerator.device
        self.grad_scale = 1.0
        self.model = None

    def wrap(self, model: nn.Module) -> None:
        self.model = model

    def wrap_frozen(self, module: nn.Module) -> nn.Module:
        """A frozen copy (a reference model), placed as this strategy places modules."""
        return module

    def prepare(self, engine) -> None:
        """After the optimizer and schedule exist (DeepSpeed wraps all three)."""

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)

    def accumulate(self, last: bool):
        """Context of one micro-batch's forward + backward; `last` = the step's last micro-batch."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss * self.grad_scale if self.grad_scale != 1.0 else loss).backward()

    def clip(self, params: list, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def full_state_dict(self) -> dict | None:
        """Full weights for the final save, on the main process (collective); None = the model's own."""
        return None

    def describe(self) -> str:
        return self.name


class DDP(Strategy):
    name = "ddp"

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel

        ensure_process_group(self.name, self.device)
        self.model, self.world = model, dist.get_world_size()
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_Runner(model), device_ids=ids, broadcast_buffers=False,
                                           gradient_as_bucket_view=True)
        self.grad_scale = float(self.world)

    def forward(self, fn, *args, **kwargs):
        return self.ddp(fn, *args, **kwargs)

    def accumulate(self, last: bool):
        return contextlib.nullcontext() if last else self.ddp.no_sync()


class FSDP2(Strategy):
    name = "fsdp2"
    sharded = True

    def _shard_kwargs(self) -> dict:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

        kw = {"reshard_after_forward": bool(self.cfg.distributed.reshard_after_forward)}
        if self.cfg.distributed.cpu_offload:
            kw["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
        if str(self.cfg.mixed_precision).lower() in ("bf16", "bfloat16"):
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        return kw

    def _shard(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        ensure_process_group(self.name, self.device)
        kw = self._shard_kwargs()
        for layer in decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
        _enable_root_calls(model)
        return model

    def wrap(self, model):
        if self.cfg.lora.r > 0 and self.cfg.lora.merge_on_save:
            raise ConfigError("lora.merge_on_save is not supported with distributed.strategy=fsdp2; save the adapter "
                             "(merge_on_save=false) and merge it afterwards with peft's merge_and_unload")
        self.model = self._shard(model)
        self.world = dist.get_world_size()
        self.grad_scale = float(self.world)

    def wrap_frozen(self, module):
        return self._shard(module)

    def forward(self, fn, *args, **kwargs):
        return call_root(self.model, fn, *args, **kwargs)

    def clip(self, params, max_norm):
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, 2.0)
        if isinstance(total, DTensor):
            total = total.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return float(total)

    def full_state_dict(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def describe(self):
        d = self.cfg.distributed
        extra = [f"{len(decoder_layers(self.model))} layers + root"]
        if d.cpu_offload:
            extra.append("CPU offload")
        if not d.reshard_after_forward:
            extra.append("no reshard after forward")
        if "mp_policy" in self._shard_kwargs():
            extra.append("bf16 params, fp32 reduce")
        return f"fsdp2 ({', '.join(extra)})"


def make_strategy(cfg, accelerator, say=lambda _msg: None) -> Strategy:
    name = resolve_name(cfg.distributed.strategy, accelerator)
    if name == "fsdp2" and cfg.distributed.strategy == "auto" and (adopted := adopt_accelerate_fsdp(cfg)):
        say(f"from accelerate's FSDP config: {', '.join(adopted)}")
    if name in ("ddp", "fsdp2"):
        ensure_process_group(name, accelerator.device)  # fail before the model is loaded
    if name == "deepspeed":
        from posttrain.core.strategy_deepspeed import DeepSpeed

        return DeepSpeed(cfg, accelerator)
    return {"none": Strategy, "ddp": DDP, "fsdp2": FSDP2}[name](cfg, accelerator)
