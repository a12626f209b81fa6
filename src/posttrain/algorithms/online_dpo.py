"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"; TRL 1.16's
experimental OnlineDPOTrainer): every step samples TWO completions of each prompt from the current
policy, labels the better one with the configured reward (`rewards:`, `reward_model`, `judge`: rule,
trained reward model or LLM judge, summed with their weights), and takes a DPO step on the pairs
(`losses.preference.sigmoid_dpo`). The reference is the starting model, frozen.

A pair whose two rewards are equal (or not scored) carries no preference: weight 0, counted as
`pairs_tied`. The loss is `sum(weight * pair loss) / num_items` over the step (num_items = pairs with a
preference, all processes). Rounds, prompts, sampling seeds, scoring and exact resume are the online
core's (`algorithms.online`); one round = one step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from posttrain.algorithms.online.buffer import collate_rollouts, split_even
from posttrain.algorithms.online.config import OnlineConfig
from posttrain.algorithms.online.core import OnlineAlgorithm
from posttrain.algorithms.online.metrics import summarise
from posttrain.config import opt
from posttrain.core.batch import _Movable
from posttrain.core.logprobs import token_logps
from posttrain.losses.preference import sigmoid_dpo


@dataclass
class OnlineDPOConfig(OnlineConfig):
    beta: float = opt(0.1, "inverse temperature of DPO's implicit reward")


CONFIG = OnlineDPOConfig


@dataclass
class PairBatch(_Movable):
    """P sampled pairs: the P chosen rows, then the P rejected rows, right-padded, with their frozen
    reference log-probs and a weight per pair (0 = no preference)."""
    input_ids: Tensor          # [2P, T]
    attention_mask: Tensor     # [2P, T]
    mask: Tensor               # [2P, T] float; completion tokens
    ref_logps: Tensor          # [2P] summed reference log-probs of the completions
    weight: Tensor             # [P]

    @property
    def num_items(self) -> float:
        return float(self.weight.sum())


def label_pairs(totals: list) -> tuple[list[int], list[int], list[float]]:
    """(chosen rows, rejected rows, weights) of consecutive sample pairs (rows 2k, 2k+1): the higher
    reward is chosen; a tie or an unscored sample gives weight 0."""
    chosen, rejected, weight = [], [], []
    for k in range(len(totals) // 2):
        a, b = totals[2 * k], totals[2 * k + 1]
        better_b = a is not None and b is not None and b > a
        chosen.append(2 * k + 1 if better_b else 2 * k)
        rejected.append(2 * k if better_b else 2 * k + 1)
        weight.append(0.0 if a is None or b is None or a == b else 1.0)
    return chosen, rejected, weight


def _seq_logps(model, b, chunk: int) -> Tensor:
    return (token_logps(model, b.input_ids, b.attention_mask, chunk_size=chunk) * b.mask).sum(-1)


class OnlineDPO(OnlineAlgorithm):
    name = "online_dpo"
    samples_per_prompt = 2
    reward_prompts = "row"       # as PPO: a reward model or judge renders message prompts with its own template
    batch_class = PairBatch
    plot_keys = ("loss", "reward/total/mean", "eval/reward/total/mean", "rewards/accuracy", "rewards/margin",
                 "reward_gap", "pairs_tied", "completion_len/mean")

    def __init__(self, cfg: OnlineDPOConfig, reward=None):
        if not cfg.beta > 0:
            raise ValueError(f"beta must be > 0, got {cfg.beta}")
        super().__init__(cfg, reward)

    def setup(self, engine) -> None:
        from posttrain.core.models import Reference

        super().setup(engine)
        self.ref = Reference(engine.model).to(engine.device)

    def collect(self, rnd: int) -> None:
        idx, rollouts = self.generate(rnd)
        scores = self.score(self.prompts, idx, rollouts)
        chosen, rejected, weight = label_pairs(scores.total)
        pad, dev = self.engine.tokenizer.pad_token_id, self.engine.device
        self.batches = []
        for part in split_even(list(range(len(chosen))), self.cfg.grad_accum):
            rows = [chosen[k] for k in part] + [rejected[k] for k in part]
            ids, attn, mask = collate_rollouts([rollouts.prompt_ids[r] for r in rows],
                                               [rollouts.completion_ids[r] for r in rows], pad, dev)
            b = PairBatch(ids, attn, mask, torch.zeros(len(rows), device=dev),
                          torch.tensor([weight[k] for k in part], device=dev))
            with torch.no_grad(), self.ref.model() as ref:
                b.ref_logps = _seq_logps(ref, b, self.cfg.logits_chunk)
            self.batches.append(b)
        gaps = [abs(scores.total[c] - scores.total[r]) for c, r, w in zip(chosen, rejected, weight) if w]
        self.round_metrics = summarise(scores, rollouts, self.reward.names,
                                       {"pairs_tied": float(weight.count(0.0)), "_gap": float(sum(gaps)),
                                        "_pairs": float(len(gaps))})
        self.round_metrics["reward_gap"] = self.round_metrics.pop("_gap") / max(self.round_metrics.pop("_pairs"), 1)

    def loss(self, model, batch, norm):
        p, w = batch.weight.shape[0], batch.weight
        logps = _seq_logps(model, batch, self.cfg.logits_chunk)
        losses, r_c, r_r = sigmoid_dpo(logps[:p], logps[p:], batch.ref_logps[:p], batch.ref_logps[p:],
                                       beta=self.cfg.beta)
        seen = max(float(w.sum()), 1e-8)
        metrics = {"rewards/chosen": (r_c * w).sum() / seen, "rewards/rejected": (r_r * w).sum() / seen,
                   "rewards/accuracy": ((r_c > r_r).float() * w).sum() / seen,
                   "rewards/margin": ((r_c - r_r) * w).sum() / seen}
        return (w * losses).sum() / norm.num_items, metrics


def run(cfg: OnlineDPOConfig) -> dict:
    """Train online DPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, OnlineDPO(cfg)).train()
