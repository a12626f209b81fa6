"""ORPO: monolithic preference optimisation without a reference model.

Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model", eq. 4-7; as
TRL 1.16's experimental ORPOTrainer (whose `beta` is lambda here). Shapes: `[P, T]` token log-probs of
the chosen rows and of the rejected rows (token-aligned, masks float 1 = response token).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from posttrain.losses.reduce import masked_mean


def log1mexp(x: Tensor) -> Tensor:
    """`log(1 - exp(x))` for x < 0, accurate on both sides of -log 2 (Maechler 2012)."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_logps: Tensor, chosen_mask: Tensor, rejected_logps: Tensor, rejected_mask: Tensor, *,
              lam: float, num_items: float, weight: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The ORPO objective (eq. 6), L = L_SFT + lambda * L_OR, per pair i:

        a_c,i = mean_t over the mask of logp_c,it   (length-normalised log-likelihood, eq. 4; a_r,i alike)
        nll_i = -a_c,i                               (the chosen response's NLL, a token mean)
        log odds(y|x) = a - log(1 - exp(a))
        or_i  = -log sigmoid(log odds(y_c,i) - log odds(y_r,i))                       (eq. 7)
        L = sum_i w_i (nll_i + lambda * or_i) / num_items

    `weight` `[P]` (None = 1) and `num_items` (summed weights of the whole step) make micro-batch losses
    add up to the full-batch loss. Departure from TRL 1.16: TRL's NLL is one token mean over the
    micro-batch and covers the chosen row's prompt tokens too; here it is each pair's token mean over
    its response only (equal when the responses have equal lengths and no prompt is trained).
    Metrics (this micro-batch, detached): `nll`, `or_loss`, `log_odds_ratio` (mean of the log-odds
    difference), `accuracy` (share of pairs with a_c > a_r).
    """
    if chosen_logps.shape != chosen_mask.shape or rejected_logps.shape != rejected_mask.shape:
        raise ValueError("chosen_logps / chosen_mask and rejected_logps / rejected_mask must match in shape")
    if not num_items > 0:
        raise ValueError(f"num_items must be > 0 (summed pair weights of the step), got {num_items!r}")
    avg_c = masked_mean(chosen_logps, chosen_mask, dim=-1)
    avg_r = masked_mean(rejected_logps, rejected_mask, dim=-1)
    w = torch.ones_like(avg_c) if weight is None else weight.to(avg_c)
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    per_pair = -F.logsigmoid(log_odds)
    loss = (w * (-avg_c + lam * per_pair)).sum() / num_items
    metrics = {"nll": (-avg_c).detach().mean(), "or_loss": per_pair.detach().mean(),
               "log_odds_ratio": log_odds.detach().mean(), "accuracy": (avg_c.detach() > avg_r.detach()).float().mean()}
    return loss, metrics
