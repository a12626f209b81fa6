"""The per-token reward of RLHF with PPO (Ziegler et al. 2019; Ouyang et al. 2022, InstructGPT): the
sequence's score on its last token and a KL penalty on every completion token,

    r_t = -beta * kl_t  (+ score - missing_eos_penalty * truncated  on the last token)

Shapes: `[B, T]` per token (token-aligned, `mask` float 1 = completion token), `[B]` per sequence.
"""
from __future__ import annotations

import torch
from torch import Tensor


def kl_penalised_rewards(scores: Tensor, kl: Tensor, mask: Tensor, last: Tensor, *, beta: float,
                         truncated: Tensor | None = None, missing_eos_penalty: float = 0.0) -> Tensor:
    """Per-token rewards `[B, T]` (module docstring).

    `scores` `[B]`: the reward of each completion (0 for a row that was not scored; give it an empty
    `mask` and `truncated` False). `kl` `[B, T]`: a per-token KL estimate (e.g. `kl_k1(logps, ref)`),
    used only where `mask` is 1. `last` `[B]` long: the position of each row's last token, which gets
    the score. `truncated` `[B]` bool: completions that ended without EOS lose `missing_eos_penalty`.
    The final score is computed in float64 (as Python floats are) and then cast to `kl`'s dtype.
    """
    if scores.dim() != 1 or kl.shape != mask.shape or last.shape != scores.shape or kl.shape[0] != scores.shape[0]:
        raise ValueError(f"scores {tuple(scores.shape)} and last {tuple(last.shape)} must be [B]; kl "
                         f"{tuple(kl.shape)} and mask {tuple(mask.shape)} [B, T]")
    rewards = -beta * torch.where(mask != 0, kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    final = scores.double()
    if truncated is not None and missing_eos_penalty:
        final = final - missing_eos_penalty * truncated.to(device=final.device, dtype=torch.float64)
    rows = torch.arange(scores.shape[0], device=rewards.device)
    rewards[rows, last.to(rewards.device)] += final.to(device=rewards.device, dtype=rewards.dtype)
    return rewards
