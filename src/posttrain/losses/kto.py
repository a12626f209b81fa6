"""KTO: Kahneman-Tversky Optimisation on unpaired data (a completion and a yes/no label per row).

Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 7-8; as TRL
1.16's KTOTrainer (`loss_type="kto"`). Shapes: `[N]` one value per row; sequence log-probs are SUMS of
token log-probs over the completion.
"""
from __future__ import annotations

import torch
from torch import Tensor


def kl_pair_indices(n: int) -> list[int]:
    """Completion index paired with each prompt for the reference-point estimate: row i's prompt with
    row i-1's completion (the last completion goes to the first prompt), as TRL's rotation by one:
    (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}). The pairs are mismatched, so the policy has no reason
    to prefer them: their log-ratio estimates KL(pi || ref) rather than the reward."""
    if n < 1:
        raise ValueError(f"kl_pair_indices needs n >= 1, got {n}")
    return [(i - 1) % n for i in range(n)]


def kto_reference_point(kl_policy_logps: Tensor | None, kl_ref_logps: Tensor | None) -> Tensor:
    """z_ref = max(0, mean_j (logp_pi(y'_j|x_j) - logp_ref(y'_j|x_j))) over mismatched pairs, detached
    (the paper's KL estimate, sec. 4.1: a shared, non-negative reference point). None -> 0. `[M]` -> 0-dim."""
    if kl_policy_logps is None or kl_ref_logps is None:
        return torch.zeros(())
    return (kl_policy_logps.detach() - kl_ref_logps.detach()).mean().clamp(min=0)


def kto_loss(policy_logps: Tensor, ref_logps: Tensor, labels: Tensor, z_ref: Tensor, *, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-row KTO loss `[N]` (the caller sums it over rows and divides by the step's row count):

        r_i = logp_pi(y_i|x_i) - logp_ref(y_i|x_i)
        desirable (label True):    lambda_D * (1 - sigmoid(beta * (r_i - z_ref)))
        undesirable (label False): lambda_U * (1 - sigmoid(beta * (z_ref - r_i)))

    i.e. lambda_y - v(x, y) of eq. 8, with lambda_D = `desirable_weight`, lambda_U = `undesirable_weight`
    (the paper's advice when the classes are unbalanced: lambda_D n_D / (lambda_U n_U) in [1, 4/3]).
    Shapes: `policy_logps`, `ref_logps` `[N]`, `labels` `[N]` bool, `z_ref` 0-dim (`kto_reference_point`).
    Metrics (detached): `rewards/desirable`, `rewards/undesirable` (mean beta * r per class; 0 for a
    class absent from the batch), `kl` (z_ref).
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.shape != labels.shape or policy_logps.dim() != 1:
        raise ValueError(f"policy_logps {tuple(policy_logps.shape)}, ref_logps {tuple(ref_logps.shape)} and labels "
                         f"{tuple(labels.shape)} must all be [N]")
    desirable = labels.bool()
    z = z_ref.to(policy_logps)
    logratio = policy_logps - ref_logps
    pos = desirable_weight * (1.0 - torch.sigmoid(beta * (logratio - z)))
    neg = undesirable_weight * (1.0 - torch.sigmoid(beta * (z - logratio)))
    losses = torch.where(desirable, pos, neg)
    reward = (beta * logratio).detach()
    zero = torch.zeros((), device=reward.device)
    metrics = {"rewards/desirable": reward[desirable].mean() if bool(desirable.any()) else zero,
               "rewards/undesirable": reward[~desirable].mean() if bool((~desirable).any()) else zero,
               "kl": z.detach()}
    return losses, metrics
