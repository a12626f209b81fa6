"""Truncated / masked importance sampling against the rollout engine's log-probs: hand-worked values."""
import math

import pytest
import torch

from posttrain.losses.rollout_correction import rollout_is_weights


def close(t, expected, abs=1e-5):
    """Nested-list comparison (pytest.approx takes flat sequences only)."""
    return torch.allclose(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=abs, rtol=1e-5)

# trainer - sampler log-probs: row 0 tokens 0.0, ln 4 (ratio 4), row 1 token -ln 2 (ratio 0.5), pad
TRAINER = torch.tensor([[0.0, math.log(4.0)], [-math.log(2.0), 0.0]])
SAMPLER = torch.zeros(2, 2)
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_token_truncate_clamps_each_ratio():
    # ratios 1, 4, 0.5 -> clamp to [0.6, 3]: 1, 3, 0.6; the padding position gets ratio 1 (no diff)
    w, m = rollout_is_weights(TRAINER, SAMPLER, MASK, mode="token_truncate", clip_min=0.6, clip_max=3.0)
    assert close(w, [[1.0, 3.0], [0.6, 1.0]])
    assert m["is/ratio_mean"].item() == pytest.approx((1 + 4 + 0.5) / 3)
    assert m["is/ratio_max"].item() == pytest.approx(4.0)
    assert m["is/frac_truncated"].item() == pytest.approx(2 / 3) and m["is/frac_masked"].item() == 0.0
    assert m["is/logp_diff_mean"].item() == pytest.approx((0 + math.log(4) + math.log(2)) / 3)
    assert m["is/logp_diff_max"].item() == pytest.approx(math.log(4))


def test_token_mask_zeroes_the_extreme_tokens():
    w, m = rollout_is_weights(TRAINER, SAMPLER, MASK, mode="token_mask", clip_min=0.6, clip_max=3.0)
    assert close(w, [[1.0, 0.0], [0.0, 1.0]])
    assert m["is/frac_masked"].item() == pytest.approx(2 / 3)


def test_sequence_modes_use_the_product_of_token_ratios():
    # row 0: 1 * 4 = 4 -> truncated to 3 / masked to 0;  row 1: 0.5 -> kept (clip_min None)
    w, m = rollout_is_weights(TRAINER, SAMPLER, MASK, mode="sequence_truncate", clip_max=3.0)
    assert w.shape == (2, 1) and w[:, 0].tolist() == pytest.approx([3.0, 0.5])
    w, m = rollout_is_weights(TRAINER, SAMPLER, MASK, mode="sequence_mask", clip_max=3.0)
    assert w[:, 0].tolist() == pytest.approx([0.0, 0.5])
    assert m["is/frac_masked"].item() == pytest.approx(0.5)  # 1 of 2 rows


def test_weights_are_constants_and_nan_sampler_logps_mean_no_mismatch():
    trainer = TRAINER.clone().requires_grad_(True)
    sampler = torch.tensor([[float("nan"), 0.0], [0.0, 0.0]])
    w, _ = rollout_is_weights(trainer, sampler, MASK, mode="token_truncate", clip_max=3.0)
    assert not w.requires_grad and w[0, 0].item() == 1.0
    with pytest.raises(ValueError, match="rollout_is_mode"):
        rollout_is_weights(TRAINER, SAMPLER, MASK, mode="token")
