import math

import pytest
import torch

from posttrain.losses.preference import (
    DPO_LOSSES,
    bind_dpo_loss,
    bradley_terry_loss,
    ranking_bradley_terry_loss,
    ranking_pairs,
    hinge_dpo,
    ipo,
    robust_dpo,
    sigmoid_dpo,
    simpo,
)


def assert_close(actual, expected, atol=1e-6, rtol=1e-5):
    """torch.allclose with shapes checked (torch.testing.assert_close costs ~0.5 s of imports)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual, expected)


def softplus(x: float) -> float:  # -log sigmoid(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


# one pair with h = (-1 - -1.5) - (-2 - -1.5) = 0.5 + 0.5 = 1
PAIR = dict(policy_chosen_logps=torch.tensor([-1.0]), policy_rejected_logps=torch.tensor([-2.0]),
            ref_chosen_logps=torch.tensor([-1.5]), ref_rejected_logps=torch.tensor([-1.5]))


def _call(fn, **kwargs):
    args = {**PAIR, **kwargs}
    return fn(args.pop("policy_chosen_logps"), args.pop("policy_rejected_logps"),
              args.pop("ref_chosen_logps"), args.pop("ref_rejected_logps"), **args)


# ---------------------------------------------------------------- Bradley-Terry

def test_bradley_terry_hand_value_and_metrics():
    loss, metrics = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), num_items=2.0)
    assert loss.item() == pytest.approx((softplus(-1.0) + math.log(2.0)) / 2, rel=1e-6)
    assert metrics["accuracy"].item() == 0.5  # a tie is not counted as correct
    assert metrics["margin_mean"].item() == 0.5
    assert metrics["chosen_mean"].item() == 0.5 and metrics["rejected_mean"].item() == 0.0


def test_bradley_terry_margin_weight_and_centering_hand_value():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, -2.0])
    loss, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]),
                                 weight=torch.tensor([2.0, 1.0]), num_items=3.0,
                                 center_rewards_coefficient=0.01)
    main = (2 * softplus(-(1.0 - 0.5)) + 1 * softplus(-2.0)) / 3.0
    centering = (2 * (1.0 + 0.0) ** 2 + 1 * (0.0 - 2.0) ** 2) / 3.0
    assert loss.item() == pytest.approx(main + 0.01 * centering, rel=1e-6)


def test_ranking_pairs_are_every_ordered_pair_within_each_group():
    better, worse = ranking_pairs([3, 2])
    assert list(zip(better.tolist(), worse.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]


def test_ranking_bradley_terry_hand_value():
    # K=3 scores [2, 1, 0], best first: pairs (2,1), (2,0), (1,0) -> differences [1, 2, 1];
    # -logsigmoid(1) = log(1 + e^-1) = 0.313262, -logsigmoid(2) = 0.126928;
    # weight 1/C(3,2) = 1/3 each, one group -> (0.313262 + 0.126928 + 0.313262) / 3 = 0.251150
    scores = torch.tensor([2.0, 1.0, 0.0], requires_grad=True)
    better, worse = ranking_pairs([3])
    loss, m = ranking_bradley_terry_loss(scores, better, worse, weight=torch.full((3,), 1 / 3), num_items=1.0)
    assert loss.item() == pytest.approx(0.251150, abs=1e-6)
    assert m["accuracy"].item() == 1.0 and m["margin_mean"].item() == pytest.approx(4 / 3)
    loss.backward()
    # d/ds of -logsigmoid(s_i - s_j) is -sigmoid(-(s_i - s_j)) for the better one: s(-1) = 0.268941,
    # s(-2) = 0.119203; score 0: -(0.268941 + 0.119203)/3, score 1: (0.268941 - 0.268941)/3 = 0,
    # score 2: (0.119203 + 0.268941)/3
    assert scores.grad.tolist() == pytest.approx([-0.129381, 0.0, 0.129381], abs=1e-6)


def test_bradley_terry_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([0.3], requires_grad=True)
    rejected = torch.tensor([0.1], requires_grad=True)
    bradley_terry_loss(chosen, rejected, num_items=1.0)[0].backward()
    s = 1 / (1 + math.exp(0.2))  # d/dr_c [-log sigmoid(r_c - r_r)] = -sigmoid(-(r_c - r_r))
    assert chosen.grad.item() == pytest.approx(-s, rel=1e-6)
    assert rejected.grad.item() == pytest.approx(s, rel=1e-6)


def test_bradley_terry_grad_accumulation_with_centering():
    torch.manual_seed(0)
    chosen = torch.randn(6, requires_grad=True)
    rejected = torch.randn(6, requires_grad=True)
    weight = torch.tensor([1.0, 0.5, 0.5, 1.0, 2.0, 1.0])
    kw = dict(num_items=float(weight.sum()), center_rewards_coefficient=0.1)
    full = bradley_terry_loss(chosen, rejected, weight=weight, **kw)[0]
    micro = sum(bradley_terry_loss(chosen[s], rejected[s], weight=weight[s], **kw)[0]
                for s in (slice(0, 1), slice(1, 4), slice(4, 6)))
    g_full = torch.autograd.grad(full, (chosen, rejected))
    g_micro = torch.autograd.grad(micro, (chosen, rejected))
    assert_close(micro, full)
    for a, b in zip(g_micro, g_full):
        assert_close(a, b)


def test_bradley_terry_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_items"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), num_items=0.0)
    with pytest.raises(ValueError, match="rejected_rewards"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3), num_items=1.0)


# ---------------------------------------------------------------- DPO family

@pytest.mark.parametrize("name", ["sigmoid", "robust"])
def test_dpo_is_log_two_when_policy_equals_reference(name):
    logps = torch.tensor([-3.0, -10.0, -0.5])
    losses, chosen_r, rejected_r = DPO_LOSSES[name][0](logps, logps - 1, logps, logps - 1, beta=0.1)
    assert_close(losses, torch.full((3,), math.log(2.0)))
    assert chosen_r.tolist() == [0.0, 0.0, 0.0] and rejected_r.tolist() == [0.0, 0.0, 0.0]


def test_sigmoid_hand_value_rewards_and_gradient_direction():
    policy_chosen = torch.tensor([-1.0], requires_grad=True)
    losses, chosen_r, rejected_r = _call(sigmoid_dpo, policy_chosen_logps=policy_chosen, beta=0.1)
    assert losses.item() == pytest.approx(softplus(-0.1), rel=1e-6)
    assert chosen_r.item() == pytest.approx(0.05) and rejected_r.item() == pytest.approx(-0.05)
    assert not chosen_r.requires_grad and not rejected_r.requires_grad
    losses.sum().backward()
    # d/dlogp_c [-log sigmoid(beta h)] = -beta * sigmoid(-beta h) < 0: descent raises the chosen log-prob
    assert policy_chosen.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.1)), rel=1e-6)


def test_sigmoid_with_label_smoothing_is_conservative_dpo():
    losses, _, _ = _call(sigmoid_dpo, beta=0.1, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.8 * softplus(-0.1) + 0.2 * softplus(0.1), rel=1e-6)


def test_robust_hand_value_and_unbiasedness_under_label_flips():
    eps, beta = 0.2, 0.1
    losses, _, _ = _call(robust_dpo, beta=beta, label_smoothing=eps)
    assert losses.item() == pytest.approx((0.8 * softplus(-0.1) - 0.2 * softplus(0.1)) / 0.6, rel=1e-6)
    # flipped pair (chosen and rejected swapped): the expectation over flips is the clean DPO loss
    flipped, _, _ = robust_dpo(PAIR["policy_rejected_logps"], PAIR["policy_chosen_logps"],
                               PAIR["ref_rejected_logps"], PAIR["ref_chosen_logps"],
                               beta=beta, label_smoothing=eps)
    clean, _, _ = _call(sigmoid_dpo, beta=beta)
    assert ((1 - eps) * losses + eps * flipped).item() == pytest.approx(clean.item(), rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        _call(robust_dpo, beta=beta, label_smoothing=0.5)


def test_ipo_hand_values_summed_and_length_averaged():
    losses, chosen_r, rejected_r = _call(ipo, beta=0.1)
    assert losses.item() == pytest.approx((1.0 - 5.0) ** 2)
    assert chosen_r.item() == pytest.approx(0.05)
    losses, chosen_r, rejected_r = _call(ipo, beta=0.1, chosen_lengths=torch.tensor([2]),
                                         rejected_lengths=torch.tensor([4]))
    h = 0.5 / 2 - (-0.5) / 4
    assert losses.item() == pytest.approx((h - 5.0) ** 2, rel=1e-6)
    # the rewards stay beta * the SUMMED log-ratios (TRL logs these for IPO too): 0.1 * 0.5 and 0.1 * -0.5
    assert chosen_r.item() == pytest.approx(0.05) and rejected_r.item() == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="rejected_lengths"):
        _call(ipo, beta=0.1, chosen_lengths=torch.tensor([2]))


def test_hinge_hand_value_and_zero_gradient_beyond_the_margin():
    losses, _, _ = _call(hinge_dpo, beta=0.1)
    assert losses.item() == pytest.approx(0.9)
    policy_chosen = torch.tensor([-1.0], requires_grad=True)
    losses, _, _ = _call(hinge_dpo, policy_chosen_logps=policy_chosen, beta=2.0)  # 1 - 2 * 1 < 0
    losses.sum().backward()
    assert losses.item() == 0.0 and policy_chosen.grad.item() == 0.0


def test_simpo_hand_value_is_reference_free():
    kw = dict(beta=2.0, simpo_gamma=0.5, chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([3]))
    losses, chosen_r, rejected_r = simpo(torch.tensor([-4.0]), torch.tensor([-9.0]), **kw)
    # beta * (-4/2 - -9/3) - gamma = 2 * 1 - 0.5 = 1.5
    assert losses.item() == pytest.approx(softplus(-1.5), rel=1e-6)
    assert chosen_r.item() == -4.0 and rejected_r.item() == -6.0
    bound, needs_ref = bind_dpo_loss("simpo", beta=2.0, simpo_gamma=0.5, label_smoothing=0.0)
    with_ref, _, _ = bound(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([5.0]), torch.tensor([-5.0]),
                           torch.tensor([2]), torch.tensor([3]))
    assert not needs_ref and with_ref.item() == losses.item()   # the bound form ignores a reference
    with pytest.raises(ValueError, match="chosen_lengths"):
        simpo(torch.tensor([-4.0]), torch.tensor([-9.0]), beta=2.0, chosen_lengths=None,
              rejected_lengths=torch.tensor([3]))


def test_reference_based_losses_refuse_a_missing_reference():
    for name in ("sigmoid", "ipo", "hinge", "robust"):
        with pytest.raises(ValueError, match=f"'{name}'.*ref_chosen_logps"):
            _call(DPO_LOSSES[name][0], ref_chosen_logps=None, beta=0.1)


def test_label_smoothing_is_refused_where_undefined():
    for name in ("ipo", "hinge"):   # refused when the variant is bound, i.e. when the trainer is built
        with pytest.raises(ValueError, match=f"label_smoothing=0.1 is not defined for DPO loss '{name}'"):
            bind_dpo_loss(name, beta=0.1, label_smoothing=0.1)
    bind_dpo_loss("ipo", beta=0.1, label_smoothing=0.0, simpo_gamma=0.5)   # settings it does not take, left out
    with pytest.raises(ValueError, match="label_smoothing"):
        _call(sigmoid_dpo, beta=0.1, label_smoothing=0.7)


@pytest.mark.parametrize("name", sorted(DPO_LOSSES))
def test_every_variant_returns_per_pair_shapes(name):
    torch.manual_seed(0)
    logps = [torch.randn(5) - 3 for _ in range(4)]
    lengths = dict(chosen_lengths=torch.full((5,), 3), rejected_lengths=torch.full((5,), 4))
    fn, _ = bind_dpo_loss(name, beta=0.1)
    losses, chosen_r, rejected_r = fn(*logps, lengths["chosen_lengths"], lengths["rejected_lengths"])
    assert losses.shape == chosen_r.shape == rejected_r.shape == (5,)
    assert torch.isfinite(losses).all()


def test_a_new_variant_is_one_function_and_one_row(monkeypatch):
    def margin_only(policy_chosen_logps, policy_rejected_logps, *, beta, simpo_gamma=0.5):
        z = beta * (policy_chosen_logps - policy_rejected_logps)
        return (simpo_gamma - z).clamp(min=0), z.detach(), -z.detach()

    monkeypatch.setitem(DPO_LOSSES, "margin", (margin_only, False))
    fn, needs_ref = bind_dpo_loss("margin", beta=1.0, simpo_gamma=2.0, label_smoothing=0.0)
    losses, _, _ = fn(torch.tensor([-1.0]), torch.tensor([-2.0]), None, None, torch.tensor([3]), torch.tensor([3]))
    assert not needs_ref and losses.item() == pytest.approx(1.0)   # 2 - 1 * (-1 - -2)
