"""On-policy distillation (GKD): per-token divergences between the student's and the teacher's
next-token distributions, on sequences the student sampled.

Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes" (GKD), eq. 1 and algorithm 1; as TRL 1.16's `GKDTrainer.generalized_jsd_loss`. Inputs are
log-probabilities over the whole vocabulary for a chunk of positions, `[N, V]`, so a caller can walk a
long batch a chunk of positions at a time and never hold `[B, T, V]` of both models at once.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row: sum_v p_v (log p_v - log q_v), with 0 log 0 = 0. `[N, V]` -> `[N]`."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def generalized_jsd(student_logps: Tensor, teacher_logps: Tensor, beta: float) -> Tensor:
    """Generalised Jensen-Shannon divergence of GKD (eq. 1), per position, teacher P, student Q:

        M = beta * P + (1 - beta) * Q
        JSD_beta = beta * KL(P || M) + (1 - beta) * KL(Q || M)

    beta = 0 is taken as the forward KL(P || Q) and beta = 1 as the reverse KL(Q || P) (the limits TRL
    uses; JSD_beta itself vanishes at both ends). The teacher is a constant (detach it first).
    Shapes: `[N, V]` log-probabilities (log_softmax of the logits) -> `[N]`.
    """
    if student_logps.shape != teacher_logps.shape:
        raise ValueError(f"student {tuple(student_logps.shape)} and teacher {tuple(teacher_logps.shape)} "
                         "log-probs must have the same shape (same vocabulary)")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return _kl(teacher_logps, student_logps)
    if beta == 1.0:
        return _kl(student_logps, teacher_logps)
    mixture = torch.logsumexp(torch.stack([teacher_logps + math.log(beta), student_logps + math.log1p(-beta)]), 0)
    return beta * _kl(teacher_logps, mixture) + (1.0 - beta) * _kl(student_logps, mixture)


def divergence_beta(divergence: str, beta: float) -> float:
    """The JSD beta a `divergence` name means: forward_kl -> 0, reverse_kl -> 1, jsd -> `beta`."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence: expected one of {list(DIVERGENCES)}, found '{divergence}'")
    return {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, beta)
