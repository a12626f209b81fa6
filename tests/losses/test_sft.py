import math

import pytest
import torch

from posttrain.losses.sft import (
    SFT_LOSSES,
    UNLIKELIHOOD_MIN_ONE_MINUS_P,
    dft_loss,
    neg_log_one_minus_p,
    nll_loss,
    unlikelihood_loss,
)


def assert_close(actual, expected, atol=1e-6, rtol=1e-5):
    """torch.allclose with shapes checked (torch.testing.assert_close costs ~0.5 s of imports)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual, expected)


LOG_HALF = math.log(0.5)


def _half_batch():
    logps = torch.tensor([[0.0, LOG_HALF, LOG_HALF], [0.0, LOG_HALF, -7.0]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    return logps, mask


def test_nll_of_probability_half_is_log_two_per_token():
    logps, mask = _half_batch()
    loss, metrics = nll_loss(logps, mask, None, num_items=3.0)
    assert loss.item() == pytest.approx(math.log(2.0))
    assert metrics["nll"].item() == pytest.approx(math.log(2.0))
    assert metrics["p_mean"].item() == pytest.approx(0.5)
    assert metrics["num_tokens"].item() == 3.0


def test_nll_divides_by_num_items_not_by_the_local_count():
    logps, mask = _half_batch()
    loss, _ = nll_loss(logps, mask, None, num_items=6.0)
    assert loss.item() == pytest.approx(3 * math.log(2.0) / 6.0)


def test_dft_is_probability_weighted_nll_with_detached_weight():
    logps, mask = _half_batch()
    loss, metrics = dft_loss(logps, mask, None, num_items=3.0)
    assert loss.item() == pytest.approx(0.5 * math.log(2.0))
    assert metrics["nll"].item() == pytest.approx(math.log(2.0))
    loss.backward()
    # d/dlogp [-sg(p) * logp] = -p = -0.5, divided by num_items; padding and unmasked tokens get 0
    expected = torch.tensor([[0.0, -0.5 / 3, -0.5 / 3], [0.0, -0.5 / 3, 0.0]])
    assert_close(logps.grad, expected)


def test_dft_hand_value_with_two_probabilities():
    logps = torch.tensor([[math.log(0.25), math.log(0.8)]])
    mask = torch.ones(1, 2)
    loss, _ = dft_loss(logps, mask, None, num_items=2.0)
    expected = (0.25 * -math.log(0.25) + 0.8 * -math.log(0.8)) / 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_unlikelihood_hand_value_positives_plus_alpha_negatives():
    logps = torch.tensor([[0.0, LOG_HALF, math.log(0.9)], [0.0, LOG_HALF, math.log(0.2)]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    neg_mask = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    loss, metrics = unlikelihood_loss(logps, mask, neg_mask, num_items=4.0, unlikelihood_alpha=0.5)
    positives = -math.log(0.5) - math.log(0.9)
    negatives = -math.log(1 - 0.5) - math.log(1 - 0.2)
    assert loss.item() == pytest.approx((positives + 0.5 * negatives) / 4.0, rel=1e-6)
    assert metrics["neg_p_mean"].item() == pytest.approx(0.35)
    assert metrics["unlikelihood"].item() == pytest.approx(negatives / 2, rel=1e-6)
    assert metrics["num_neg_tokens"].item() == 2.0
    loss.backward()
    # d/dl [-log(1 - e^l)] = p / (1 - p): 1 at p = 0.5, 0.25 at p = 0.2
    assert logps.grad[1, 1].item() == pytest.approx(0.5 * 1.0 / 4.0, rel=1e-5)
    assert logps.grad[1, 2].item() == pytest.approx(0.5 * 0.25 / 4.0, rel=1e-5)


def test_unlikelihood_without_negatives_equals_nll():
    logps, mask = _half_batch()
    ul, _ = unlikelihood_loss(logps, mask, torch.zeros_like(mask), num_items=3.0)
    ul_none, _ = unlikelihood_loss(logps, mask, None, num_items=3.0)
    nll, _ = nll_loss(logps, mask, None, num_items=3.0)
    assert ul.item() == nll.item() == ul_none.item()


def test_neg_log_one_minus_p_is_accurate_on_both_branches():
    for lp in (-50.0, -5.0, -0.7, -0.69, -1e-3):
        got = neg_log_one_minus_p(torch.tensor(lp, dtype=torch.float64)).item()
        assert got == pytest.approx(-math.log(-math.expm1(lp)), rel=1e-12)
    tiny = neg_log_one_minus_p(torch.tensor(-30.0)).item()  # float32: exp(-30) ~ 9e-14, not rounded to 0
    assert tiny == pytest.approx(math.exp(-30.0), rel=1e-5)


def test_neg_log_one_minus_p_is_capped_and_nan_free_as_p_goes_to_one():
    logps = torch.tensor([0.0, -1e-9, 1e-4, math.log1p(-1e-3)], requires_grad=True)
    out = neg_log_one_minus_p(logps)
    cap = -math.log(UNLIKELIHOOD_MIN_ONE_MINUS_P)
    assert torch.isfinite(out).all()
    assert out[:3].tolist() == pytest.approx([cap] * 3, rel=1e-4)
    assert out[3].item() == pytest.approx(-math.log(1e-3), rel=1e-4)
    out.sum().backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[:3].tolist() == [0.0, 0.0, 0.0]  # clamped: no gradient
    assert logps.grad[3].item() == pytest.approx((1 - 1e-3) / 1e-3, rel=1e-3)


def test_padding_with_minus_inf_neither_leaks_nor_gives_nan():
    logps = torch.tensor([[LOG_HALF, -float("inf")]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]])
    for fn in SFT_LOSSES.values():
        loss, _ = fn(logps, mask, torch.zeros_like(mask), 1.0)
        loss.backward()
        assert loss.item() == pytest.approx(math.log(2.0) * (0.5 if fn is dft_loss else 1.0))
        assert torch.isfinite(logps.grad).all() and logps.grad[0, 1].item() == 0.0
        logps.grad = None


def test_errors_name_the_wrong_argument():
    logps, mask = _half_batch()
    with pytest.raises(ValueError, match="num_items"):
        nll_loss(logps, mask, None, num_items=0.0)
    with pytest.raises(ValueError, match="mask"):
        dft_loss(logps, mask[:, :2], None, num_items=1.0)
    with pytest.raises(ValueError, match="neg_mask"):
        unlikelihood_loss(logps, mask, mask[:1], num_items=1.0)


@pytest.mark.parametrize("name", sorted(SFT_LOSSES))
def test_grad_accumulation_8x1_equals_1x8(name):
    torch.manual_seed(0)
    weight = torch.randn(6, 5, requires_grad=True)
    feats, targets = torch.randn(8, 7, 6), torch.randint(0, 5, (8, 7))
    lengths = torch.tensor([7, 2, 5, 3, 7, 4, 6, 1])
    valid = (torch.arange(7) < lengths[:, None]).float()
    neg_rows = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0.0])[:, None]
    mask, neg_mask = valid * (1 - neg_rows), valid * neg_rows
    num_items = float(mask.sum() + neg_mask.sum())

    def logps(rows):
        return torch.log_softmax(feats[rows] @ weight, -1).gather(-1, targets[rows, :, None]).squeeze(-1)

    fn = SFT_LOSSES[name]
    full, _ = fn(logps(slice(None)), mask, neg_mask, num_items)
    full_grad = torch.autograd.grad(full, weight)[0]
    micro = sum(fn(logps(slice(i, i + 1)), mask[i:i + 1], neg_mask[i:i + 1], num_items)[0] for i in range(8))
    micro_grad = torch.autograd.grad(micro, weight)[0]
    assert_close(micro, full)
    assert_close(micro_grad, full_grad)
    # the naive per-micro-batch mean does NOT match: the test can tell the two apart
    naive = sum(fn(logps(slice(i, i + 1)), mask[i:i + 1], neg_mask[i:i + 1],
                   float(mask[i].sum() + neg_mask[i].sum()))[0] for i in range(8)) / 8
    assert abs(naive.item() - full.item()) > 1e-3
