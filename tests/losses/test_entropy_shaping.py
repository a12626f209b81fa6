"""Top-entropy token selection, the entropy bonus and DAPO's overlong penalty: hand-worked values."""
import pytest
import torch

from posttrain.losses.entropy import entropy_bonus, top_entropy_mask
from posttrain.losses.reduce import Normaliser
from posttrain.losses.shaping import overlong_penalty


def close(t, expected, abs=1e-5):
    """Nested-list comparison (pytest.approx takes flat sequences only)."""
    return torch.allclose(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=abs, rtol=1e-5)


def test_top_entropy_mask_keeps_the_top_share_of_masked_tokens():
    # masked entropies 1, 2, 3, 4, 5 (the 9.0 is padding). quantile 0.4 -> threshold = quantile(0.6)
    # = 1 + 0.6 * 4 = 3.4 (linear interpolation) -> keep 4 and 5: 40% of the tokens
    ent = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert top_entropy_mask(ent, mask, 0.4).tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    assert top_entropy_mask(ent, mask, 1.0).tolist() == mask.tolist()
    assert top_entropy_mask(ent, mask, 0.0).tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # the maximum only
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        top_entropy_mask(ent, mask, 1.5)


def test_entropy_bonus_is_minus_coef_times_step_mean_entropy():
    # entropies 1 and 3 on masked tokens, 4 tokens in the whole step: -0.1 * (1 + 3) / 4 = -0.1
    ent = torch.tensor([[1.0, 3.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    bonus = entropy_bonus(ent, mask, Normaliser(4.0, 2.0, 3), coef=0.1)
    assert bonus.item() == pytest.approx(-0.1)
    bonus.backward()
    assert close(ent.grad, [[-0.025, -0.025, 0.0]])  # minimising it raises entropy


def test_overlong_penalty_is_zero_then_linear_then_minus_one():
    # L_max 20, cache 8: free up to 12; 16 -> (12 - 16) / 8 = -0.5; 20 -> -1; 21 -> -1
    pen = overlong_penalty(torch.tensor([5, 12, 16, 20, 21]), max_len=20, cache=8)
    assert pen.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError, match="overlong_cache"):
        overlong_penalty(torch.tensor([1]), max_len=20, cache=0)
