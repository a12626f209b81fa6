"""KTO, ORPO and GKD's divergences: hand-worked values."""
import math

import pytest
import torch
import torch.nn.functional as F

from posttrain.losses.distill import divergence_beta, generalized_jsd
from posttrain.losses.kto import kl_pair_indices, kto_loss, kto_reference_point
from posttrain.losses.orpo import log1mexp, orpo_loss


def test_kto_reference_point_and_losses():
    # mismatched pairs: log-ratios 0.5 and -0.1 -> mean 0.2 (a negative mean would be clamped to 0)
    z = kto_reference_point(torch.tensor([-1.0, -2.1]), torch.tensor([-1.5, -2.0]))
    assert z.item() == pytest.approx(0.2)
    assert kto_reference_point(torch.tensor([-2.0]), torch.tensor([-1.0])).item() == 0.0
    # beta 1; desirable row r = 1.2: 1 - sigmoid(1.2 - 0.2) = 1 - 0.731059 = 0.268941, weight 2 -> 0.537883
    # undesirable row r = -0.8: 1 - sigmoid(0.2 + 0.8) = 0.268941, weight 1
    policy, ref = torch.tensor([-1.0, -3.0], requires_grad=True), torch.tensor([-2.2, -2.2])
    losses, m = kto_loss(policy, ref, torch.tensor([True, False]), z, beta=1.0, desirable_weight=2.0)
    assert losses.tolist() == pytest.approx([2 * 0.268941, 0.268941], abs=1e-6)
    assert m["rewards/desirable"].item() == pytest.approx(1.2) and m["rewards/undesirable"].item() == pytest.approx(-0.8)
    losses.sum().backward()
    # d/dr (1 - sigmoid(r - z)) = -s(1 - s) = -0.196612 (x2 for the weight); undesirable: +0.196612
    assert policy.grad.tolist() == pytest.approx([-2 * 0.196612, 0.196612], abs=1e-6)
    assert kl_pair_indices(3) == [2, 0, 1]


def test_orpo_hand_values():
    # one pair; chosen tokens log-probs -0.5, -1.5 (mean a_c = -1), rejected one token -2 (a_r = -2)
    # log odds(c) = -1 - log(1 - e^-1) = -1 + 0.458675 = -0.541325
    # log odds(r) = -2 - log(1 - e^-2) = -2 + 0.145413 = -1.854587
    # difference 1.313262 -> -log sigmoid = log(1 + e^-1.313262) = log(1.268946) = 0.238183
    # NLL = -a_c = (0.5 + 1.5) / 2 tokens = 1.0;  lambda 0.5 -> 1.0 + 0.5 * 0.238183 = 1.119092
    c, cm = torch.tensor([[-0.5, -1.5]]), torch.tensor([[1.0, 1.0]])
    r, rm = torch.tensor([[-2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    loss, m = orpo_loss(c, cm, r, rm, lam=0.5, num_items=1.0)
    assert loss.item() == pytest.approx(1.119092, abs=1e-5)
    assert m["log_odds_ratio"].item() == pytest.approx(1.313262, abs=1e-5)
    assert log1mexp(torch.tensor([-1e-7, -30.0])).tolist() == pytest.approx([math.log(1e-7), -math.exp(-30)], rel=1e-4)


def test_generalized_jsd_hand_values_and_limits():
    # teacher P = (0.5, 0.5), student Q = (0.9, 0.1)
    p, q = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.9, 0.1]]).log()
    fwd = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)        # KL(P||Q) = 0.510826
    rev = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)        # KL(Q||P) = 0.368064
    assert generalized_jsd(q, p, 0.0).item() == pytest.approx(fwd, rel=1e-5)
    assert generalized_jsd(q, p, 1.0).item() == pytest.approx(rev, rel=1e-5)
    # beta 0.5: M = (0.7, 0.3); 0.5 KL(P||M) + 0.5 KL(Q||M)
    kl_pm = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)     # 0.087177
    kl_qm = 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)     # 0.116320
    assert generalized_jsd(q, p, 0.5).item() == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm, rel=1e-5)
    # identical distributions: 0 for every beta
    assert generalized_jsd(p, p, 0.3).item() == pytest.approx(0.0, abs=1e-7)
    assert [divergence_beta(d, 0.3) for d in ("forward_kl", "reverse_kl", "jsd")] == [0.0, 1.0, 0.3]
    with pytest.raises(ValueError, match="same vocabulary"):
        generalized_jsd(torch.zeros(1, 3), torch.zeros(1, 2), 0.5)


def test_reverse_kl_gradient_pulls_the_student_toward_the_teacher():
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    teacher = F.log_softmax(torch.tensor([[0.0, 2.0, 0.0]]), -1)
    before = generalized_jsd(F.log_softmax(logits, -1), teacher, 1.0)
    before.backward()
    with torch.no_grad():
        after = generalized_jsd(F.log_softmax(logits - 0.5 * logits.grad, -1), teacher, 1.0)
    assert after.item() < before.item()
