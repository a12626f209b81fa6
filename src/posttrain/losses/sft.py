"""Supervised fine-tuning losses on token log-probs: NLL, DFT, unlikelihood.

Every function has the same signature so the SFT algorithm picks one from `SFT_LOSSES` once:

    fn(logps [B, T], mask [B, T], neg_mask [B, T] | None, num_items, *, unlikelihood_alpha=1.0)
        -> (loss 0-dim, metrics dict[str, 0-dim detached Tensor])

`logps[:, t] = log p(token_t | tokens_<t)` (token-aligned, see core.batch). `mask` marks positive
(imitated) tokens, `neg_mask` the tokens of negative completions (only unlikelihood uses them).
`num_items` is the count of loss-carrying tokens over the WHOLE accumulated step (`SFTBatch.num_items`:
positive + negative tokens), so the loss is `sum(token losses) / num_items` and micro-batch losses add
up to the full-batch loss. For `nll` and `dft` the batches must hold no negative completions (the SFT
trainer leaves them out, with a counted message), else their tokens would only inflate `num_items`.
Metrics describe this micro-batch only.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from posttrain.losses.reduce import masked_mean, masked_sum

SFTLoss = Callable[..., tuple[Tensor, dict[str, Tensor]]]

# -log(1 - p) is capped at -log(UNLIKELIHOOD_MIN_ONE_MINUS_P) ~= 11.5, as in Welleck et al.'s code
# (`clamp(1 - p, min=1e-5)`): tokens with p > 1 - 1e-5 get that constant and no gradient.
UNLIKELIHOOD_MIN_ONE_MINUS_P = 1e-5


def _check(logps: Tensor, mask: Tensor, num_items: float) -> None:
    if logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and mask {tuple(mask.shape)} must have the same shape")
    if not num_items > 0:
        raise ValueError(f"num_items must be > 0 (loss-carrying tokens in the step), got {num_items!r}")


def _positive_metrics(logps: Tensor, mask: Tensor) -> dict[str, Tensor]:
    lp = logps.detach()
    return {"nll": masked_mean(-lp, mask), "p_mean": masked_mean(lp.exp(), mask),
            "num_tokens": mask.sum().detach()}


def nll_loss(logps: Tensor, mask: Tensor, neg_mask: Tensor | None, num_items: float, *,
             unlikelihood_alpha: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood (maximum likelihood): `L = sum_t mask_t * (-log p_t) / num_items`.

    Shapes: `logps`, `mask`, `neg_mask` `[B, T]`. `neg_mask` and `unlikelihood_alpha` are accepted for
    a uniform signature and ignored: negative tokens carry no loss here.
    Metrics: `nll` (mean over positive tokens), `p_mean` (mean p of positives), `num_tokens`.
    """
    _check(logps, mask, num_items)
    loss = masked_sum(-logps, mask) / num_items
    return loss, _positive_metrics(logps, mask)


def dft_loss(logps: Tensor, mask: Tensor, neg_mask: Tensor | None, num_items: float, *,
             unlikelihood_alpha: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Dynamic Fine-Tuning (Wu et al. 2025, "On the Generalization of SFT: A Reinforcement Learning
    Perspective with Reward Rectification", arXiv 2508.05629, the DFT objective; TRL's `loss_type="dft"`):

        L = sum_t mask_t * sg(p_t) * (-log p_t) / num_items,   p_t = exp(logp_t), sg = stop-gradient.

    Each token's NLL is rescaled by its own (detached) probability, so confident tokens weigh more and
    improbable ones barely move the model. Normalised like every loss here: the token sum over the
    step-wide `num_items`, i.e. a token mean over the accumulated step.
    Shapes: `[B, T]`. `neg_mask` and `unlikelihood_alpha` are ignored. Metrics as `nll_loss`.
    """
    _check(logps, mask, num_items)
    loss = masked_sum(-logps * logps.detach().exp(), mask) / num_items
    return loss, _positive_metrics(logps, mask)


def neg_log_one_minus_p(logps: Tensor) -> Tensor:
    """`-log(1 - exp(logps))`, elementwise, finite everywhere with finite gradients.

    Uses `log(-expm1(l))` for l > -log 2 and `log1p(-exp(l))` below (the accurate branch of each side).
    `logps` is first clamped to `log(1 - 1e-5)`, i.e. 1 - p >= 1e-5 (Welleck et al.'s clamp), so p -> 1
    (or logps >= 0 from rounding) gives the cap ~11.5 with zero gradient instead of inf/nan.
    """
    lp = logps.clamp(max=math.log1p(-UNLIKELIHOOD_MIN_ONE_MINUS_P))
    near_one = lp > -math.log(2.0)
    log_one_minus_p = torch.where(near_one, torch.log(-torch.expm1(lp)), torch.log1p(-torch.exp(lp)))
    return -log_one_minus_p


def unlikelihood_loss(logps: Tensor, mask: Tensor, neg_mask: Tensor | None, num_items: float, *,
                      unlikelihood_alpha: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-level unlikelihood training (Welleck et al. 2019, "Neural Text Generation with
    Unlikelihood Training", the token-level objective with the negative candidates given by the data):

        L = [ sum_t mask_t * (-log p_t) + alpha * sum_t neg_mask_t * (-log(1 - p_t)) ] / num_items

    Departure from the paper: the negatives are the tokens of whole negative completions marked by
    `neg_mask` (rows flagged negative in the data), not previous-context tokens. `-log(1 - p)` is computed
    stably and capped at -log(1e-5) (see `neg_log_one_minus_p`). Shapes: `[B, T]`; `neg_mask=None`
    means no negatives. Metrics: those of `nll_loss` plus `neg_p_mean` (mean p on negative tokens),
    `unlikelihood` (mean -log(1 - p) on negative tokens), `num_neg_tokens`.
    """
    _check(logps, mask, num_items)
    if neg_mask is None:
        neg_mask = torch.zeros_like(mask)
    if neg_mask.shape != mask.shape:
        raise ValueError(f"neg_mask {tuple(neg_mask.shape)} must have the shape of mask {tuple(mask.shape)}")
    neg_term = neg_log_one_minus_p(logps)
    loss = (masked_sum(-logps, mask) + unlikelihood_alpha * masked_sum(neg_term, neg_mask)) / num_items
    metrics = _positive_metrics(logps, mask)
    metrics["neg_p_mean"] = masked_mean(logps.detach().exp(), neg_mask)
    metrics["unlikelihood"] = masked_mean(neg_term.detach(), neg_mask)
    metrics["num_neg_tokens"] = neg_mask.sum().detach()
    return loss, metrics


SFT_LOSSES: dict[str, SFTLoss] = {
    "nll": nll_loss,
    "dft": dft_loss,
    "unlikelihood": unlikelihood_loss,
}
