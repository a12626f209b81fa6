"""Supervised fine-tuning and its token-weighted variants (DFT, unlikelihood).

`loss` picks one function of `posttrain.losses.sft.SFT_LOSSES` once, at build time:
  nll           next-token cross-entropy on trained tokens, one mean over the whole accumulated batch
  dft           each token's loss scaled by its own detached probability (arXiv 2508.05629)
  unlikelihood  nll on positives plus alpha * -log(1 - p) on negative completions (Welleck et al. 2019)

Padded batches (`data.packing: false`) are computed on their real tokens only by default (`padding_free`,
`core/unpad.py`): the batch's rows run as one packed row with attention per row, so no embedding, linear or
MLP works on a padding position; the loss and gradients are the padded computation's. Models it does not
cover run the padded forward with attention over each row's real tokens (`row_lengths`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from posttrain.config import TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.distributed import all_reduce
from posttrain.core.logprobs import hidden_states, selected_token_logps
from posttrain.core.unpad import can_unpad, is_right_padded, model_type, unpadded_token_logps
from posttrain.losses.sft import SFT_LOSSES


@dataclass
class SFTConfig(TrainConfig):
    loss: str = opt("nll", "token loss: nll, dft or unlikelihood")
    unlikelihood_alpha: float = opt(1.0, "weight of the unlikelihood term on negative completions")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")
    padding_free: bool = opt(True, "compute each padded batch on its real tokens only (one row, attention per "
                                   "row; same loss and gradients); Llama/Mistral/Qwen2/Qwen3 on sdpa, else padded")


CONFIG = SFTConfig


class SFT(Algorithm):
    name = "sft"
    plot_keys = ("loss", "eval/loss", "nll", "grad_norm", "lr", "tokens_per_s")

    def __init__(self, cfg: SFTConfig):
        if cfg.loss not in SFT_LOSSES:
            raise ValueError(f"loss: expected one of {sorted(SFT_LOSSES)}, found '{cfg.loss}'")
        self.cfg = cfg
        self.loss_fn = SFT_LOSSES[cfg.loss]
        self.eval_examples = []

    def setup(self, engine) -> None:
        from posttrain.data.collators import pack_collate, pad_collate

        self.engine = engine
        self.pad_id = engine.tokenizer.pad_token_id
        from posttrain.core.varlen_attention import use_varlen

        self.collate = pack_collate if self.cfg.data.packing else pad_collate
        # per-sequence attention: packed rows split at position-id restarts; padded rows over their real tokens
        self.varlen = use_varlen(engine.model)
        if self.cfg.data.packing and self.varlen:
            engine.say("packing: attention runs per packed row (sdpa_varlen), no cross-row attention")
        wanted = self.cfg.padding_free and not self.cfg.data.packing
        self.unpad = wanted and can_unpad(engine.model, self.varlen)
        if wanted and not self.unpad:
            engine.say(f"padding_free: not for this model ({model_type(engine.model) or 'unknown type'}, "
                       f"attention {engine.model.config._attn_implementation}): padded batches run padded")
        self.examples, stats = self._build(self.cfg.data.train, "train")
        if self.cfg.loss == "unlikelihood" and not any(e.negative for e in self.examples):
            from posttrain.data.errors import DataError

            raise DataError(f"{self.cfg.data.train}: loss=unlikelihood needs negative completions: rows with a "
                            "`rejected` column or `label: false`; the training data has none")
        engine.say(f"train rows: kept {stats.kept}, truncated {stats.truncated}, "
                   f"dropped {sum(stats.dropped.values())} {dict(stats.dropped) or ''}".rstrip())
        self.examples = self._positives_only(self.examples, "train")
        if self.cfg.data.eval:
            self.eval_examples, _ = self._build(self.cfg.data.eval, "eval")
            self.eval_examples = self._positives_only(self.eval_examples, "eval")[: self.cfg.data.max_eval_rows]
        self.sampler = StepSampler(len(self.examples), self.cfg.batch_size, self.cfg.grad_accum, self.cfg.seed,
                                   engine.rank, engine.world)

    def _positives_only(self, examples, split: str):
        """`examples` without negative completions unless the loss uses them (unlikelihood). Kept, they would
        only add their tokens to the normaliser and shrink the positives' loss by pos / (pos + neg)."""
        if self.cfg.loss == "unlikelihood":
            return examples
        kept = [e for e in examples if not e.negative]
        if len(kept) < len(examples):
            self.engine.say(f"{split}: ignored {len(examples) - len(kept)} negative completions (`rejected` / "
                            f"`label: false`): loss={self.cfg.loss} trains on positives only "
                            "(loss=unlikelihood uses them)")
        if not kept:
            from posttrain.data.errors import DataError

            raise DataError(f"data.{split} ({getattr(self.cfg.data, split)}): every completion is negative "
                            f"(`rejected` / `label: false`); loss={self.cfg.loss} needs positive ones")
        return kept

    def _build(self, spec, split):
        from posttrain.data.dataset import build_sft_examples
        from posttrain.data.formats import load_rows

        rows = load_rows(spec, split="train", kind="sft")
        return build_sft_examples(rows, self.engine.tokenizer, max_length=self.cfg.max_length,
                                  completion_only_loss=self.cfg.data.completion_only_loss)

    def micro_batches(self, step: int):
        return [self.collate([self.examples[i] for i in idx], self.pad_id).to(self.engine.device)
                for idx in self.sampler.micro_indices(step)]

    def tokens(self, batch) -> int:
        return int(batch.attention_mask.sum()) if batch.attention_mask is not None else int(batch.input_ids.numel())

    def logps(self, model, batch) -> torch.Tensor:
        """Token log-probs `[B, T]` at the loss-carrying positions (mask or neg_mask), 0 elsewhere: the output
        head runs only there. A right-padded batch runs on its real tokens only (`padding_free`,
        `core.unpad`), or else its attention runs over each row's real tokens only (`row_lengths`)."""
        select = batch.mask + batch.neg_mask
        if self.unpad and batch.attention_mask is not None and is_right_padded(batch.attention_mask):
            return unpadded_token_logps(model, batch.input_ids, batch.attention_mask, batch.position_ids, select,
                                        chunk_size=self.cfg.logits_chunk)
        attention, extra = batch.attention_mask, {}
        if self.varlen and attention is not None:  # pad_collate pads on the right
            attention, extra = None, {"row_lengths": batch.attention_mask.sum(-1).tolist()}
        hidden = hidden_states(model, batch.input_ids, attention, batch.position_ids, **extra)
        return selected_token_logps(model, hidden, batch.input_ids, select, chunk_size=self.cfg.logits_chunk)

    def loss(self, model, batch, norm):
        logps = self.logps(model, batch)
        return self.loss_fn(logps, batch.mask, batch.neg_mask, norm.num_items,
                            unlikelihood_alpha=self.cfg.unlikelihood_alpha)

    def has_eval(self) -> bool:
        return bool(self.eval_examples)

    def evaluate(self, model) -> dict[str, float]:
        """Mean nll per trained token (and perplexity) on the held-out rows."""
        total, count = 0.0, 0.0
        bs = self.cfg.batch_size
        for s in range(0, len(self.eval_examples), bs):
            b = self.collate(self.eval_examples[s:s + bs], self.pad_id).to(self.engine.device)
            lp = self.logps(model, b)
            total += float(-(lp * b.mask).sum())
            count += float(b.mask.sum())
        total, count = all_reduce([total, count])
        nll = total / max(count, 1.0)
        return {"loss": nll, "ppl": float(torch.exp(torch.tensor(min(nll, 50.0))))}


def run(cfg: SFTConfig) -> dict:
    """Train SFT with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, SFT(cfg)).train()
