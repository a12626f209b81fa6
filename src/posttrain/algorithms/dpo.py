"""Direct preference optimisation and its variants, offline on preference pairs.

`loss` picks one row of `posttrain.losses.preference.DPO_LOSSES` ({name: (function, needs_reference)})
once, at build time, with the settings that variant takes bound (`bind_dpo_loss`):
  sigmoid  DPO (Rafailov et al. 2023); with label_smoothing > 0, conservative DPO (cDPO)
  ipo      IPO (Azar et al. 2023): loss on token-averaged log-probs, rewards logged on summed ones, as TRL
  hinge    SLiC-style hinge on the log-ratios
  robust   robust DPO (Chowdhury et al. 2024), label_smoothing = assumed flip rate
  simpo    SimPO (Meng et al. 2024): reference-free, length-normalised; no reference is built at all
`rpo_alpha > 0` adds the NLL of the chosen response, per token and averaged per pair as in RPO/IRPO
(Pang et al. 2024: -log pi(y_c|x) / |y_c|), against the fall of chosen log-probs.

Chosen and rejected run through the model in ONE forward pass (`PreferenceBatch`: chosen sequences then
rejected ones). By default (`padding_free`) they are packed back to back in one row without padding and
attention runs per sequence (`data.packed_pairs`, `core.varlen_attention`); models whose attention cannot
(sliding window, non-sdpa) get right-padded rows. Either way the output head runs only at the scored
(response) positions (`core.logprobs.sequence_logp_sums`). The reference is a frozen copy of the initial
model, or with LoRA the same model with its adapter disabled (`core.models.Reference`), run under
`inference_mode` when a batch is built; each response's reference log-prob is then cached on its example,
so a later epoch reuses it, and once every example has one the copy is freed. `precompute_ref` fills the
cache before training instead. Every loss is `sum(pair weight * pair loss) / num_items` over the whole
accumulated step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from posttrain.config import DataConfig, TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import hidden_states, sequence_logp_sums, token_logps
from posttrain.core.strategy import call_root, inference_context
from posttrain.data.packed_pairs import choose_collate
from posttrain.data.preference import load_preference_splits, response_collate
from posttrain.losses.preference import bind_dpo_loss


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
    padding_free: bool = opt(True, "pack each batch's sequences into one row without padding (attention per "
                                   "sequence); off, or a model without plain causal sdpa attention: right padding")
    share_prompt: bool = opt(True, "with padding_free: each pair's prompt is computed once, chosen and rejected "
                                   "attend to it as two separate sequences would")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = DPOConfig


def sequence_logps(model, input_ids, attention_mask, mask, chunk_size: int) -> torch.Tensor:
    """Summed log-probs of the masked (response) tokens of each row, float32 `[N]`."""
    return (token_logps(model, input_ids, attention_mask, chunk_size=chunk_size) * mask).sum(-1)


def batch_logps(model, batch, chunk_size: int) -> torch.Tensor:
    """Summed response log-probs of each sequence of a `PreferenceBatch` (padded or packed), float32 `[2P]`;
    the head runs at the scored positions only. One (FSDP root) forward: the head is never read as a shard."""
    def run(m):
        hidden = hidden_states(m, batch.input_ids, batch.attention_mask, batch.position_ids)
        return sequence_logp_sums(m, hidden, batch.input_ids, batch.mask, batch.row_ids(), batch.num_sequences,
                                  pred_index=batch.pred_index, chunk_size=chunk_size)

    return call_root(model, run)


def sequence_lengths(batch) -> torch.Tensor:
    """Response tokens of each sequence of a `PreferenceBatch`, float32 `[2P]`."""
    return batch.mask.new_zeros(batch.num_sequences).index_add(0, batch.row_ids().reshape(-1),
                                                               batch.mask.reshape(-1))


def _wmean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.detach() * w).sum() / w.sum()


class DPO(Algorithm):
    name = "dpo"
    dropout = False  # log-ratios against the reference: the policy's forward must be deterministic
    plot_keys = ("loss", "eval/loss", "rewards/accuracy", "rewards/margin", "rewards/chosen", "rewards/rejected",
                 "logps/chosen", "logps/rejected", "eval/rewards/accuracy", "grad_norm")

    def __init__(self, cfg: DPOConfig):
        if not cfg.beta > 0:
            raise ValueError(f"beta must be > 0, got {cfg.beta}")
        if cfg.rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {cfg.rpo_alpha}")
        if cfg.data.packing:
            raise ValueError("data.packing: not used by DPO (padding_free packs pairs, on by default); set it false")
        self.cfg = cfg
        self.loss_fn, self.needs_ref = bind_dpo_loss(cfg.loss, beta=cfg.beta, label_smoothing=cfg.label_smoothing,
                                                     simpo_gamma=cfg.simpo_gamma)
        self.ref = None
        self.eval_examples = []

    def setup(self, engine) -> None:

        c = self.cfg
        self.engine, self.pad_id = engine, engine.tokenizer.pad_token_id
        self.collate, packed = choose_collate(engine.model, c.padding_free, c.share_prompt)  # before the reference copy is made
        if packed:
            engine.say("padding-free pairs: each batch is one packed row, attention per sequence (sdpa_varlen)")
        self.examples, self.eval_examples = load_preference_splits(c, engine.tokenizer, engine.say)
        if self.needs_ref:
            self.ref = engine.reference()
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

    def tokens(self, batch) -> int:
        """Tokens of the batch's sequences (a shared prompt counts once per sequence, as padded rows hold it)."""
        return batch.num_tokens or super().tokens(batch)

    def micro_batches(self, step: int):
        return [self.batch([self.examples[i] for i in idx]) for idx in self.sampler.micro_indices(step)]

    def batch(self, examples):
        """The collated batch of `examples` on the device, with their reference log-probs (cached or run now)."""
        b = self.collate(examples, self.pad_id).to(self.engine.device)
        if b.ref_chosen_logps is None and self.ref is not None:
            b.ref_chosen_logps, b.ref_rejected_logps = self.reference_logps(b, examples)
        return b

    def reference_logps(self, batch, examples):
        """(ref chosen [P], ref rejected [P]) from one reference forward (no autograd at all), each
        response's value cached on its example; the reference copy is freed once every example has one."""
        with self.ref.model() as ref, inference_context(ref):  # no_grad under fsdp2
            lps = batch_logps(ref, batch, self.cfg.logits_chunk)
        lps, p = lps.clone(), batch.num_pairs  # a normal tensor again (inference tensors cannot be saved for backward)
        k, values = 0, lps.tolist()
        for ex in examples:
            cache = list(ex.ref_logps) if ex.ref_logps is not None else [0.0] * len(ex.responses)
            for c, r in ex.pairs:
                cache[c], cache[r] = values[k], values[p + k]
                k += 1
            ex.ref_logps = cache
        if all(ex.ref_logps is not None for ex in self.examples + self.eval_examples):
            self.ref = None
        return lps[:p], lps[p:]

    def loss(self, model, batch, norm):
        c, p, w = self.cfg, batch.num_pairs, batch.weight
        logps = batch_logps(model, batch, c.logits_chunk)                                                # [2P]
        lengths = sequence_lengths(batch)                                                                # [2P]
        ref_chosen, ref_rejected = batch.ref_chosen_logps, batch.ref_rejected_logps  # None for SimPO
        losses, r_chosen, r_rejected = self.loss_fn(logps[:p], logps[p:], ref_chosen, ref_rejected,
                                                    lengths[:p], lengths[p:])
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
            b = self.batch(self.eval_examples[s:s + bs])
            loss, metrics = self.loss(model, b, self.normaliser([b]))
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b.num_items
            total += b.num_items
        return {k: v / total for k, v in sums.items()}


def run(cfg: DPOConfig) -> dict:
    """Train DPO (or a variant) with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, DPO(cfg)).train()
