"""Preference losses: the Bradley-Terry reward-model loss and DPO with its variants.

Shapes: `[P]` = one value per preference pair (chosen row i paired with rejected row i). Sequence
log-probs (`*_logps`) are SUMS of token log-probs over the response. The DPO variants are rows of
`DPO_LOSSES = {name: (function, needs_reference)}`; each function takes only its own parameters:

    fn(policy_chosen_logps, policy_rejected_logps[, ref_chosen_logps, ref_rejected_logps],   # refs iff needed
       *, beta, [its own settings: label_smoothing, simpo_gamma, chosen_lengths, rejected_lengths])
        -> (per-pair losses [P], chosen_rewards [P] detached, rejected_rewards [P] detached)

`bind_dpo_loss(name, **settings)` binds a variant's settings once (the DPO trainer does it when it is
built) into one calling form for all. Adding a variant = one function, one row, one test.

The caller reduces the per-pair losses as `sum(weight * losses) / num_items` (step-wide count).
Sign convention: `h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)`, the
log-ratio difference; h > 0 means the policy prefers the chosen response more than the reference does.
"""
from __future__ import annotations

from typing import Callable

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

DPOLoss = Callable[..., tuple[Tensor, Tensor, Tensor]]


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, *, margin: Tensor | None = None,
                       weight: Tensor | None = None, num_items: float,
                       center_rewards_coefficient: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Reward-model loss under the Bradley-Terry model (Ouyang et al. 2022, eq. 1; margin as in
    Llama 2, Touvron et al. 2023, eq. 2):

        L = sum_i w_i * -log sigmoid(r_c,i - r_r,i - m_i) / num_items
            + center_rewards_coefficient * sum_i w_i * (r_c,i + r_r,i)^2 / num_items

    The second term is TRL RewardTrainer's reward centering (Eisenstein et al. 2023), which keeps the
    rewards near zero mean. TRL takes a plain mean over the micro-batch; here it is the same weighted
    sum over `num_items` as the main term, so it equals TRL's mean when weights are 1 and `num_items` is
    the number of pairs in the step, and it stays exact under gradient accumulation.
    Shapes: rewards, `margin`, `weight` `[P]` (None = zeros / ones); `num_items` = sum of the weights
    over the whole step (`PreferenceBatch.num_items`).
    Metrics (this micro-batch, detached): `accuracy` (fraction with r_c > r_r, ties count as wrong),
    `margin_mean` (mean r_c - r_r), `chosen_mean`, `rejected_mean`.
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards "
                         f"{tuple(rejected_rewards.shape)} must both be [P]")
    if not num_items > 0:
        raise ValueError(f"num_items must be > 0 (summed pair weights of the step), got {num_items!r}")
    diff = chosen_rewards - rejected_rewards
    margin = torch.zeros_like(diff) if margin is None else margin.to(diff)
    weight = torch.ones_like(diff) if weight is None else weight.to(diff)
    loss = (weight * -F.logsigmoid(diff - margin)).sum() / num_items
    if center_rewards_coefficient:
        centering = (weight * (chosen_rewards + rejected_rewards) ** 2).sum() / num_items
        loss = loss + center_rewards_coefficient * centering
    d = diff.detach()
    metrics = {"accuracy": (d > 0).float().mean(), "margin_mean": d.mean(),
               "chosen_mean": chosen_rewards.detach().mean(),
               "rejected_mean": rejected_rewards.detach().mean()}
    return loss, metrics


def ranking_pairs(group_sizes: list[int]) -> tuple[Tensor, Tensor]:
    """(better [P], worse [P]) indices of every ordered pair within each group of a flat score vector:
    groups of sizes `[K_1, K_2, ...]` laid end to end, each ranked best first, give pairs (i, j), i < j,
    K(K-1)/2 per group (InstructGPT's K-wise comparisons). E.g. `[3, 2]` -> (0,1), (0,2), (1,2), (3,4)."""
    better, worse, start = [], [], 0
    for k in group_sizes:
        for i in range(k):
            better += [start + i] * (k - 1 - i)
            worse += range(start + i + 1, start + k)
        start += k
    return torch.tensor(better, dtype=torch.long), torch.tensor(worse, dtype=torch.long)


def ranking_bradley_terry_loss(scores: Tensor, chosen_index: Tensor, rejected_index: Tensor, *,
                               margin: Tensor | None = None, weight: Tensor | None = None, num_items: float,
                               center_rewards_coefficient: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """`bradley_terry_loss` over pairs drawn from one score per sequence: `scores [S]` (each response of a
    group scored once), pair i compares `scores[chosen_index[i]]` with `scores[rejected_index[i]]`
    (`ranking_pairs` gives all K(K-1)/2 of each group). Loss, gradients and per-pair metrics equal those
    of `bradley_terry_loss` on the expanded pairs; `margin`, `weight` are per pair `[P]`. With weight
    1/C(K,2) per pair and `num_items` = groups this is InstructGPT's per-prompt mean. Hand-worked: K=3,
    scores [2, 1, 0], weight 1/3, num_items 1 -> mean(-logsigmoid([1, 2, 1]))
    = (0.313262 + 0.126928 + 0.313262) / 3 = 0.251150."""
    if scores.dim() != 1 or chosen_index.shape != rejected_index.shape or chosen_index.dim() != 1:
        raise ValueError(f"scores {tuple(scores.shape)} must be [S], chosen_index {tuple(chosen_index.shape)} and "
                         f"rejected_index {tuple(rejected_index.shape)} both [P]")
    idx_c, idx_r = chosen_index.to(scores.device), rejected_index.to(scores.device)
    return bradley_terry_loss(scores[idx_c], scores[idx_r], margin=margin, weight=weight, num_items=num_items,
                              center_rewards_coefficient=center_rewards_coefficient)


def _logratio_diff(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                   ref_chosen_logps: Tensor | None, ref_rejected_logps: Tensor | None,
                   loss_name: str) -> tuple[Tensor, Tensor]:
    """(chosen log-ratio, rejected log-ratio), each `[P]`; the reference is required."""
    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(f"DPO loss '{loss_name}' needs ref_chosen_logps and ref_rejected_logps (got None)")
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def _positive_lengths(lengths: Tensor | None, name: str, loss_name: str) -> Tensor:
    if lengths is None:
        raise ValueError(f"DPO loss '{loss_name}' needs {name} [P] (response token counts), got None")
    if bool((lengths <= 0).any()):
        raise ValueError(f"{name} must be > 0 for every pair, got {lengths.tolist()}")
    return lengths


def _conservative_logsigmoid(z: Tensor, label_smoothing: float, loss_name: str) -> Tensor:
    """`-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)`: the cDPO loss of a preference flipped w.p. eps."""
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"DPO loss '{loss_name}' needs 0 <= label_smoothing <= 0.5, got {label_smoothing}")
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def sigmoid_dpo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float,
                label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7): `loss = -log sigmoid(beta * h)`.

    With `label_smoothing = eps > 0` it is conservative DPO (cDPO, Mitchell 2023, "A note on DPO with
    noisy preferences"): `-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`, i.e. the preference
    label is flipped with probability eps. (TRL 1.16's `sigmoid` ignores `label_smoothing`; its cDPO form
    survives only in its `aot` losses; older TRL applied it to `sigmoid` as here.) Equals log 2 when the
    policy equals the reference. Shapes: all `[P]`. Rewards: `beta * (policy - ref)`, detached.
    """
    chosen_lr, rejected_lr = _logratio_diff(policy_chosen_logps, policy_rejected_logps,
                                            ref_chosen_logps, ref_rejected_logps, "sigmoid")
    losses = _conservative_logsigmoid(beta * (chosen_lr - rejected_lr), label_smoothing, "sigmoid")
    return losses, (beta * chosen_lr).detach(), (beta * rejected_lr).detach()


def robust_dpo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
               ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float,
               label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", its unbiased loss; TRL's `robust`),
    with `eps = label_smoothing` the assumed label-flip rate, `0 <= eps < 0.5`:

        loss = [ (1 - eps) * -log sigmoid(beta h) + eps * log sigmoid(-beta h) ] / (1 - 2 eps)

    Unbiased for the clean-label DPO loss under flips; eps = 0 gives plain DPO. Shapes: `[P]`.
    Rewards: `beta * (policy - ref)`, detached.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    chosen_lr, rejected_lr = _logratio_diff(policy_chosen_logps, policy_rejected_logps,
                                            ref_chosen_logps, ref_rejected_logps, "robust")
    z = beta * (chosen_lr - rejected_lr)
    eps = label_smoothing
    losses = ((1.0 - eps) * -F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return losses, (beta * chosen_lr).detach(), (beta * rejected_lr).detach()


def ipo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float,
        chosen_lengths: Tensor | None = None, rejected_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", the empirical IPO loss with tau = beta):
    `loss = (h - 1 / (2 beta))^2`.

    Length choice: when `chosen_lengths` / `rejected_lengths` `[P]` are given, every log-prob is first
    divided by its response length (token-averaged log-probs, as TRL's `ipo`), which keeps h on the
    scale of 1 / (2 beta) for long responses; when they are None, the paper's summed log-probs are used.
    The rewards returned are `beta * (policy - ref)` on the SUMMED log-probs either way, detached, as TRL
    logs them (`rewards/*` then mean the same thing for every DPO variant; only the loss averages).
    Shapes: `[P]`.
    """
    chosen_lr, rejected_lr = _logratio_diff(policy_chosen_logps, policy_rejected_logps,
                                            ref_chosen_logps, ref_rejected_logps, "ipo")
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("ipo needs both chosen_lengths and rejected_lengths, or neither")
    rewards = (beta * chosen_lr).detach(), (beta * rejected_lr).detach()
    if chosen_lengths is not None and rejected_lengths is not None:
        chosen_lr = chosen_lr / _positive_lengths(chosen_lengths, "chosen_lengths", "ipo").to(chosen_lr)
        rejected_lr = rejected_lr / _positive_lengths(rejected_lengths, "rejected_lengths", "ipo").to(
            rejected_lr)
    losses = (chosen_lr - rejected_lr - 1.0 / (2.0 * beta)) ** 2
    return losses, *rewards


def hinge_dpo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
              ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Hinge loss of SLiC (Zhao et al. 2023, "SLiC-HF", the rank-calibration hinge
    max(0, delta - h)), on the log-ratios as TRL's `hinge`: `loss = relu(1 - beta * h)`
    = beta * relu(1/beta - h), i.e. SLiC's hinge with margin delta = 1 / beta, scaled by beta.

    Departure from SLiC: the reference log-probs enter through h (SLiC-HF compares raw policy
    log-probs and adds a separate regulariser). Shapes: `[P]`. Rewards: `beta * (policy - ref)`, detached.
    """
    chosen_lr, rejected_lr = _logratio_diff(policy_chosen_logps, policy_rejected_logps,
                                            ref_chosen_logps, ref_rejected_logps, "hinge")
    losses = torch.relu(1.0 - beta * (chosen_lr - rejected_lr))
    return losses, (beta * chosen_lr).detach(), (beta * rejected_lr).detach()


def simpo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, *, beta: float,
          chosen_lengths: Tensor | None, rejected_lengths: Tensor | None, simpo_gamma: float = 0.5,
          label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    eq. 6), reference-free:

        loss = -log sigmoid(beta * (logp_c / |y_c| - logp_r / |y_r|) - gamma),  gamma = simpo_gamma

    gamma is the paper's target reward margin, in reward units (TRL CPOTrainer's `simpo_gamma` means
    the same). `label_smoothing = eps` smooths as in cDPO (as TRL does).
    No reference. `chosen_lengths`, `rejected_lengths` `[P]` (response token counts) are required.
    Shapes: `[P]`.
    Rewards: `beta * logp / length` (the implicit SimPO reward), detached.
    """
    chosen_len = _positive_lengths(chosen_lengths, "chosen_lengths", "simpo")
    rejected_len = _positive_lengths(rejected_lengths, "rejected_lengths", "simpo")
    chosen_avg = policy_chosen_logps / chosen_len.to(policy_chosen_logps)
    rejected_avg = policy_rejected_logps / rejected_len.to(policy_rejected_logps)
    z = beta * (chosen_avg - rejected_avg) - simpo_gamma
    losses = _conservative_logsigmoid(z, label_smoothing, "simpo")
    return losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach()


# name -> (function, needs_reference). A new variant is one function and one row here.
DPO_LOSSES: dict[str, tuple[DPOLoss, bool]] = {
    "sigmoid": (sigmoid_dpo, True),
    "ipo": (ipo, True),
    "hinge": (hinge_dpo, True),
    "robust": (robust_dpo, True),
    "simpo": (simpo, False),
}
LENGTHS = ("chosen_lengths", "rejected_lengths")


def bind_dpo_loss(name: str, **settings) -> tuple[Callable[..., tuple[Tensor, Tensor, Tensor]], bool]:
    """Variant `name` of `DPO_LOSSES` with the `settings` its function takes bound once, and whether it
    needs the reference. The bound form is the same for every variant:

        fn(policy_chosen, policy_rejected, ref_chosen | None, ref_rejected | None, chosen_lengths, rejected_lengths)

    (a reference-free variant ignores the reference, a variant without lengths ignores them). A non-zero
    `label_smoothing` for a variant that does not define it is a `ValueError`; other settings a
    variant does not take (e.g. `simpo_gamma` for sigmoid) are left out."""
    if name not in DPO_LOSSES:
        raise ValueError(f"loss: expected one of {sorted(DPO_LOSSES)}, found '{name}'")
    fn, needs_ref = DPO_LOSSES[name]
    taken = inspect.signature(fn).parameters
    if settings.get("label_smoothing") and "label_smoothing" not in taken:
        raise ValueError(f"label_smoothing={settings['label_smoothing']} is not defined for DPO loss '{name}' "
                         "(use 'sigmoid' for cDPO, 'robust' or 'simpo')")
    bound = {k: v for k, v in settings.items() if k in taken}
    with_lengths = all(k in taken for k in LENGTHS)

    def loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths):
        refs = (ref_chosen, ref_rejected) if needs_ref else ()
        lengths = dict(zip(LENGTHS, (chosen_lengths, rejected_lengths))) if with_lengths else {}
        return fn(policy_chosen, policy_rejected, *refs, **bound, **lengths)

    return loss, needs_ref
