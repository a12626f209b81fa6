"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"): SFT on
the chosen response plus lambda times an odds-ratio term that pushes the chosen response's odds above
the rejected one's, in one model and one stage; no reference model at all.

Data: preference rows, as DPO (`data.preference`). Chosen and rejected go through the model in one
forward pass; the maths is `losses.orpo.orpo_loss`. Every loss is `sum(pair weight * pair loss) /
num_items` over the whole accumulated step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from posttrain.config import DataConfig, TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import token_logps
from posttrain.data.preference import load_preference_splits, preference_collate
from posttrain.losses.orpo import orpo_loss


@dataclass
class ORPOConfig(TrainConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:pref"))
    lam: float = opt(0.1, "weight of the odds-ratio term (the paper's lambda; TRL's beta)")
    drop_truncated: bool = opt(False, "drop rows longer than max_length instead of cutting the responses' tails")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = ORPOConfig


class ORPO(Algorithm):
    name = "orpo"
    plot_keys = ("loss", "eval/loss", "nll", "or_loss", "log_odds_ratio", "accuracy", "eval/accuracy", "grad_norm")

    def __init__(self, cfg: ORPOConfig):
        if cfg.lam < 0:
            raise ValueError(f"lam must be >= 0, got {cfg.lam}")
        if cfg.data.packing:
            raise ValueError("data.packing: not supported for ORPO (pairs are right-padded); set it false")
        self.cfg = cfg
        self.eval_examples = []

    def setup(self, engine) -> None:
        c = self.cfg
        self.engine, self.pad_id = engine, engine.tokenizer.pad_token_id
        self.examples, self.eval_examples = load_preference_splits(c, engine.tokenizer, engine.say)
        self.sampler = StepSampler(len(self.examples), c.batch_size, c.grad_accum, c.seed, engine.rank, engine.world)

    def micro_batches(self, step: int):
        return [preference_collate([self.examples[i] for i in idx], self.pad_id).to(self.engine.device)
                for idx in self.sampler.micro_indices(step)]

    def loss(self, model, batch, norm):
        p = batch.num_pairs
        logps = token_logps(model, batch.input_ids, batch.attention_mask, chunk_size=self.cfg.logits_chunk)
        return orpo_loss(logps[:p], batch.mask[:p], logps[p:], batch.mask[p:], lam=self.cfg.lam,
                         num_items=norm.num_items, weight=batch.weight)

    def has_eval(self) -> bool:
        return bool(self.eval_examples)

    def evaluate(self, model) -> dict[str, float]:
        """The training loss and metrics on the held-out pairs, each a mean over rows."""
        sums, total, bs = {}, 0.0, self.cfg.batch_size
        for s in range(0, len(self.eval_examples), bs):
            b = preference_collate(self.eval_examples[s:s + bs], self.pad_id).to(self.engine.device)
            loss, metrics = self.loss(model, b, self.normaliser([b]))
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b.num_items
            total += b.num_items
        return {k: v / total for k, v in sums.items()}


def run(cfg: ORPOConfig) -> dict:
    """Train ORPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, ORPO(cfg)).train()
