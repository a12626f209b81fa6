"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"), offline on
unpaired data: each row is a prompt, one completion and a yes/no `label` (`data.unpaired`; preference
rows are unpaired into a desirable and an undesirable row).

Per row the loss is lambda_y - v(x, y) (`losses.kto.kto_loss`), with the implied reward r = log pi/ref
of the completion compared to a shared reference point z_ref: the KL estimate from MISMATCHED pairs of
the micro-batch (row i's prompt with row i-1's completion, no gradient, clamped at 0). The reference is
a frozen copy of the initial model (`core.models.Reference`). Every loss is `sum(row loss) / num_items`
with `num_items` the rows of the whole accumulated step. As TRL 1.16 (whose reference point is one
mean over the processes; here over this process's micro-batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from posttrain.config import DataConfig, TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import token_logps
from posttrain.data.unpaired import build_unpaired_examples, kto_collate
from posttrain.losses.kto import kto_loss, kto_reference_point


@dataclass
class KTOConfig(TrainConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:pref"))
    beta: float = opt(0.1, "inverse temperature of the implied reward")
    desirable_weight: float = opt(1.0, "lambda_D, weight of desirable rows (paper: lambda_D n_D / (lambda_U n_U) "
                                       "in [1, 4/3])")
    undesirable_weight: float = opt(1.0, "lambda_U, weight of undesirable rows")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = KTOConfig


def _seq_logps(model, ids, attn, mask, chunk: int) -> torch.Tensor:
    return (token_logps(model, ids, attn, chunk_size=chunk) * mask).sum(-1)


class KTO(Algorithm):
    name = "kto"
    dropout = False  # log-ratios against the reference (and the KL reference point): a deterministic forward
    plot_keys = ("loss", "eval/loss", "kl", "rewards/desirable", "rewards/undesirable", "eval/rewards/margin",
                 "grad_norm")

    def __init__(self, cfg: KTOConfig):
        if not cfg.beta > 0:
            raise ValueError(f"beta must be > 0, got {cfg.beta}")
        if cfg.desirable_weight < 0 or cfg.undesirable_weight < 0:
            raise ValueError("desirable_weight and undesirable_weight must be >= 0")
        if cfg.data.packing:
            raise ValueError("data.packing: not supported for KTO (rows are right-padded); set it false")
        self.cfg = cfg
        self.eval_examples = []

    def setup(self, engine) -> None:
        from posttrain.data.formats import load_rows

        c, tok = self.cfg, engine.tokenizer
        self.engine, self.pad_id = engine, tok.pad_token_id
        self.examples, summary = build_unpaired_examples(load_rows(c.data.train), tok, max_length=c.max_length)
        engine.say(f"train unpaired rows: {summary}")
        if c.data.eval:
            rows = load_rows(c.data.eval)
            rows = rows.subset(range(min(len(rows), c.data.max_eval_rows or len(rows))))
            self.eval_examples, summary = build_unpaired_examples(rows, tok, max_length=c.max_length)
            engine.say(f"eval unpaired rows: {summary}")
        self.ref = engine.reference()
        self.sampler = StepSampler(len(self.examples), c.batch_size, c.grad_accum, c.seed, engine.rank, engine.world)

    def _collate(self, examples):
        return kto_collate(examples, self.engine.tokenizer, self.pad_id, self.cfg.max_length).to(self.engine.device)

    def micro_batches(self, step: int):
        return [self._collate([self.examples[i] for i in idx]) for idx in self.sampler.micro_indices(step)]

    def loss(self, model, batch, norm):
        c = self.cfg
        logps = _seq_logps(model, batch.input_ids, batch.attention_mask, batch.mask, c.logits_chunk)
        with torch.no_grad():
            kl_pi = kl_ref = None
            if batch.kl_input_ids is not None:
                kl_pi = _seq_logps(model, batch.kl_input_ids, batch.kl_attention_mask, batch.kl_mask, c.logits_chunk)
            with self.ref.model() as ref:
                ref_logps = _seq_logps(ref, batch.input_ids, batch.attention_mask, batch.mask, c.logits_chunk)
                if kl_pi is not None:
                    kl_ref = _seq_logps(ref, batch.kl_input_ids, batch.kl_attention_mask, batch.kl_mask,
                                        c.logits_chunk)
        z_ref = kto_reference_point(kl_pi, kl_ref).to(logps.device)
        losses, metrics = kto_loss(logps, ref_logps, batch.labels, z_ref, beta=c.beta,
                                   desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight)
        metrics["rewards/margin"] = metrics["rewards/desirable"] - metrics["rewards/undesirable"]
        return losses.sum() / norm.num_items, metrics

    def has_eval(self) -> bool:
        return bool(self.eval_examples)

    def evaluate(self, model) -> dict[str, float]:
        """The training loss and metrics on the held-out rows (batches of `batch_size`), means over batches
        weighted by rows."""
        sums, total, bs = {}, 0.0, self.cfg.batch_size
        for s in range(0, len(self.eval_examples), bs):
            b = self._collate(self.eval_examples[s:s + bs])
            n = float(len(b.labels))
            loss, metrics = self.loss(model, b, n)
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            total += n
        return {k: v / total for k, v in sums.items()}


def run(cfg: KTOConfig) -> dict:
    """Train KTO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, KTO(cfg)).train()
