"""The one training loop every algorithm shares, on `accelerate` and the distributed engine that
`distributed.strategy` selects (`core/strategy.py`: none, ddp, fsdp2, deepspeed).

Per optimizer step: the algorithm hands over this process's micro-batches; the engine builds the
step's `Normaliser` from their `counts` summed over all micro-batches and processes (so the loss is
one mean over the whole accumulated batch) and passes it to every `loss` call, runs each micro-batch's
loss through the strategy's wrapped module and backpropagates it (DDP all-reduces, FSDP2 reduce-scatters
the gradients; DDP skips the sync on accumulation steps), clips the global gradient norm, and steps
AdamW and the schedule. A non-finite loss or gradient skips the step with params and optimizer
untouched; `max_consecutive_skips` in a row abort. With `mixed_precision: fp16` (on a GPU) the loss is
scaled by a `torch.amp.GradScaler` before backward and the gradients unscaled before clipping, so small
gradients do not underflow; an overflow at a scale above 1 is the scaler's (it halves the scale) and
does not count toward the abort (DeepSpeed scales fp16 itself). Logging, evaluation, atomic
checkpoints, exact resume and the final `save_pretrained` folder live here too.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch
import torch.distributed as dist

from posttrain.config import ConfigError, plain, to_yaml
from posttrain.core import checkpoint as ckpt
from posttrain.core import checkpoint_integrity as integrity
from posttrain.core.distributed import all_reduce
from posttrain.core.divergence import abs_max, divergence_problems
from posttrain.core.speedups import speed_up
from posttrain.core.metrics_log import MetricsLogger, read_metrics
from posttrain.core.mixed_precision import LossScale, fp16_note, mixed_precision_name
from posttrain.core.models import save_final
from posttrain.core.signals import StopFlag, TrainingInterrupted
from posttrain.losses.reduce import step_normaliser


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (e.g. too many consecutive non-finite steps)."""


def apply_global_batch(cfg, world: int) -> None:
    """`distributed.global_batch_size` > 0 sets `batch_size` per process; it must divide evenly."""
    g = cfg.distributed.global_batch_size
    if g <= 0:
        return
    if g % (world * cfg.grad_accum):
        raise ConfigError(f"distributed.global_batch_size {g} is not divisible by {world} processes x grad_accum "
                          f"{cfg.grad_accum}; pick a multiple of {world * cfg.grad_accum}")
    cfg.batch_size = g // (world * cfg.grad_accum)


class Engine:
    def __init__(self, cfg, algorithm, model=None, tokenizer=None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from posttrain.core.allocator import keep_freed_memory
        from posttrain.core.strategy import accelerator_kwargs, launcher_mismatch, make_strategy
        from posttrain.core.threads import pick_threads

        self.cfg, self.algo = cfg, algorithm
        threads, why = pick_threads(cfg.threads)
        torch.set_num_threads(threads)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                                       mixed_precision=mixed_precision_name(cfg.mixed_precision),
                                       **accelerator_kwargs(cfg))
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.loss_scale = LossScale(self.accelerator.scaler)  # accelerate's GradScaler for fp16 on a GPU
        if fp16_note(cfg.mixed_precision, self.accelerator):
            self.say(fp16_note(cfg.mixed_precision, self.accelerator))
        self.strategy = make_strategy(cfg, self.accelerator, self.say)
        apply_global_batch(cfg, self.world)
        self.say(f"CPU threads per process: {threads} ({why})")
        if self.accelerator.device.type == "cpu":
            keep_freed_memory()   # freed tensors stay mapped for the next step (core/allocator.py)
        self.ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
        self._check_resume_config()
        set_seed(cfg.seed)
        if model is None:
            from posttrain.core.models import load_model

            model, tokenizer = load_model(cfg)
        self.model, self.tokenizer = model.to(self.accelerator.device), tokenizer
        speed_up(self.model, algorithm.onednn_linear)  # leaner backwards (core/speedups.py)
        self.device = self.accelerator.device
        self.step, self.skipped, self.consecutive_skips, self._stop, self._agreed_signum = 0, 0, 0, None, 0
        self.last_loss, self.init_abs_max = None, None
        if not algorithm.dropout:
            from posttrain.core.models import disable_dropout

            if disable_dropout(self.model):
                self.say(f"dropout off: {algorithm.name} compares forward passes, which dropout would perturb")
        algorithm.setup(self)
        self._sync_initial_params()
        self.strategy.wrap(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.strategy.prepare(self)
        if (warning := launcher_mismatch(self.world)) is not None:
            self.say(warning)
        self.say(f"world size {self.world}, strategy {self.strategy.describe()}, device {self.device}, "
                 f"dtype {next(self.model.parameters()).dtype} (mixed precision "
                 f"{mixed_precision_name(cfg.mixed_precision)}), batch {cfg.batch_size} per process x "
                 f"{cfg.grad_accum} accumulation x {self.world} processes")

    def reference(self):
        """The frozen reference policy (`core.models.Reference`), placed by the strategy: a frozen copy is
        sharded like the policy under fsdp2; LoRA's adapter-disabled base is the policy itself."""
        from posttrain.core.models import Reference

        ref = Reference(self.model).to(self.device)
        if not ref.shared:
            ref._model = self.strategy.wrap_frozen(ref._model)
        return ref

    # ----------------------------------------------------------------- set-up
    def _sync_initial_params(self) -> None:
        if self.world > 1:
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(t.data, src=0)

    def _make_optimizer(self):
        c = self.cfg
        betas = tuple(plain(c.adam_betas))
        # fused AdamW (one kernel for all parameters) runs on CPU and CUDA; it is transformers' default too
        return torch.optim.AdamW(self.params, lr=c.learning_rate, betas=betas, weight_decay=c.weight_decay, fused=True)

    def _make_scheduler(self):
        from transformers import get_scheduler

        names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
        if self.cfg.lr_scheduler not in names:
            raise ValueError(f"lr_scheduler: expected one of {sorted(names)}, found '{self.cfg.lr_scheduler}'")
        return get_scheduler(names[self.cfg.lr_scheduler], self.optimizer, num_warmup_steps=self.cfg.warmup_steps,
                             num_training_steps=self.cfg.max_steps)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def say(self, msg: str) -> None:
        if self.is_main:
            print(f"[posttrain] {msg}", file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- resume / save
    def _check_resume_config(self) -> None:
        """Before anything is loaded: refuse to resume a checkpoint trained with other settings."""
        if not self.cfg.resume:
            return
        from posttrain.core.resume_check import check_resume_config

        path = ckpt.latest_complete(self.ckpt_root, log=lambda msg: None)
        if path is not None:
            check_resume_config(path, self.cfg)

    def _already_finished(self) -> dict | None:
        """The last logged metrics (plus `already_finished`) when a resumed run has nothing left to do."""
        final = os.path.join(self.cfg.output_dir, "final")
        if self.step < self.cfg.max_steps or not os.path.isdir(final):
            return None
        self.say(f"already finished at step {self.step}: {os.path.abspath(final)} "
                 f"(raise max_steps to train on, or use a new output_dir / resume=false to train again)")
        path = os.path.join(self.cfg.output_dir, "metrics.jsonl")
        rows = read_metrics(path) if os.path.exists(path) else []
        return {**(rows[-1] if rows else {}), "already_finished": True, "step": self.step}

    def _resume(self) -> None:
        if self.is_main:
            for p in integrity.clean_temp_folders(self.cfg.output_dir, self.ckpt_root):
                self.say(f"removed {p}, a temp folder left by an interrupted run")
        if self.cfg.resume:
            from posttrain.core import checkpoint_sharded as sharded

            found = sharded.resume_latest(self.ckpt_root, self.strategy.sharded, model=self.model,
                                          optimizer=self.optimizer, scheduler=self.scheduler, rank=self.rank,
                                          world=self.world, is_main=self.is_main, barrier=self.barrier, log=self.say)
            if found is not None:
                meta, algo_state = found
                self.step, self.skipped = meta["step"], meta.get("skipped", 0)
                self.consecutive_skips = meta.get("consecutive_skips", 0)
                self.init_abs_max = meta.get("init_abs_max")
                self.loss_scale.load_state_dict(meta.get("grad_scaler"))
                self.algo.load_state_dict(algo_state)
        if self.init_abs_max is None:
            self.init_abs_max = abs_max(self.params)
        self._warn_if_short_of_space()

    def _warn_if_short_of_space(self) -> None:
        """Before the first save: warn when the free space cannot hold two checkpoints."""
        if not self.is_main:
            return
        need, free = integrity.estimate_bytes(self.model, self.optimizer), integrity.free_bytes(self.ckpt_root)
        if free < 2 * need:
            self.say(f"warning: the {integrity.mb(free)} free where checkpoints go ({self.ckpt_root}) cannot hold two "
                     f"checkpoints of ~{integrity.mb(need)} each; free some space or point output_dir elsewhere")

    def save_checkpoint(self) -> str:
        kw = dict(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                  algo_state=self.algo.state_dict(), config_yaml=to_yaml(self.cfg), is_main=self.is_main,
                  rank=self.rank, barrier=self.barrier, keep=self.cfg.save_total_limit,
                  trainer_state={"skipped": self.skipped, "consecutive_skips": self.consecutive_skips,
                                 "init_abs_max": self.init_abs_max,
                                 "grad_scaler": self.loss_scale.state_dict()})
        if self.strategy.sharded:
            from posttrain.core import checkpoint_sharded as sharded

            return sharded.save(self.ckpt_root, self.step, world=self.world, **kw)
        return ckpt.save_checkpoint(self.ckpt_root, self.step, **kw)

    # ----------------------------------------------------------------- one step
    def _backward_step(self, micros) -> dict:
        # the step's normaliser, for every algorithm: counts summed over micro-batches and processes
        local = [sum(c) for c in zip(*(self.algo.counts(m) + (self.algo.tokens(m),) for m in micros))]
        items, loss_tokens, rows, tokens = all_reduce(local)
        norm = step_normaliser(items, loss_tokens, rows, self.algo.max_len())
        loss_sum, sums = 0.0, {}
        for i, m in enumerate(micros):
            with self.strategy.accumulate(i == len(micros) - 1):
                with self.accelerator.autocast():
                    loss, metrics = self.strategy.forward(self.algo.loss, m, norm)
                self.strategy.backward(self.loss_scale.scale(loss))
            loss_sum = loss_sum + loss.detach()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v))
        keys = sorted(sums)
        # one host transfer for all metrics of the step (a GPU sync per metric would stall the stream)
        values = torch.stack([torch.as_tensor(x, dtype=torch.float32, device=self.device).reshape(())
                              for x in [loss_sum] + [sums[k] for k in keys]]).tolist()
        # the stop votes (a signal any process got) ride on this reduction: no collective of their own
        votes = self._stop.votes() if self._stop is not None else [0.0] * len(StopFlag.SIGNALS)
        reduced = all_reduce([values[0]] + [v / len(micros) for v in values[1:]] + votes)
        self._agreed_signum = StopFlag.agreed(reduced[len(values):])
        out = {"loss": reduced[0], **{k: v / self.world for k, v in zip(keys, reduced[1:len(values)])}}
        out["tokens"] = tokens
        return out

    def train_step(self) -> dict:
        micros = self.algo.micro_batches(self.step)
        metrics = self._backward_step(micros)
        scale = self.loss_scale.unscale(self.optimizer)  # fp16: the gradients back at their true size
        clip = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        grad_norm = self.strategy.clip(self.params, clip)
        finite = math.isfinite(metrics["loss"]) and math.isfinite(grad_norm)
        self.last_loss = metrics["loss"]
        overflow = self.loss_scale.overflow(scale, metrics["loss"], grad_norm)
        if finite:
            self.loss_scale.step(self.optimizer)
            self.scheduler.step()
            self.consecutive_skips = 0
        else:
            self.skipped += 1
            self.consecutive_skips += 0 if overflow else 1
        self.loss_scale.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics.update(grad_norm=grad_norm, lr=self.scheduler.get_last_lr()[0], skipped_steps=self.skipped)
        if scale is not None:
            metrics["grad_scale"] = scale
        if overflow:
            self.say(f"step {self.step}: fp16 gradient overflow at loss scale {scale:g}; step skipped, scale "
                     f"lowered to {self.loss_scale.current():g}")
        elif not finite:
            self.say(f"step {self.step}: non-finite loss or gradient (loss={metrics['loss']}, "
                     f"grad_norm={grad_norm}); step skipped, params and optimizer untouched")
            if self.consecutive_skips >= self.cfg.max_consecutive_skips:
                raise TrainingAborted(f"{self.consecutive_skips} consecutive non-finite steps, the last at step "
                                      f"{self.step}; check the learning rate, the data and mixed precision")
        self.algo.on_step_end(self.step, metrics)
        return metrics

    # ----------------------------------------------------------------- the loop
    def evaluate(self) -> dict:
        if not self.algo.has_eval():
            return {}
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            res = self.algo.evaluate(self.model)
        self.model.train(was)
        return {f"eval/{k}": v for k, v in res.items()}

    def train(self) -> dict:
        from tqdm.auto import tqdm

        c = self.cfg
        self._resume()
        done = self._already_finished()
        if done is not None:
            return done
        if self.is_main:
            os.makedirs(c.output_dir, exist_ok=True)
            with open(os.path.join(c.output_dir, "config.yaml"), "w") as f:
                f.write(to_yaml(c))
        log = MetricsLogger(c.output_dir, plain(c.report_to), resume_step=self.step, enabled=self.is_main,
                            run_name=os.path.basename(os.path.abspath(c.output_dir)))
        self.model.train()
        bar = tqdm(total=c.max_steps, initial=self.step, disable=not self.is_main, desc=self.algo.name,
                   dynamic_ncols=True, file=sys.stderr)
        with StopFlag(self.say) as stop:
            self._stop = stop  # its votes ride on each step's metrics reduction (_backward_step)
            last = self._loop(log, bar, stop)
        self._finish()
        return {**last, "skipped_steps": self.skipped}

    def _loop(self, log, bar, stop) -> dict:
        c, last = self.cfg, {}
        try:
            while self.step < c.max_steps:
                t0 = time.perf_counter()
                m = self.train_step()
                dt = time.perf_counter() - t0
                m["tokens_per_s"] = m["tokens"] / max(dt, 1e-9)
                m["step_s"] = dt
                due = lambda every: every > 0 and self.step % every == 0  # noqa: E731
                if due(c.eval_steps) or (self.step == c.max_steps and self.algo.has_eval()):
                    m.update(self.evaluate())
                if due(c.logging_steps) or self.step == c.max_steps:
                    log.log(self.step, m)
                bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}", refresh=False)
                bar.update(1)
                if due(c.save_steps) and self.step < c.max_steps:
                    self.save_checkpoint()
                last = m
                if self.step < c.max_steps and self._stop_requested(stop):
                    self._interrupt(stop.signum)
        finally:
            bar.close()
            log.close()
        return last

    def _stop_requested(self, stop: StopFlag) -> int:
        """The signal any process got, agreed through this step's metrics reduction (later: the next step's)."""
        if self.world == 1:
            return stop.signum
        return stop.adopt(self._agreed_signum)

    def _interrupt(self, signum: int):
        if not any(s == self.step for s, _ in ckpt.list_checkpoints(self.ckpt_root)):
            self.save_checkpoint()
        msg = f"interrupted at step {self.step}; rerun the same command to resume"
        self.say(msg)
        raise TrainingInterrupted(msg, signum)

    def _refuse_if_diverged(self) -> None:
        """Before the last checkpoint and the final folder: a diverged run is an error, not a result (the
        older checkpoints are left as they are)."""
        c = self.cfg
        problems = divergence_problems(model=self.model, last_loss=self.last_loss, skipped=self.skipped,
                                       steps=self.step, init_abs_max=self.init_abs_max,
                                       max_skipped_fraction=c.max_skipped_fraction,
                                       min_skipped_steps=c.min_skipped_steps,
                                       max_weight_growth=c.max_weight_growth)
        if problems:
            raise TrainingAborted(f"the run diverged, so no final model was saved: {'; '.join(problems)}. "
                                  f"{ckpt.newest_complete_name(self.ckpt_root).capitalize()} (in {self.ckpt_root}; "
                                  "it may hold diverged weights already). Lower learning_rate or check the data and "
                                  "mixed precision, then rerun with resume=false to start over")

    def _save_final(self, out: str, state_dict: dict | None = None) -> None:
        """`state_dict`: the full weights gathered from a sharded model (fsdp2)."""
        from posttrain.core.models import final_form

        merge, why = final_form(self.cfg, self.model)
        try:
            save_final(self.model, self.tokenizer, out, merge_lora=merge, state_dict=state_dict)
            if why:
                self.say(why)
        except Exception as e:
            need = integrity.model_bytes(self.model)
            if integrity.is_disk_full(e, self.cfg.output_dir, 2**20):
                integrity.clean_temp_folders(self.cfg.output_dir, self.ckpt_root)
                raise ckpt.disk_full_error("the final model", out, need, self.ckpt_root) from None
            raise

    def _finish(self) -> None:
        c = self.cfg
        self._refuse_if_diverged()
        if not any(s == self.step for s, _ in ckpt.list_checkpoints(self.ckpt_root)):
            self.save_checkpoint()
        self.say(f"{self.skipped} of {self.step} steps were skipped as non-finite")
        full = self.strategy.full_state_dict()  # collective: every process takes part in the gather
        if self.is_main:
            self._save_final(os.path.join(c.output_dir, "final"), full)
            self.plot()
        self.algo.finish(self)
        self.barrier()

    def plot(self) -> str | None:
        from posttrain.report.plots import plot_curves

        path = os.path.join(self.cfg.output_dir, "metrics.jsonl")
        if not os.path.exists(path):
            return None
        return plot_curves(read_metrics(path), os.path.join(self.cfg.output_dir, "loss.png"),
                           self.algo.plot_keys, title=f"{self.algo.name}: {self.cfg.output_dir}")
