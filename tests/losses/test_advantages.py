import math

import pytest
import torch

from posttrain.losses.advantages import gae, group_advantages, leave_one_out, whiten


def close(t, expected, abs=1e-5):
    """Nested-list comparison (pytest.approx takes flat sequences only)."""
    return torch.allclose(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=abs, rtol=1e-5)


def assert_close(actual, expected, atol=1e-6, rtol=1e-5):
    """torch.allclose with shapes checked (torch.testing.assert_close costs ~0.5 s of imports)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (actual, expected)


def _gae_loop(rewards, values, mask, gamma, lam):
    """Plain Python reference: each row's masked positions, in order, are one episode."""
    advantages = [[0.0] * len(r) for r in rewards]
    returns = [[0.0] * len(r) for r in rewards]
    for i, row_mask in enumerate(mask):
        steps = [t for t, m in enumerate(row_mask) if m]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            next_adv = delta + gamma * lam * next_adv
            next_value = values[i][t]
            advantages[i][t] = next_adv
            returns[i][t] = next_adv + values[i][t]
    return advantages, returns


def test_gae_hand_value():
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.2]]), torch.ones(1, 2), gamma=0.9, lam=0.8)
    # A1 = 1 - 0.2 = 0.8;  A0 = (0 + 0.9 * 0.2 - 0.5) + 0.9 * 0.8 * 0.8 = 0.256
    assert adv[0].tolist() == pytest.approx([0.256, 0.8])
    assert ret[0].tolist() == pytest.approx([0.756, 1.0])


def test_gae_equals_a_plain_loop_on_ragged_masks():
    torch.manual_seed(0)
    rewards, values = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64)
    mask = torch.zeros(5, 9, dtype=torch.float64)
    mask[0, 3:] = 1          # prompt then completion to the end
    mask[1, 2:5] = 1         # right padding
    mask[2, [1, 2, 5, 6, 8]] = 1  # holes inside the row
    mask[3, 7] = 1           # a single token
    # row 4: empty
    adv, ret = gae(rewards, values, mask, gamma=0.95, lam=0.9)
    ref_adv, ref_ret = _gae_loop(rewards.tolist(), values.tolist(), mask.tolist(), 0.95, 0.9)
    assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))
    assert adv[mask == 0].abs().sum() == 0 and ret[4].abs().sum() == 0


def test_gae_with_gamma_lam_one_is_reward_to_go_minus_value_and_detached():
    rewards = torch.tensor([[0.0, 0.5, 0.0, 2.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4]], requires_grad=True)
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([2.5, 2.5, 2.0, 2.0])
    assert adv[0].tolist() == pytest.approx([2.4, 2.3, 1.7, 1.6])
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_shape_mismatch_names_the_tensors():
    with pytest.raises(ValueError, match="values"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), gamma=1.0, lam=1.0)


def test_group_advantages_hand_value_with_unbiased_std():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    # mean 0.25; unbiased std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])


def test_group_advantages_zero_mean_per_contiguous_group():
    torch.manual_seed(0)
    rewards = torch.randn(12)
    for scale_std in (True, False):
        adv = group_advantages(rewards, 4, scale_std=scale_std).view(3, 4)
        assert_close(adv.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
    adv = group_advantages(rewards, 4).view(3, 4)
    assert_close(adv.std(dim=1), torch.ones(3), atol=1e-4, rtol=0)
    unscaled = group_advantages(rewards, 4, scale_std=False)
    assert_close(unscaled, rewards - rewards.view(3, 4).mean(1).repeat_interleave(4))


def test_group_of_equal_rewards_gets_zero_advantage():
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0]), 3)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert adv[3:].tolist() == pytest.approx([-1 / math.sqrt(3), 2 / math.sqrt(3), -1 / math.sqrt(3)], rel=1e-5)


def test_group_estimators_refuse_bad_groups():
    for fn in (group_advantages, leave_one_out):
        with pytest.raises(ValueError, match="groups of 4"):
            fn(torch.zeros(6), 4)
        with pytest.raises(ValueError, match="group_size"):
            fn(torch.zeros(6), 1)
        with pytest.raises(ValueError, match=r"\[N\]"):
            fn(torch.zeros(2, 3), 3)


def test_leave_one_out_hand_value_and_zero_sum():
    adv = leave_one_out(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0]), 3)
    assert adv.tolist() == pytest.approx([1 - 2.5, 2 - 2.0, 3 - 1.5, 0 - 3.0, 0 - 3.0, 6 - 0.0])
    assert_close(adv.view(2, 3).sum(1), torch.zeros(2))


def test_whiten_hand_value_and_masked_moments():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = whiten(x, mask)  # mean 2, unbiased var 2
    assert out[0].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0], rel=1e-6)
    kept = whiten(x, mask, shift_mean=False)
    assert kept[0].tolist() == pytest.approx([2 - 1 / math.sqrt(2), 2 + 1 / math.sqrt(2), 0.0], rel=1e-6)


def test_whiten_random_ragged_gives_zero_mean_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3 + 5
    mask = (torch.arange(6) < torch.tensor([6, 2, 4, 1])[:, None]).float()
    vals = whiten(x, mask)[mask.bool()]
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert vals.var(unbiased=True).item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, torch.zeros_like(mask))


def test_whiten_over_processes_equals_whitening_all_rows_together():
    """Two 'processes' (threads) each holding half the rows, summing through a barrier as all_reduce does,
    whiten exactly as one holding every row."""
    import threading

    torch.manual_seed(1)
    x = torch.randn(6, 5) * 2 + 3
    mask = (torch.arange(5) < torch.tensor([5, 2, 4, 1, 3, 5])[:, None]).float()
    barrier, slots = threading.Barrier(2), [None, None]

    def reduce_for(rank):
        def reduce(values):
            slots[rank] = list(values)
            barrier.wait()
            total = [a + b for a, b in zip(*slots)]
            barrier.wait()
            return total
        return reduce

    out = [None, None]
    threads = [threading.Thread(target=lambda r=r: out.__setitem__(
        r, whiten(x[3 * r:3 * r + 3], mask[3 * r:3 * r + 3], reduce=reduce_for(r)))) for r in (0, 1)]
    [t.start() for t in threads], [t.join() for t in threads]
    assert_close(torch.cat(out), whiten(x, mask), rtol=1e-6, atol=1e-6)
    single = whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]]), reduce=lambda v: v)
    assert single[0].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0], rel=1e-6)  # as by hand
    lone = whiten(x[:1], (torch.arange(5) < 1).float()[None], reduce=lambda v: v)  # 1 element in all: unchanged
    assert lone[0].tolist() == pytest.approx([x[0, 0].item(), 0, 0, 0, 0])


def test_reinforce_pp_returns_to_go_kl_in_reward_and_global_normalisation():
    from posttrain.losses.advantages import reinforce_pp

    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    # no KL: returns are the reward on every token: G = [1, 1, 0, 0] over the 4 masked tokens;
    # mean 0.5, unbiased var (4 * 0.25) / 3 = 1/3 -> A = +-0.5 / 0.57735 = +-0.866025
    adv = reinforce_pp(torch.tensor([1.0, 0.0]), mask)
    assert close(adv, [[0, 0.866025, 0.866025, 0], [0, 0, -0.866025, -0.866025]], abs=1e-5)
    # beta 1, k1 KL 0.5 on both tokens of row 0: token rewards -0.5, 1 - 0.5 = 0.5 -> returns-to-go 0, 0.5;
    # G = [0, 0.5, 0, 0], mean 0.125, var (3 * 0.015625 + 0.140625) / 3 = 0.0625, std 0.25
    kl = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv = reinforce_pp(torch.tensor([1.0, 0.0]), mask, kl, beta=1.0)
    assert close(adv, [[0, -0.5, 1.5, 0], [0, 0, -0.5, -0.5]], abs=1e-5)


def test_reinforce_pp_baseline_subtracts_the_group_mean_first():
    from posttrain.losses.advantages import reinforce_pp

    # groups of 2: rewards (3, 1) -> (1, -1); (5, 5) -> (0, 0). One token per row: G = [1, -1, 0, 0],
    # mean 0, unbiased var 2/3, std 0.816497 -> [1.224745, -1.224745, 0, 0]
    mask = torch.ones(4, 1)
    adv = reinforce_pp(torch.tensor([3.0, 1.0, 5.0, 5.0]), mask, group_size=2)
    assert adv[:, 0].tolist() == pytest.approx([1.224745, -1.224745, 0.0, 0.0], abs=1e-5)
