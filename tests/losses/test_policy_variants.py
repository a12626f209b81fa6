"""GSPO's sequence ratio, the clip on either level, CISPO and SAPO: hand-worked values."""
import math

import pytest
import torch

from posttrain.losses.policy import AGGREGATIONS, ppo_clip_loss
from posttrain.losses.policy_variants import (
    LOSS_TYPES,
    cispo_surrogate,
    clip_surrogate,
    log_importance_weights,
    sapo_surrogate,
)
from posttrain.losses.reduce import Normaliser


def close(t, expected, abs=1e-5):
    """Nested-list comparison (pytest.approx takes flat sequences only)."""
    return torch.allclose(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=abs, rtol=1e-5)


def _inputs(log_ratios, mask):
    logps = torch.tensor(log_ratios, requires_grad=True)
    return logps, torch.zeros_like(logps), torch.tensor(mask)


def test_sequence_ratio_is_the_length_normalised_log_ratio():
    # row 0: log-ratios 0.2, 0.4 on its two tokens (the third is padding holding 9.0): mean 0.3
    # row 1: one token with log-ratio -0.6
    logps, old, mask = _inputs([[0.2, 0.4, 9.0], [-0.6, 0.0, 0.0]], [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    seq = log_importance_weights(logps, old, mask, "sequence")
    assert seq.shape == (2, 1)
    assert seq[:, 0].tolist() == pytest.approx([0.3, -0.6])
    tok = log_importance_weights(logps, old, mask, "token")
    assert close(tok, [[0.2, 0.4, 0.0], [-0.6, 0.0, 0.0]])  # padding zeroed
    with pytest.raises(ValueError, match="importance_sampling_level"):
        log_importance_weights(logps, old, mask, "sentence")


def test_gspo_clips_the_whole_sequence_at_once():
    # log-ratios 0.1 and 0.5 -> s = exp(0.3) = 1.3499 > 1 + 0.28, A = +1: clipped for BOTH tokens,
    # loss -1.28 on each token, zero gradient. Token level would clip only the second token
    # (exp(0.1) = 1.105 is inside the range).
    logps, old, mask = _inputs([[0.1, 0.5]], [[1.0, 1.0]])
    loss, m = clip_surrogate(logps, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.28, level="sequence")
    assert close(loss, [[-1.28, -1.28]])
    assert m["clip_frac"].item() == 1.0
    loss.sum().backward()
    assert logps.grad.tolist() == [[0.0, 0.0]]
    # inside the range: s = exp(0.05) with log-ratios 0.0, 0.1; the loss per token is -s A and
    # d(-s)/d logp_t = -s / |y| = -exp(0.05) / 2 on each token (the length normalisation)
    logps, old, mask = _inputs([[0.0, 0.1]], [[1.0, 1.0]])
    loss, _ = clip_surrogate(logps, old, torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.28, level="sequence")
    loss.sum().backward()
    assert close(logps.grad, [[-math.exp(0.05), -math.exp(0.05)]])  # 2 tokens x 1/2 each


def test_token_level_clip_equals_ppo_clip_loss():
    torch.manual_seed(0)
    logps, old = torch.randn(3, 5) * 0.3, torch.randn(3, 5) * 0.3
    mask = (torch.rand(3, 5) > 0.3).float()
    adv = torch.randn(3)
    a, ma = clip_surrogate(logps, old, adv, mask, eps_low=0.2, eps_high=0.28)
    b, mb = ppo_clip_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert torch.allclose(a, b) and torch.allclose(ma["clip_frac"], mb["clip_frac"])


def test_cispo_caps_the_weight_but_keeps_every_gradient():
    # ratios e^0 = 1 and e^1 = 2.718 with cap 2.0, A = 2:
    #   loss = -min(w, 2) * A * logp = [-(1)(2)(0), -(2)(2)(1)] = [0, -4]
    #   gradient = -min(w, 2) * A = [-2, -4]: the capped token still learns (PPO would give it 0)
    logps, old, mask = _inputs([[0.0, 1.0]], [[1.0, 1.0]])
    loss, m = cispo_surrogate(logps, old, torch.tensor([2.0]), mask, max_weight=2.0)
    assert close(loss, [[0.0, -4.0]])
    loss.sum().backward()
    assert close(logps.grad, [[-2.0, -4.0]])
    assert m["clip_frac"].item() == 0.5


def test_sapo_gate_values_and_on_policy_gradient():
    # w = 1 (log-ratio 0), A = +1, tau_pos = 1: f = sigmoid(0) * 4 / 1 = 2, loss = -2;
    #   d f / d w = 4 sigmoid(0)(1 - sigmoid(0)) = 1, so d loss / d logp = -1 * w * A = -1 (= plain PG)
    # w = e^1, A = -1, tau_neg = 2: f = sigmoid(2 (e - 1)) * 4 / 2 = 2 * sigmoid(3.43656) = 1.93858,
    #   loss = -f * A = +1.93858
    logps, old, mask = _inputs([[0.0, 1.0]], [[1.0, 0.0]])
    loss, _ = sapo_surrogate(logps, old, torch.tensor([1.0]), mask, tau_pos=1.0, tau_neg=2.0)
    loss.sum().backward()
    assert close(loss, [[-2.0, 0.0]])
    assert close(logps.grad, [[-1.0, 0.0]])
    logps, old, mask = _inputs([[1.0]], [[1.0]])
    loss, _ = sapo_surrogate(logps, old, torch.tensor([-1.0]), mask, tau_pos=1.0, tau_neg=2.0)
    s = 1.0 / (1.0 + math.exp(-2.0 * (math.e - 1.0)))
    assert loss.item() == pytest.approx(2.0 * s)


def test_loss_types_pair_surrogates_with_their_aggregation():
    assert LOSS_TYPES["cispo"] == ("cispo", AGGREGATIONS["dapo"])
    assert LOSS_TYPES["sapo"] == ("sapo", AGGREGATIONS["grpo"])
    assert {k for k, (s, _) in LOSS_TYPES.items() if s == "clip"} == set(AGGREGATIONS)
    # sequence level with the grpo aggregation = GSPO's objective: mean over sequences of the clipped term
    logps, old, mask = _inputs([[0.1, 0.1, 0.0], [0.0, 0.0, 0.0]], [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, _ = clip_surrogate(logps, old, torch.tensor([1.0, -1.0]), mask, eps_low=0.2, eps_high=0.28,
                             level="sequence")
    total = AGGREGATIONS["grpo"](loss, mask, Normaliser(5.0, 2.0, 3))
    assert total.item() == pytest.approx((-math.exp(0.1) + 1.0) / 2)  # (-1.10517 * 1 + -(1) * -1) / 2
