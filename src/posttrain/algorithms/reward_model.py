"""Reward model from preferences: a scalar head on a causal LM, trained with the Bradley-Terry loss.

Model: `AutoModelForSequenceClassification` with `num_labels=1` built from any causal LM checkpoint
(the decoder is the LM's, the `score` head `Linear(hidden, 1)` is new); the reward of a sequence is the
head on the final hidden state of its last token, which is the response's last token (see
`data/preference.py`). With LoRA (`lora.r > 0`) the adapter is PEFT's SEQ_CLS kind, so the head is
trained and saved whole beside the adapter. `OUT/final` is `save_pretrained` form; load it with
`posttrain.rewards.reward_model.RewardModel.from_pretrained(OUT/final)` (or transformers directly).

Loss (`losses.preference.bradley_terry_loss`): sum over pairs of w * -log sigmoid(r_c - r_r - margin) /
num_items, plus optional reward centering; rankings (`prompt` + `responses`) give all K(K-1)/2 pairs of a
row in one micro-batch, each row weighted once. With `score_once` (default) each response of a row is
run once (`pack_groups_collate` / `group_collate`: a ranking of K costs K sequences, its prompt once when
packed, not K(K-1)) and `ranking_bradley_terry_loss` forms the pairs from the K scores; loss, gradients
and per-pair metrics are those of the pair expansion. Held-out evaluation (`data.eval`) is logged as
`eval/accuracy`, `eval/margin`, `eval/ece`, `eval/length_pearson` ... and written in full (with accuracy
binned by margin) to `OUT/eval.json` at the end.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

import torch

from posttrain.config import DataConfig, TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import hidden_states
from posttrain.data.packed_pairs import choose_collate, pack_groups_collate
from posttrain.data.preference import group_collate, load_preference_splits, response_collate
from posttrain.losses.preference import bradley_terry_loss, ranking_bradley_terry_loss
from posttrain.rewards.reward_model import SequenceClassifier, score_head, sequence_rewards


@dataclass
class RewardModelConfig(TrainConfig):
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:pref"))
    center_rewards_coefficient: float = opt(0.0, "weight of the reward-centering term (r_c + r_r)^2; 0 = off "
                                                 "(TRL suggests 0.01)")
    drop_truncated: bool = opt(True, "drop rows whose prompt + response is longer than max_length (the reward "
                                     "is read at the response's last token); false = cut the response's tail")
    eval_bins: int = opt(5, "bins of the calibration error and of accuracy-by-margin in eval.json")
    padding_free: bool = opt(True, "pack each batch's sequences into one row without padding (attention per "
                                   "sequence); off, or a model without plain causal sdpa attention: right padding")
    share_prompt: bool = opt(True, "with padding_free: each pair's prompt is computed once, chosen and rejected "
                                   "attend to it as two separate sequences would")
    score_once: bool = opt(True, "run each response of a row once (a K-ranking: K sequences, not K(K-1)) and "
                                 "form its pairs from the scores; same loss as the pair expansion. Packed, the "
                                 "row's prompt is shared whatever share_prompt says")


CONFIG = RewardModelConfig


def load_reward_model(cfg: RewardModelConfig):
    """`(model, tokenizer)`: `cfg.model` as a one-label sequence classifier (seeded head), LoRA SEQ_CLS."""
    from accelerate.utils import set_seed

    from posttrain.core.models import apply_lora, load_model

    set_seed(cfg.seed)  # the new head's initialisation
    model, tok = load_model(replace(cfg, lora=replace(cfg.lora, r=0)), auto_class=SequenceClassifier)
    if cfg.lora.r > 0:
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS")
    return model, tok


def batch_rewards(model, batch) -> torch.Tensor:
    """float32 rewards `[2P]` (grouped: `[S]`, one per response) of a `PreferenceBatch` (padded or packed):
    the scalar head on each sequence's last token only (one position per sequence, no `[B, T, 1]` head output)."""
    hidden = hidden_states(model, batch.input_ids, batch.attention_mask, batch.position_ids)
    rows, cols = batch.last_positions()
    return score_head(model)(hidden[rows, cols]).squeeze(-1).float()


class RewardModelTrainer(Algorithm):
    name = "rm"
    dropout = False  # scores compared within a pair must come from the same deterministic function
    plot_keys = ("loss", "accuracy", "margin", "eval/accuracy", "eval/margin", "eval/ece", "eval/length_pearson",
                 "grad_norm")

    def __init__(self, cfg: RewardModelConfig):
        if cfg.data.packing:
            raise ValueError("data.packing: not used by reward models (padding_free packs pairs, on by default); "
                             "set it false")
        if cfg.eval_bins < 1:
            raise ValueError(f"eval_bins must be >= 1, got {cfg.eval_bins}")
        self.cfg = cfg
        self.eval_examples, self.last_eval, self.step = [], None, 0

    def setup(self, engine) -> None:
        _check_scalar_head(engine.model)
        c = self.cfg
        self.engine, self.pad_id = engine, engine.tokenizer.pad_token_id
        self.collate, packed = choose_collate(engine.model, c.padding_free, c.share_prompt)
        if c.score_once:
            self.collate = pack_groups_collate if packed else group_collate
        if packed:
            engine.say("padding-free pairs: each batch is one packed row, attention per sequence (sdpa_varlen)")
        self.examples, self.eval_examples = load_preference_splits(c, engine.tokenizer, engine.say)
        self.sampler = StepSampler(len(self.examples), c.batch_size, c.grad_accum, c.seed, engine.rank, engine.world)

    def tokens(self, batch) -> int:
        """Tokens of the batch's sequences (a shared prompt counts once per sequence, as padded rows hold it)."""
        return batch.num_tokens or super().tokens(batch)

    def micro_batches(self, step: int):
        return [self.collate([self.examples[i] for i in idx], self.pad_id).to(self.engine.device)
                for idx in self.sampler.micro_indices(step)]

    def loss(self, model, batch, norm):
        rewards = batch_rewards(model, batch)                     # [2P], or [S] (one per response) grouped
        kw = dict(margin=batch.margin, weight=batch.weight, num_items=norm.num_items,
                  center_rewards_coefficient=self.cfg.center_rewards_coefficient)
        if batch.chosen_index is not None:
            loss, m = ranking_bradley_terry_loss(rewards, batch.chosen_index, batch.rejected_index, **kw)
        else:
            p = batch.num_pairs
            loss, m = bradley_terry_loss(rewards[:p], rewards[p:], **kw)
        return loss, {"accuracy": m["accuracy"], "margin": m["margin_mean"], "rewards/chosen": m["chosen_mean"],
                      "rewards/rejected": m["rejected_mean"]}

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.step = step

    def has_eval(self) -> bool:
        return bool(self.eval_examples)

    def score_examples(self, model, examples) -> list[list[float]]:
        """Reward of every response of every example (each response scored once)."""
        flat = [r for ex in examples for r in ex.responses]
        order = sorted(range(len(flat)), key=lambda i: len(flat[i].input_ids))
        scores = [0.0] * len(flat)
        n = 2 * self.cfg.batch_size
        for s in range(0, len(order), n):
            idx = order[s:s + n]
            ids, attn, _ = response_collate([flat[i] for i in idx], self.pad_id)
            for i, r in zip(idx, sequence_rewards(model, ids.to(self.engine.device),
                                                  attn.to(self.engine.device)).tolist()):
                scores[i] = r
        out, k = [], 0
        for ex in examples:
            out.append(scores[k:k + len(ex.responses)])
            k += len(ex.responses)
        return out

    def evaluate(self, model) -> dict[str, float]:
        """Held-out preference metrics (`diagnostics.preference_eval`); the full dict is kept for eval.json."""
        from posttrain.diagnostics.preference_eval import preference_metrics, scalar_metrics

        per_example = self.score_examples(model, self.eval_examples)
        cols = {"chosen_rewards": [], "rejected_rewards": [], "chosen_lengths": [], "rejected_lengths": [],
                "weight": []}
        for ex, scores in zip(self.eval_examples, per_example):
            for c, r in ex.pairs:
                cols["chosen_rewards"].append(scores[c])
                cols["rejected_rewards"].append(scores[r])
                cols["chosen_lengths"].append(ex.responses[c].length)
                cols["rejected_lengths"].append(ex.responses[r].length)
                cols["weight"].append(ex.weight)
        self.last_eval = (self.step, preference_metrics(**cols, bins=self.cfg.eval_bins))
        return scalar_metrics(self.last_eval[1])

    def finish(self, engine) -> None:
        """Write `OUT/eval.json` (main process) with the final model's held-out metrics."""
        if not self.has_eval():
            return
        if self.last_eval is None or self.last_eval[0] != engine.step:
            self.step = engine.step
            engine.evaluate()
        if engine.is_main:
            from posttrain.diagnostics.preference_eval import json_ready

            path = os.path.join(self.cfg.output_dir, "eval.json")
            with open(path, "w") as f:
                json.dump(json_ready({"step": engine.step, "data": str(self.cfg.data.eval), **self.last_eval[1]}), f,
                          indent=2)
            m = self.last_eval[1]
            engine.say(f"held-out: accuracy {m['accuracy']:.3f}, margin {m['margin']:.3f}, ece {m['ece']:.3f}, "
                       f"reward~length spearman {m['length_spearman']:.3f} -> {path}")


def _check_scalar_head(model) -> None:
    """Fail early, naming the fix, when the engine was given a causal LM instead of a sequence classifier."""
    from posttrain.rewards.reward_model import score_head

    try:
        score_head(model)
    except ValueError as e:
        raise ValueError(f"{e}; build the engine with posttrain.algorithms.reward_model.make_engine(cfg)") from None


def make_engine(cfg: RewardModelConfig):
    """An `Engine` around the reward model of `cfg` (loaded by `load_reward_model`)."""
    from posttrain.core.engine import Engine

    model, tok = load_reward_model(cfg)
    return Engine(cfg, RewardModelTrainer(cfg), model=model, tokenizer=tok)


def run(cfg: RewardModelConfig) -> dict:
    """Train a reward model with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    return make_engine(cfg).train()
