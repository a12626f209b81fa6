"""`distributed.strategy: deepspeed`: ZeRO-2 / ZeRO-3 through accelerate's DeepSpeed plugin (GPU only).

accelerate builds the DeepSpeed engine around the model, optimizer and schedule (`accelerator.prepare`).
The engine then owns what the loop does by hand under the other strategies: `accelerator.backward`
runs DeepSpeed's backward (gradient reduce-scatter / partitioning) and, on the step's last micro-batch,
its clipping (`gradient_clipping` = max_grad_norm) and optimizer step. ZeRO-3's parameter gathering is a
hook on every submodule, so the chunked output head and the direct `get_decoder()` call work unchanged.
Checkpoints are the full (gathered) kind. Not yet run on a GPU: see docs/DISTRIBUTED.md.

Why not on CPU: DeepSpeed itself trains on CPU (0.19.8 with DS_ACCELERATOR=cpu and gloo: ZeRO-2 and ZeRO-3
ran a nano Llama on 2 processes through `deepspeed.initialize`, the same losses at both stages), but
accelerate 1.15 sets DeepSpeed up only on an accelerator device: `Accelerator(cpu=True)` gives MULTI_CPU
and `prepare` returns a DDP module (the plugin ignored), and `cpu=False` without a device gives one
process per launch (`num_processes` 1, no process group). So this strategy asks for a GPU.
"""
from __future__ import annotations

import contextlib
import importlib.util

import torch

from posttrain.config import ConfigError
from posttrain.core.strategy import Strategy, _Runner


def plugin(cfg):
    """accelerate's `DeepSpeedPlugin` for `cfg`; a one-line error without the package or a GPU."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("distributed.strategy=deepspeed needs the deepspeed package: pip install deepspeed "
                         "(on a machine with CUDA); or use strategy fsdp2, which needs nothing extra")
    if not torch.cuda.is_available():
        raise ConfigError("distributed.strategy=deepspeed needs a CUDA GPU (accelerate sets DeepSpeed up only on "
                         "one); on CPU use ddp or fsdp2")
    from accelerate.utils import DeepSpeedPlugin

    d = cfg.distributed
    if d.zero_stage not in (2, 3):
        raise ConfigError(f"distributed.zero_stage: expected 2 or 3, found {d.zero_stage}")
    offload = "cpu" if d.cpu_offload else "none"
    return DeepSpeedPlugin(zero_stage=d.zero_stage, gradient_accumulation_steps=cfg.grad_accum,
                           gradient_clipping=cfg.max_grad_norm if cfg.max_grad_norm > 0 else None,
                           offload_optimizer_device=offload,
                           offload_param_device=offload if d.zero_stage == 3 else "none",
                           zero3_save_16bit_model=False)


class DeepSpeed(Strategy):
    name = "deepspeed"
    sharded = False

    def wrap(self, model):
        self.model = model
        # DeepSpeed averages over processes and divides by gradient_accumulation_steps; our loss is already a
        # sum over the whole step divided by its global item count
        self.grad_scale = float(self.world * self.cfg.grad_accum)

    def prepare(self, engine) -> None:
        # with no dataloader to read it from, accelerate's prepare() refuses DeepSpeed's "auto" micro-batch size
        # (an error met on the way in, on CPU; train_batch_size = micro x accumulation x processes it fills)
        ds_config = self.accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = self.cfg.batch_size
        runner, engine.optimizer, engine.scheduler = self.accelerator.prepare(_Runner(self.model), engine.optimizer,
                                                                              engine.scheduler)
        self.ds = runner
        self.engine = engine

    def forward(self, fn, *args, **kwargs):
        return self.ds(fn, *args, **kwargs)

    def accumulate(self, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss):
        self.accelerator.backward(loss * self.grad_scale)

    def clip(self, params, max_norm):
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def full_state_dict(self):
        sd = self.accelerator.get_state_dict(self.ds)
        return None if sd is None else {k.removeprefix("inner."): v for k, v in sd.items()}

    def describe(self):
        d = self.cfg.distributed
        return f"deepspeed (ZeRO-{d.zero_stage}{', CPU offload' if d.cpu_offload else ''})"
