import math

import pytest
import torch

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
from posttrain.losses.reduce import Normaliser


def assert_close(actual, expected, atol=1e-6, rtol=1e-5):
    """torch.allclose with shapes checked (torch.testing.assert_close costs ~0.5 s of imports)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual, expected)

EPS_LOW, EPS_HIGH = 0.2, 0.28


def _ppo(ratios, advantages, mask=None):
    logps = torch.tensor([[math.log(r) for r in ratios]], requires_grad=True)
    mask = torch.ones_like(logps) if mask is None else torch.tensor([mask])
    loss, metrics = ppo_clip_loss(logps, torch.zeros_like(logps), torch.tensor([advantages]), mask,
                                  eps_low=EPS_LOW, eps_high=EPS_HIGH)
    loss.sum().backward()
    return loss[0].tolist(), logps.grad[0].tolist(), metrics


def test_ppo_clip_hand_values_with_asymmetric_range():
    # r = 1.5, A = 2: min(3, 1.28 * 2) = 2.56;   r = 0.5, A = -1: min(-0.5, 0.8 * -1) = -0.8
    loss, _, _ = _ppo([1.5, 0.5, 1.0], [2.0, -1.0, 3.0])
    assert loss == pytest.approx([-2.56, 0.8, -3.0])


def test_clip_only_acts_outside_the_range_and_kills_the_gradient_there():
    ratios = [1.25, 1.3, 0.81, 0.79, 1.3, 0.79]
    advs = [1.0, 1.0, -1.0, -1.0, -1.0, 1.0]
    loss, grad, metrics = _ppo(ratios, advs)
    # inside [0.8, 1.28]: unclipped, d(-r A)/dlogp = -r A
    assert grad[0] == pytest.approx(-1.25) and grad[2] == pytest.approx(0.81)
    # outside, with the advantage pushing further out: clipped, constant loss, zero gradient
    assert grad[1] == 0.0 and grad[3] == 0.0
    assert loss[1] == pytest.approx(-1.28) and loss[3] == pytest.approx(0.8)
    # outside, but the advantage pulls back in: the unclipped term is the minimum, gradient flows
    assert grad[4] == pytest.approx(1.3) and grad[5] == pytest.approx(-0.79)
    assert metrics["clip_frac"].item() == pytest.approx(2 / 6)
    assert metrics["ratio_mean"].item() == pytest.approx(sum(ratios) / 6)


def test_ppo_masked_tokens_give_zero_loss_and_no_nan_from_padding():
    logps = torch.tensor([[-1.0, 0.0, 0.0]], requires_grad=True)
    old_logps = torch.tensor([[-1.0, -500.0, 0.0]])  # padding garbage: exp(500) would overflow
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    loss, metrics = ppo_clip_loss(logps, old_logps, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.2)
    loss.sum().backward()
    assert loss.tolist() == [[-1.0, 0.0, 0.0]]
    assert torch.isfinite(logps.grad).all() and logps.grad[0, 1:].tolist() == [0.0, 0.0]
    assert metrics["clip_frac"].item() == 0.0 and metrics["ratio_mean"].item() == 1.0


def test_sequence_advantages_broadcast_like_token_advantages():
    torch.manual_seed(0)
    logps, old = torch.randn(3, 4) * 0.3, torch.randn(3, 4) * 0.3
    mask, adv = torch.ones(3, 4), torch.tensor([1.0, -2.0, 0.5])
    per_seq, _ = ppo_clip_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.2)
    per_tok, _ = ppo_clip_loss(logps, old, adv[:, None].expand(3, 4), mask, eps_low=0.2, eps_high=0.2)
    assert_close(per_seq, per_tok)


def test_ppo_shape_mismatch_names_the_tensors():
    with pytest.raises(ValueError, match="old_logps"):
        ppo_clip_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3),
                      eps_low=0.2, eps_high=0.2)


def test_value_loss_hand_values_and_clipped_gradient():
    values = torch.tensor([[2.0, 2.0, 2.0, 9.0]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0, 1.9, 0.0]])
    returns = torch.tensor([[0.0, 3.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, metrics = value_loss(values, old, returns, mask, clip=0.5)
    # v_clip = 1.5, 1.5, 2.0: max(4, 2.25) = 4; max(1, 2.25) = 2.25; max(1, 1) = 1; masked: 0
    assert loss[0].tolist() == pytest.approx([2.0, 1.125, 0.5, 0.0])
    # only token 1 takes the (strictly larger) clipped term; the mean loss and value are over 3 tokens
    assert metrics["vf_clip_frac"].item() == pytest.approx(1 / 3)
    assert metrics["value_loss"].item() == pytest.approx((2.0 + 1.125 + 0.5) / 3)
    assert metrics["value_mean"].item() == pytest.approx(2.0) and not metrics["value_mean"].requires_grad
    loss.sum().backward()
    # token 1 chose the clipped term, which is constant in v beyond the clip: zero gradient
    assert values.grad[0].tolist() == pytest.approx([2.0, 0.0, -1.0, 0.0])


def test_kl_estimators_hand_values():
    logps, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_k1(logps, ref).item() == pytest.approx(math.log(2.0))
    assert kl_k2(logps, ref).item() == pytest.approx(0.5 * math.log(2.0) ** 2)
    assert kl_k3(logps, ref).item() == pytest.approx(0.5 + math.log(2.0) - 1.0)


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())
    for estimator in (kl_k1, kl_k3):
        assert float((p * estimator(p.log(), q.log())).sum()) == pytest.approx(kl, rel=1e-12)
    assert (kl_k3(p.log(), q.log()) >= 0).all() and (kl_k2(p.log(), q.log()) >= 0).all()


# ---------------------------------------------------------------- aggregations

TOKEN_LOSS = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


def test_aggregation_hand_values():
    norm = Normaliser(num_tokens=4.0, num_seqs=2.0, max_len=4)
    assert grpo_aggregate(TOKEN_LOSS, MASK, norm).item() == pytest.approx((2.0 + 4.0) / 2)
    assert dr_grpo_aggregate(TOKEN_LOSS, MASK, norm).item() == pytest.approx(10.0 / (2 * 4))
    assert dapo_aggregate(TOKEN_LOSS, MASK, norm).item() == pytest.approx(10.0 / 4)
    assert bnpo_aggregate(TOKEN_LOSS, MASK, norm).item() == pytest.approx(10.0 / 4)
    # the same micro-batch as half of a step of 4 sequences and 9 tokens
    half = Normaliser(num_tokens=9.0, num_seqs=4.0, max_len=4)
    assert grpo_aggregate(TOKEN_LOSS, MASK, half).item() == pytest.approx(6.0 / 4)
    assert dapo_aggregate(TOKEN_LOSS, MASK, half).item() == pytest.approx(10.0 / 9)
    assert bnpo_aggregate(TOKEN_LOSS, MASK, half).item() == pytest.approx(10.0 / 4 * 2 / 4)


def test_grpo_aggregation_ignores_rows_with_empty_masks():
    mask = MASK.clone()
    mask[1] = 0.0
    norm = Normaliser(num_tokens=3.0, num_seqs=2.0, max_len=4)
    assert grpo_aggregate(TOKEN_LOSS, mask, norm).item() == pytest.approx(2.0 / 2)


def _rollout(seed=0):
    torch.manual_seed(seed)
    weight = torch.randn(5, 6, requires_grad=True)
    feats, targets = torch.randn(6, 8, 5), torch.randint(0, 6, (6, 8))
    lengths = torch.tensor([8, 2, 5, 1, 7, 3])
    mask = (torch.arange(8) < lengths[:, None]).float()
    old = torch.log_softmax(feats @ weight.detach() + 0.3 * torch.randn(6, 8, 6), -1)
    old = old.gather(-1, targets[..., None]).squeeze(-1)
    return weight, feats, targets, mask, old, torch.randn(6)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo"])
def test_ppo_loss_grad_accumulation_1x6_equals_6x1(name):
    weight, feats, targets, mask, old, adv = _rollout()
    norm = Normaliser(num_tokens=float(mask.sum()), num_seqs=6.0, max_len=8)

    def loss(rows):
        logps = torch.log_softmax(feats[rows] @ weight, -1).gather(-1, targets[rows, :, None]).squeeze(-1)
        token_loss, _ = ppo_clip_loss(logps, old[rows], adv[rows], mask[rows], eps_low=0.2, eps_high=0.28)
        return AGGREGATIONS[name](token_loss, mask[rows], norm)

    full = loss(slice(None))
    micro = sum(loss(slice(i, i + 1)) for i in range(6))
    assert_close(micro, full)
    assert_close(torch.autograd.grad(micro, weight)[0], torch.autograd.grad(full, weight)[0])


def test_bnpo_is_per_micro_batch_and_not_split_invariant():
    torch.manual_seed(1)
    token_loss = torch.rand(4, 5)
    mask = (torch.arange(5) < torch.tensor([5, 4, 1, 1])[:, None]).float()
    norm = Normaliser(num_tokens=float(mask.sum()), num_seqs=4.0, max_len=5)
    full = bnpo_aggregate(token_loss, mask, norm)
    assert full.item() == pytest.approx(float((token_loss * mask).sum() / mask.sum()))
    halves = [bnpo_aggregate(token_loss[s], mask[s], norm) for s in (slice(0, 2), slice(2, 4))]
    means = [float((token_loss[s] * mask[s]).sum() / mask[s].sum()) for s in (slice(0, 2), slice(2, 4))]
    assert sum(halves).item() == pytest.approx(sum(means) / 2)
    assert abs(sum(halves).item() - full.item()) > 1e-3
