"""Pure-torch loss maths (no transformers import): SFT, preference (reward model, DPO family),
policy gradient (PPO clip, value, KL estimators, aggregations) and advantage estimators.

Algorithms pick a variant once from `SFT_LOSSES`, `DPO_LOSSES` or `AGGREGATIONS`. Shapes and the
step-wide normalisation (`num_items`, `Normaliser`) are described in docs/CONTRACTS.md.
"""
from posttrain.losses.advantages import gae, group_advantages, leave_one_out, whiten
from posttrain.losses.policy import (
    AGGREGATIONS,
    bnpo_aggregate,
    dapo_aggregate,
    dr_grpo_aggregate,
    grpo_aggregate,
    kl_k1,
    kl_k2,
    kl_k3,
    ppo_clip_loss,
    value_loss,
)
from posttrain.losses.preference import (
    DPO_LOSSES,
    bind_dpo_loss,
    bradley_terry_loss,
    hinge_dpo,
    ipo,
    robust_dpo,
    sigmoid_dpo,
    simpo,
)
from posttrain.losses.reduce import Normaliser, masked_mean, masked_sum
from posttrain.losses.sft import SFT_LOSSES, dft_loss, neg_log_one_minus_p, nll_loss, unlikelihood_loss

__all__ = [
    "AGGREGATIONS", "DPO_LOSSES", "SFT_LOSSES", "Normaliser", "bind_dpo_loss",
    "bnpo_aggregate", "bradley_terry_loss", "dapo_aggregate", "dft_loss", "dr_grpo_aggregate", "gae",
    "grpo_aggregate", "group_advantages", "hinge_dpo", "ipo", "kl_k1", "kl_k2", "kl_k3", "leave_one_out",
    "masked_mean", "masked_sum", "neg_log_one_minus_p", "nll_loss", "ppo_clip_loss", "robust_dpo",
    "sigmoid_dpo", "simpo", "unlikelihood_loss", "value_loss", "whiten",
]
