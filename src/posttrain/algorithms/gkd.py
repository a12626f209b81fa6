"""On-policy distillation, GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models:
Learning from Self-Generated Mistakes", algorithm 1 with lambda = 1; TRL 1.16's experimental
GKDTrainer): the student samples completions of the prompts, a frozen teacher (`teacher: PATH`, same
vocabulary) scores every position, and the loss is a per-token divergence between the two next-token
distributions on the student's own samples (`losses.distill.generalized_jsd`): `divergence:
reverse_kl` (beta 1, mode-seeking), `forward_kl` (beta 0) or `jsd` with `beta`.

Both models' output heads run a chunk of positions at a time (`logits_chunk`), the teacher under no
grad, the student inside activation checkpointing when there is more than one chunk, so neither holds
`[B, T, V]` logits. The loss is the divergence summed over completion tokens / tokens of the step.
The configured rewards (optional here) are only measured (`reward/...`, e.g. accuracy on `data.eval`).
Rounds, prompts, sampling seeds and exact resume are the online core's; one round = one step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from posttrain.algorithms.online.buffer import RoundBatch, collate_rollouts, split_even
from posttrain.algorithms.online.config import OnlineConfig
from posttrain.algorithms.online.core import OnlineAlgorithm
from posttrain.algorithms.online.metrics import summarise
from posttrain.config import ConfigError, opt, plain
from posttrain.core.logprobs import auto_chunk, hidden_states
from posttrain.losses.distill import DIVERGENCES, divergence_beta, generalized_jsd
from posttrain.rewards.base import CombinedReward, FunctionReward


@dataclass
class GKDConfig(OnlineConfig):
    teacher: Any = opt(None, "teacher model folder or hub name; must share the student's vocabulary")
    divergence: str = opt("reverse_kl", "per-token divergence: reverse_kl (KL(student||teacher)), forward_kl "
                                        "(KL(teacher||student)) or jsd (generalised JSD with beta)")
    beta: float = opt(0.5, "jsd only: interpolation of the generalised JSD (0 = forward KL, 1 = reverse KL)")
    rewards: Any = opt([], "reward functions measured on the samples, never trained on (e.g. math on arithmetic); "
                           "none = only the divergence is logged")


CONFIG = GKDConfig


def _chunk_divergence(s_head, s_hidden, t_logps, beta: float):
    return generalized_jsd(F.log_softmax(s_head(s_hidden).float(), -1), t_logps, beta).sum()


def distill_sum(student, teacher, batch, beta: float, chunk: int) -> torch.Tensor:
    """Sum over the completion tokens of `batch` of the divergence between the student's and the
    teacher's next-token distributions (position t-1 predicts token t, as `batch.mask` marks)."""
    rows, cols = batch.mask[:, 1:].nonzero(as_tuple=True)          # token t = cols + 1, predicted at cols
    s_hidden = hidden_states(student, batch.input_ids, batch.attention_mask)[rows, cols]
    with torch.no_grad():
        t_hidden = hidden_states(teacher, batch.input_ids, batch.attention_mask)[rows, cols]
    s_head, t_head = student.get_output_embeddings(), teacher.get_output_embeddings()
    step = chunk if chunk > 0 else auto_chunk(s_head.weight.shape[0])
    recompute = torch.is_grad_enabled() and s_hidden.requires_grad and s_hidden.shape[0] > step
    total = s_hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, s_hidden.shape[0], step):
        with torch.no_grad():
            t_logps = F.log_softmax(t_head(t_hidden[s:s + step]).float(), -1)
        args = (s_head, s_hidden[s:s + step], t_logps, beta)
        total = total + (checkpoint(_chunk_divergence, *args, use_reentrant=False) if recompute
                         else _chunk_divergence(*args))
    return total


def load_teacher(path, student, dtype):
    """The frozen teacher; `ConfigError` when its vocabulary differs from the student's (both sizes named)."""
    from transformers import AutoModelForCausalLM

    from posttrain.core.models import ModelLoadError

    if not path:
        raise ConfigError("teacher: give the teacher model's folder (or hub name); GKD needs one")
    try:
        teacher = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:
        raise ModelLoadError(f"cannot load teacher '{path}': {type(e).__name__}: {e}") from e
    v_teacher = teacher.get_output_embeddings().weight.shape[0]
    v_student = student.get_output_embeddings().weight.shape[0]
    if v_teacher != v_student:
        raise ConfigError(f"teacher: its vocabulary has {v_teacher} tokens, the student's {v_student}; GKD compares "
                          "next-token distributions token by token, so both must share one tokenizer")
    teacher.eval().requires_grad_(False)
    return teacher


class GKD(OnlineAlgorithm):
    name = "gkd"
    samples_per_prompt = 1
    batch_class = RoundBatch
    plot_keys = ("loss", "divergence", "reward/total/mean", "eval/reward/total/mean", "completion_len/mean")

    def __init__(self, cfg: GKDConfig, reward=None):
        if cfg.divergence not in DIVERGENCES:
            raise ValueError(f"divergence: expected one of {list(DIVERGENCES)}, found '{cfg.divergence}'")
        if not 0.0 <= cfg.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {cfg.beta}")
        if reward is None and not (plain(cfg.rewards) or cfg.reward_model or cfg.judge.model):
            reward = CombinedReward([FunctionReward(lambda p, c, **k: [0.0] * len(c), "none")])
        super().__init__(cfg, reward)
        self.beta = divergence_beta(cfg.divergence, cfg.beta)

    def setup(self, engine) -> None:
        super().setup(engine)
        dtype = next(engine.model.parameters()).dtype
        self.teacher = load_teacher(self.cfg.teacher, engine.model, dtype).to(engine.device)

    def collect(self, rnd: int) -> None:
        idx, rollouts = self.generate(rnd)
        scores = self.score(self.prompts, idx, rollouts)
        pad, dev = self.engine.tokenizer.pad_token_id, self.engine.device
        self.batches = []
        for part in split_even(list(range(len(rollouts))), self.cfg.grad_accum):
            ids, attn, mask = collate_rollouts([rollouts.prompt_ids[r] for r in part],
                                               [rollouts.completion_ids[r] for r in part], pad, dev)
            zeros = torch.zeros_like(mask)
            self.batches.append(RoundBatch(input_ids=ids, attention_mask=attn, mask=mask, old_logps=zeros,
                                           advantages=zeros))
        self.round_metrics = summarise(scores, rollouts, self.reward.names)

    def loss(self, model, batch, norm):
        total = distill_sum(model, self.teacher, batch, self.beta, self.cfg.logits_chunk)
        tokens = max(float(batch.mask.sum()), 1.0)
        return total / norm.num_tokens, {"divergence": total.detach() / tokens}


def run(cfg: GKDConfig) -> dict:
    """Distil `cfg.teacher` into `cfg.model` on the student's own samples; returns the last step's metrics."""
    from posttrain.core.engine import Engine

    return Engine(cfg, GKD(cfg)).train()
