"""PPO's per-token reward: -beta * KL on completion tokens, the score (minus the missing-EOS penalty) on
the last token; by hand."""
import pytest
import torch

from posttrain.losses.token_rewards import kl_penalised_rewards


def test_hand_worked_rewards():
    # row 0: completion at positions 2..4, scored 1.0, ended on EOS
    # row 1: completion at positions 1..2, scored 2.0, hit max_new_tokens without EOS (penalty 0.5)
    # row 2: not scored: empty mask, score 0, never penalised
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    kl = torch.tensor([[9.0, 9.0, 0.5, 1.0, -0.5], [9.0, 0.2, 0.4, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    rewards = kl_penalised_rewards(torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), kl, mask,
                                   torch.tensor([4, 2, 1]), beta=0.1, truncated=torch.tensor([False, True, False]),
                                   missing_eos_penalty=0.5)
    # row 0: -0.1 * [0.5, 1.0, -0.5] on positions 2..4, + 1.0 on position 4
    # row 1: -0.1 * [0.2, 0.4] on positions 1..2, + (2.0 - 0.5) on position 2
    expected = torch.tensor([[0.0, 0.0, -0.05, -0.1, 1.05], [0.0, -0.02, 1.46, 0.0, 0.0], [0.0] * 5])
    assert torch.allclose(rewards, expected, atol=1e-6), rewards
    assert rewards.dtype == torch.float32


def test_no_penalty_without_truncation_flags_and_shapes_checked():
    mask = torch.ones(1, 3)
    out = kl_penalised_rewards(torch.tensor([0.25]), torch.zeros(1, 3), mask, torch.tensor([2]), beta=1.0,
                               missing_eos_penalty=5.0)
    assert out.tolist() == [[0.0, 0.0, 0.25]]
    with pytest.raises(ValueError, match="must be \\[B\\]"):
        kl_penalised_rewards(torch.zeros(2), torch.zeros(1, 3), mask, torch.tensor([2]), beta=1.0)
