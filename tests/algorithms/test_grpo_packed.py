"""GRPO's padding-free micro-batches: the layout by hand, and the packed forward (each group's prompt once)
giving the padded forward's log-probs, reference log-probs, losses and gradients."""
import copy
import dataclasses

import pytest
import torch

from posttrain.algorithms.online.buffer import collate_rows, pack_rows
from posttrain.core.logprobs import token_logps
from posttrain.losses.reduce import step_normaliser

from .test_grpo import _cfg, _engine


def test_layout_by_hand():
    # rows 0, 1: one group (prompt 5 6 7); row 2: its own prompt (8 9); padded width 6
    p = pack_rows([[5, 6, 7], [5, 6, 7], [8, 9]], [[1, 2], [3], [4, 4, 4]], width=6)
    #                 packed index:  0  1  2  3  4  5  6  7  8  9
    assert p["packed_ids"].tolist() == [[5, 6, 7, 1, 2, 3, 8, 9, 4, 4, 4]]
    assert p["packed_pos"].tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 4]]   # row 1 branches at position 3
    # completion tokens: row 0's 1, 2 from packed 2 (prompt end), 3; row 1's 3 from packed 2 (the shared prompt's
    # last token, not row 0's last); row 2's from 7, 8, 9
    assert p["scored_pred"].tolist() == [2, 3, 2, 7, 8, 9]
    assert p["scored_dest"].tolist() == [3, 4, 6 + 3, 12 + 2, 12 + 3, 12 + 4]   # row * width + position


@pytest.fixture(scope="module")
def round_(tiny_model_dir, tmp_path_factory):
    """One collected round (beta > 0: reference log-probs too), packed by default."""
    cfg = _cfg(tiny_model_dir, tmp_path_factory.mktemp("packed"), beta=0.1, max_new_tokens=6)
    eng = _engine(cfg)
    assert eng.algo.packed
    eng.algo.collect(0)
    return eng


def test_packed_logps_and_reference_equal_the_padded_forward(round_):
    eng = round_
    for b in eng.algo.batches:
        assert b.packed_ids.shape[1] < int(b.attention_mask.sum())   # the prompts are computed once
        padded = token_logps(eng.model, b.input_ids, b.attention_mask, with_entropy=True)
        packed = eng.algo._logps(eng.model, b)
        for got, want in zip(packed, padded):
            torch.testing.assert_close(got * b.mask, want * b.mask, atol=1e-5, rtol=0)
        with eng.algo.ref.model() as ref:
            want_ref = token_logps(ref, b.input_ids, b.attention_mask) * b.mask
        torch.testing.assert_close(b.ref_logps, want_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_packed_loss_and_gradients_equal_the_padded(round_, loss_type):
    import posttrain.algorithms.grpo_variants as vx

    eng, algo = round_, round_.algo
    algo.policy_loss = vx.PolicyLoss(dataclasses.replace(algo.cfg, loss_type=loss_type))
    b0 = algo.batches[0]
    norm = step_normaliser(b0.num_items, float(b0.mask.sum()), b0.mask.shape[0], algo.max_len())
    results = []
    for packed in (True, False):
        algo.packed = packed
        b = copy.deepcopy(b0)
        eng.model.zero_grad()
        loss, _ = algo.loss(eng.model, b, norm)     # first pass: ratio 1 against its own log-probs
        loss2, _ = algo.loss(eng.model, b, norm)    # second pass: against the first pass's log-probs
        (loss + loss2).backward()
        results.append((loss.detach(), loss2.detach(), {n: p.grad.clone() for n, p in eng.model.named_parameters()}))
    algo.packed = True
    (l1, m1, g1), (l2, m2, g2) = results
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=0)
    torch.testing.assert_close(m1, m2, atol=1e-5, rtol=0)
    assert any(g.abs().sum() > 0 for g in g1.values())
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-4, msg=n)


def test_padding_free_off_keeps_padded_rows(tiny_model_dir, tmp_path):
    eng = _engine(_cfg(tiny_model_dir, tmp_path, padding_free="false"))
    assert not eng.algo.packed
    eng.algo.collect(0)
    assert all(b.packed_ids is None for b in eng.algo.batches)
    rows = collate_rows([[1, 2]], [[3]], [[-0.5]], torch.zeros(1), 0, "cpu")
    assert rows.packed_ids is None
