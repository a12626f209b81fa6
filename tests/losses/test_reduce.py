import math

import pytest
import torch

from posttrain.losses.reduce import Normaliser, masked_mean, masked_sum


def test_masked_sum_hand_value_and_ignores_padding_garbage():
    x = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert masked_sum(x, mask).item() == 1 + 2 + 6
    assert masked_sum(x, mask, dim=-1).tolist() == [3.0, 6.0]


def test_masked_sum_padding_gets_zero_gradient_not_nan():
    x = torch.tensor([[0.5, -float("inf")]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]])
    masked_sum(-x, mask).backward()
    assert x.grad.tolist() == [[-1.0, 0.0]]


def test_masked_mean_hand_values_and_empty_rows():
    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_mean(x, mask).item() == 2.0
    assert masked_mean(x, mask, dim=-1).tolist() == [2.0, 0.0]
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_masked_mean_broadcasts_a_row_mask():
    x = torch.tensor([[1.0, 3.0], [10.0, 20.0]])
    assert masked_mean(x, torch.tensor([[1.0], [0.0]])).item() == 2.0


def test_normaliser_rejects_non_positive_counts_by_name():
    assert Normaliser(num_tokens=3.0, num_seqs=2.0, max_len=4).max_len == 4
    with pytest.raises(ValueError, match="num_seqs"):
        Normaliser(num_tokens=3.0, num_seqs=0.0, max_len=4)
    with pytest.raises(ValueError, match="num_tokens"):
        Normaliser(num_tokens=math.nan, num_seqs=1.0, max_len=4)
