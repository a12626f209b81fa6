"""Direct preference optimisation and its variants, offline on preference pairs.

`loss` picks one function of `posttrain.losses.preference.DPO_LOSSES` once, at build time:
  sigmoid  DPO (Rafailov et al. 2023); with label_smoothing > 0, conservative DPO (cDPO)
  ipo      IPO (Azar et al. 2023): loss on token-averaged log-probs, rewards logged on summed ones, as TRL
  hinge    SLiC-style hinge on the log-ratios
  robust   robust DPO (Chowdhury et al. 2024), label_smoothing = assumed flip rate
  simpo    SimPO (Meng et al. 2024): reference-free, length-normalised; no reference is built at all
`rpo_alpha > 0` adds the NLL of the chosen response, per token and averaged per pair as in RPO/IRPO
(Pang et al. 2024: -log pi(y_c|x) / |y_c|), against the fall of chosen log-probs.

Chosen and rejected run through the model in ONE forward pass (`PreferenceBatch`: chosen rows then
rejected rows), log-probs chunked (`core.logprobs.token_logps`). The reference is a frozen copy of the
initial model, or with LoRA the same model with its adapter disabled (`core.models.Reference`); with
`precompute_ref` its log-probs are computed once before training, cached on the examples, and the copy is
freed. Every loss is `sum(pair weight * pair loss) / num_items` over the whole accumulated step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from posttrain.config import DataConfig, TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import token_logps
from posttrain.data.preference import load_preference_splits, preference_collate, response_collate
from posttrain.losses.preference import DPO_LOSSES

REFERENCE_FREE = {"simpo"}


@dataclass
class DPOConfig(TrainConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:pref"))
    loss: str = opt("sigmoid", "preference loss: sigmoid (DPO), ipo, hinge, robust or simpo (reference-free)")
    beta: float = opt(0.1, "inverse temperature of the implicit reward (SimPO: its reward scale, ~2)")
    label_smoothing: float = opt(0.0, "assumed label-flip rate: cDPO with sigmoid, the flip rate of robust; "
                                      "smoothing of simpo")
    simpo_gamma: float = opt(0.5, "SimPO target reward margin (reward units)")
    rpo_alpha: float = opt(0.0, "weight of the chosen response's per-token NLL (RPO); 0 = off")
    precompute_ref: bool = opt(False, "compute reference log-probs once before training and free the reference "
                                      "copy (no reference forward per step)")
    drop_truncated: bool = opt(False, "drop rows longer than max_length instead of cutting the responses' tails")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = DPOConfig


def sequence_logps(model, input_ids, attention_mask, mask, chunk_size: int) -> torch.Tensor:
    """Summed log-probs of the masked (response) tokens of each row, float32 `[N]`."""
    return (token_logps(model, input_ids, attention_mask, chunk_size=chunk_size) * mask).sum(-1)


def _wmean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.detach() * w).sum() / w.sum()


class DPO(Algorithm):
    name = "dpo"
    dropout = False  # log-ratios against the reference: the policy's forward must be deterministic
    plot_keys = ("loss", "eval/loss", "rewards/accuracy", "rewards/margin", "rewards/chosen", "rewards/rejected",
                 "logps/chosen", "logps/rejected", "eval/rewards/accuracy", "grad_norm")

    def __init__(self, cfg: DPOConfig):
        if cfg.loss not in DPO_LOSSES:
            raise ValueError(f"loss: expected one of {sorted(DPO_LOSSES)}, found '{cfg.loss}'")
        if not cfg.beta > 0:
            raise ValueError(f"beta must be > 0, got {cfg.beta}")
        if cfg.rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {cfg.rpo_alpha}")
        if cfg.data.packing:
            raise ValueError("data.packing: not supported for DPO (pairs are right-padded); set it false")
        self.cfg = cfg
        self.loss_fn = DPO_LOSSES[cfg.loss]
        self.needs_ref = cfg.loss not in REFERENCE_FREE
        self.ref = None
        self.eval_examples = []

    def setup(self, engine) -> None:
        from posttrain.core.models import Reference

        c = self.cfg
        self.engine, self.pad_id = engine, engine.tokenizer.pad_token_id
        self.examples, self.eval_examples = load_preference_splits(c, engine.tokenizer, engine.say)
        if self.needs_ref:
            self.ref = Reference(engine.model)
            if c.precompute_ref:
                self.precompute(self.examples + self.eval_examples)
                self.ref = None  # every batch carries its reference log-probs now; free the copy
        self.sampler = StepSampler(len(self.examples), c.batch_size, c.grad_accum, c.seed, engine.rank, engine.world)

    @torch.no_grad()
    def precompute(self, examples) -> None:
        """Cache the reference log-prob of every response on its example (`ref_logps`), in batches."""
        from tqdm.auto import tqdm

        flat = [(ex, k) for ex in examples for k in range(len(ex.responses))]
        order = sorted(range(len(flat)), key=lambda i: len(flat[i][0].responses[flat[i][1]].input_ids))
        for ex in examples:
            ex.ref_logps = [0.0] * len(ex.responses)
        n, dev = 2 * self.cfg.batch_size, self.engine.device
        with self.ref.model() as ref:
            for s in tqdm(range(0, len(order), n), desc="reference log-probs", disable=not self.engine.is_main):
                idx = order[s:s + n]
                ids, attn, mask = response_collate([flat[i][0].responses[flat[i][1]] for i in idx], self.pad_id)
                lps = sequence_logps(ref, ids.to(dev), attn.to(dev), mask.to(dev), self.cfg.logits_chunk)
                for i, lp in zip(idx, lps.tolist()):
                    ex, k = flat[i]
                    ex.ref_logps[k] = lp

    def micro_batches(self, step: int):
        return [preference_collate([self.examples[i] for i in idx], self.pad_id).to(self.engine.device)
                for idx in self.sampler.micro_indices(step)]

    def reference_logps(self, batch):
        """(ref chosen [P], ref rejected [P]): cached, computed now, or (None, None) for SimPO."""
        if batch.ref_chosen_logps is not None or self.ref is None:
            return batch.ref_chosen_logps, batch.ref_rejected_logps
        with self.ref.model() as ref:
            lps = sequence_logps(ref, batch.input_ids, batch.attention_mask, batch.mask, self.cfg.logits_chunk)
        return lps[:batch.num_pairs], lps[batch.num_pairs:]

    def loss(self, model, batch, norm):
        c, p, w = self.cfg, batch.num_pairs, batch.weight
        logps = sequence_logps(model, batch.input_ids, batch.attention_mask, batch.mask, c.logits_chunk)  # [2P]
        lengths = batch.mask.sum(-1)                                                                    # [2P]
        ref_chosen, ref_rejected = self.reference_logps(batch)
        losses, r_chosen, r_rejected = self.loss_fn(
            logps[:p], logps[p:], ref_chosen, ref_rejected, beta=c.beta, label_smoothing=c.label_smoothing,
            simpo_gamma=c.simpo_gamma, chosen_lengths=lengths[:p], rejected_lengths=lengths[p:])
        loss = (w * losses).sum() / norm.num_items
        metrics = {"rewards/chosen": _wmean(r_chosen, w), "rewards/rejected": _wmean(r_rejected, w),
                   "rewards/accuracy": _wmean((r_chosen > r_rejected).float(), w),
                   "rewards/margin": _wmean(r_chosen - r_rejected, w),
                   "logps/chosen": _wmean(logps[:p], w), "logps/rejected": _wmean(logps[p:], w)}
        if c.rpo_alpha:
            nll = -logps[:p] / lengths[:p]
            loss = loss + c.rpo_alpha * (w * nll).sum() / norm.num_items
            metrics["nll"] = _wmean(nll, w)
        return loss, metrics

    def has_eval(self) -> bool:
        return bool(self.eval_examples)

    def evaluate(self, model) -> dict[str, float]:
        """The training loss and metrics on the held-out pairs, each a mean over rows."""
        sums, total = {}, 0.0
        bs = self.cfg.batch_size
        for s in range(0, len(self.eval_examples), bs):
            b = preference_collate(self.eval_examples[s:s + bs], self.pad_id).to(self.engine.device)
            loss, metrics = self.loss(model, b, self.normaliser([b]))
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b.num_items
            total += b.num_items
        return {k: v / total for k, v in sums.items()}


def run(cfg: DPOConfig) -> dict:
    """Train DPO (or a variant) with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, DPO(cfg)).train()
