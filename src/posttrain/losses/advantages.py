"""Advantage estimators: GAE for PPO, group-relative advantages for GRPO, leave-one-out for RLOO,
and masked whitening.

Shapes: `[B, T]` per token (mask float, 1 = completion token), `[N]` per sequence. Group estimators take
rows of one prompt as CONTIGUOUS blocks of `group_size` (as `Rollouts` lays them out: n samples per
prompt, one after another). Advantages are training targets, so everything here is returned detached.
"""
from __future__ import annotations

import torch
from torch import Tensor

from posttrain.losses.reduce import masked_mean, masked_sum

WHITEN_EPS = 1e-8


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
    GAE", eq. 16), over the masked positions of each row:

        delta_t = r_t + gamma * V_next(t) - V_t,     A_t = delta_t + gamma * lam * A_next(t),
        returns_t = A_t + V_t

    where next(t) is the next position with mask = 1 in the same row (holes in the mask are skipped,
    so a row's masked tokens form one episode), and after the last masked token V = A = 0 (the episode
    ends). Shapes: `rewards`, `values`, `mask` `[B, T]` (the sequence reward usually sits on the last
    completion token; a per-token KL penalty on every token). Returns (advantages, returns), both
    `[B, T]`, detached, 0 where `mask == 0`.
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    on = mask != 0
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advs = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advs.append(torch.where(on[:, t], adv, torch.zeros_like(adv)))
        next_value = torch.where(on[:, t], values[:, t], next_value)
        next_adv = torch.where(on[:, t], adv, next_adv)
    advantages = torch.stack(advs[::-1], dim=1)
    returns = torch.where(on, advantages + values, torch.zeros_like(values))
    return advantages, returns


def _groups(rewards: Tensor, group_size: int, name: str) -> Tensor:
    """`rewards` [N] viewed as [N / group_size, group_size]."""
    if rewards.dim() != 1:
        raise ValueError(f"{name}: rewards must be [N], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"{name}: group_size must be >= 2 (a group compares samples), got {group_size}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{name}: {rewards.shape[0]} rewards do not split into groups of {group_size}")
    return rewards.detach().view(-1, group_size)


def group_advantages(rewards: Tensor, group_size: int, *, scale_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, "DeepSeekMath", outcome supervision, sec. 4.1.2):

        A_i = (r_i - mean(group)) / (std(group) + eps)   if scale_std   else   r_i - mean(group)

    std is the UNBIASED sample standard deviation (Bessel, divides by group_size - 1), as torch.std and
    TRL's GRPOTrainer; e.g. rewards (1, 0, 0, 0) give (1.5, -0.5, -0.5, -0.5) (up to eps). A group of
    equal rewards gets all-zero advantages. `scale_std=False` is Dr. GRPO's choice (Liu et al. 2025).
    Shapes: `rewards` `[N]`, N = groups * group_size, groups contiguous -> `[N]`, detached.
    """
    grouped = _groups(rewards, group_size, "group_advantages")
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std:
        centred = centred / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centred.reshape(-1)


def leave_one_out(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO baseline (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et
    al. 2024): `A_i = r_i - (sum(group) - r_i) / (group_size - 1)`, the reward minus the mean of the
    OTHER samples of its group. Shapes: `[N]`, groups contiguous -> `[N]`, detached.
    """
    grouped = _groups(rewards, group_size, "leave_one_out")
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).reshape(-1)


@torch.no_grad()
def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, reduce=None) -> Tensor:
    """Masked whitening of advantages (as TRL's `masked_whiten`, used by PPO-RLHF implementations):

        (x - mean) / sqrt(var + 1e-8)   (+ mean again when shift_mean=False: rescale only)

    mean and the UNBIASED variance (divides by n - 1) are taken over the masked elements of the whole
    `[B, T]` tensor (this micro-batch). Needs at least 2 masked elements. Returns `[B, T]`, detached,
    0 where `mask == 0`.

    `reduce`: a function summing a list of floats over processes (`core.distributed.all_reduce`; two
    calls): mean and variance are then those of every process's masked elements together, in float64,
    so N processes whiten as one process holding all their rows does. With fewer than 2 masked elements
    over all processes `x` comes back unchanged (masked) rather than raising: every process must agree.
    """
    if reduce is not None:
        return _whiten_over_processes(x, mask, shift_mean, reduce)
    n = float(mask.sum())
    if n < 2:
        raise ValueError(f"whiten needs at least 2 masked elements, the mask sums to {n}")
    mean = masked_mean(x, mask)
    var = masked_sum((x - mean) ** 2, mask) / (n - 1)
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return torch.where(mask != 0, out, torch.zeros_like(out))


def _whiten_over_processes(x: Tensor, mask: Tensor, shift_mean: bool, reduce) -> Tensor:
    x64, m64 = x.detach().double(), mask.double()
    n, total = reduce([float(m64.sum()), float((x64 * m64).sum())])
    if n < 2:
        return torch.where(mask != 0, x, torch.zeros_like(x)).detach()
    mean = total / n
    var = reduce([float((((x64 - mean) ** 2) * m64).sum())])[0] / (n - 1)
    out = (x64 - mean) / (var + WHITEN_EPS) ** 0.5 + (0.0 if shift_mean else mean)
    return torch.where(mask != 0, out, torch.zeros_like(out)).to(x.dtype)


@torch.no_grad()
def reinforce_pp_returns(rewards: Tensor, mask: Tensor, kl: Tensor | None = None, *, beta: float = 0.0) -> Tensor:
    """REINFORCE++'s token returns before normalisation (Hu et al. 2025, eq. 2-3), gamma = 1:

        r_it = [t = last masked token of row i] * R_i - beta * kl_it,     G_it = sum_{s >= t, m_is = 1} r_is

    Shapes: `rewards` `[N]`, `mask`, `kl` `[N, T]` (kl None = no penalty) -> `[N, T]`, 0 where `mask == 0`.
    """
    if rewards.dim() != 1 or mask.dim() != 2 or rewards.shape[0] != mask.shape[0]:
        raise ValueError(f"reinforce_pp: rewards [N] and mask [N, T] expected, got {tuple(rewards.shape)} "
                         f"and {tuple(mask.shape)}")
    on = (mask != 0).to(torch.float32)
    # the last masked position of each row: where the count of masked positions from the right is 1
    last = on * (on.flip(-1).cumsum(-1).flip(-1) == 1).to(torch.float32)
    token_r = last * rewards.detach().to(torch.float32).unsqueeze(-1)
    if kl is not None and beta:
        token_r = token_r - beta * torch.where(on != 0, kl.detach().to(torch.float32), torch.zeros_like(on))
    return (token_r * on).flip(-1).cumsum(-1).flip(-1) * on


@torch.no_grad()
def reinforce_pp(rewards: Tensor, mask: Tensor, kl: Tensor | None = None, *, beta: float = 0.0,
                 group_size: int | None = None) -> Tensor:
    """REINFORCE++ (Hu et al. 2025, "REINFORCE++: Stabilizing Critic-Free Policy Optimization with Global
    Advantage Normalization", eq. 2-4 and sec. 3.2): no critic, no group baseline, the KL penalty in the
    reward, and the advantage normalised over the WHOLE batch:

        G = reinforce_pp_returns(R, mask, kl, beta)          (kl: k1 = logp_old - logp_ref per token)
        A_it = (G_it - mean(G)) / std(G)     mean and unbiased std over every masked token of the batch

    REINFORCE++-baseline (`group_size` given; the paper's variant for reasoning tasks, OpenRLHF's
    `reinforce_baseline`): R_i is first replaced by R_i - mean(R of its group), groups contiguous.
    Shapes: `rewards` `[N]`, `mask` `[N, T]`, `kl` `[N, T]` or None (no KL) -> `[N, T]`, detached, 0 where
    `mask == 0`. Needs at least 2 masked tokens (the normalisation).
    """
    r = rewards.detach().to(torch.float32)
    if group_size is not None:
        grouped = _groups(r, group_size, "reinforce_pp_baseline")
        r = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    on = (mask != 0).to(torch.float32)
    return whiten(reinforce_pp_returns(r, on, kl, beta=beta), on)
