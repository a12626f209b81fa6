"""Padding-free pairs (the DPO / RM default) compute exactly what right-padded pairs compute: the same
losses, metrics and gradients (within 1e-5), the head at scored positions only, and the lazily cached
reference log-probs equal the ones a reference forward gives."""
import pytest
import torch

from posttrain.algorithms.dpo import DPO
from posttrain.algorithms.reward_model import make_engine
from posttrain.core.engine import Engine
from posttrain.core.logprobs import hidden_states, sequence_logp_sums, token_logps
from posttrain.data.packed_pairs import pack_preference_collate
from posttrain.data.preference import preference_collate

from .test_dpo import dpo_cfg, write_pref_jsonl
from .test_reward_model import rm_cfg


def _perturb(model, seed=3):
    """Move the policy away from its reference (same noise for every engine built from the same model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))


def _step(eng):
    """(metrics, grads) of one accumulated step on step 0's micro-batches."""
    eng.model.zero_grad(set_to_none=True)
    m = eng._backward_step(eng.algo.micro_batches(0))
    return m, {n: p.grad.clone() for n, p in eng.model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    (ma, ga), (mb, gb) = a, b
    assert ma.keys() == mb.keys() and ga.keys() == gb.keys() and ga
    for k in ma:
        assert ma[k] == pytest.approx(mb[k], abs=1e-5), k
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=0)


def test_packed_collate_holds_the_padded_tokens_back_to_back(tiny_model_dir, tmp_path):
    cfg = dpo_cfg(tiny_model_dir, tmp_path, max_steps=1, **{"data.train": write_pref_jsonl(tmp_path / "r.jsonl", n=6,
                                                                                            ranking_every=3)})
    eng = Engine(cfg, DPO(cfg))
    ex = eng.algo.examples[:3]
    pad, packed = preference_collate(ex, 0), pack_preference_collate(ex, 0)
    assert packed.packed and packed.attention_mask is None and packed.num_pairs == pad.num_pairs == 1 + 3 + 1
    real = pad.attention_mask.bool()
    assert torch.equal(packed.input_ids[0], pad.input_ids[real]) and torch.equal(packed.mask[0], pad.mask[real])
    assert torch.equal(packed.seq_ids[0], torch.nonzero(real)[:, 0])           # row of each real token
    assert torch.equal(packed.position_ids[0], torch.nonzero(real)[:, 1])      # restarts at 0 per sequence
    assert torch.equal(packed.input_ids[0, packed.last_index], pad.input_ids[pad.last_positions()])


def test_head_at_scored_positions_equals_full_token_logps(tiny_model_dir, tmp_path):
    cfg = dpo_cfg(tiny_model_dir, tmp_path, max_steps=1, padding_free=False)
    eng = Engine(cfg, DPO(cfg))
    b = preference_collate(eng.algo.examples[:4], eng.tokenizer.pad_token_id)
    with torch.no_grad():
        full = (token_logps(eng.model, b.input_ids, b.attention_mask) * b.mask).sum(-1)
        for chunk in (0, 7):  # one chunk, and many (the chunked path)
            hid = hidden_states(eng.model, b.input_ids, b.attention_mask)
            got = sequence_logp_sums(eng.model, hid, b.input_ids, b.mask, b.row_ids(), b.num_sequences,
                                     chunk_size=chunk)
            torch.testing.assert_close(got, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss", ["sigmoid", "simpo"])
def test_packed_dpo_equals_padded_losses_and_gradients(tiny_model_dir, tmp_path, loss):
    def run(padding_free, share_prompt=False):
        cfg = dpo_cfg(tiny_model_dir, tmp_path, loss=loss, rpo_alpha=0.3, padding_free=padding_free,
                      share_prompt=share_prompt,
                      **{"data.train": write_pref_jsonl(tmp_path / "r.jsonl", n=16, ranking_every=4)})
        eng = Engine(cfg, DPO(cfg))
        batch = eng.algo.micro_batches(0)[0]
        assert batch.packed == padding_free and (batch.pred_index is not None) == share_prompt
        _perturb(eng.model)
        return _step(eng)
    padded = run(False)
    assert padded[0]["rewards/margin"] != 0.0
    _assert_same(run(True), padded)
    _assert_same(run(True, share_prompt=True), padded)


def test_packed_reward_model_equals_padded_losses_and_gradients(tiny_model_dir, tmp_path):
    def run(padding_free, share_prompt=False):
        eng = make_engine(rm_cfg(tiny_model_dir, tmp_path, padding_free=padding_free, share_prompt=share_prompt,
                                 center_rewards_coefficient=0.1, score_once=False))  # the pair expansion
        assert eng.algo.micro_batches(0)[0].packed == padding_free
        return _step(eng)
    padded = run(False)
    assert "score.weight" in padded[1]
    _assert_same(run(True), padded)
    _assert_same(run(True, share_prompt=True), padded)


def test_shared_prompt_layout_by_hand():
    from posttrain.data.packed_pairs import pack_shared_prompt_collate
    from posttrain.data.preference import PreferenceExample, Response

    # prompt [5, 6, 7], chosen response [8, 9], rejected response [4]; then a pair sharing nothing
    ex = PreferenceExample([Response([5, 6, 7, 8, 9], [0, 0, 0, 1, 1]), Response([5, 6, 7, 4], [0, 0, 0, 1])], [(0, 1)])
    other = PreferenceExample([Response([1, 2], [0, 1]), Response([3, 2], [0, 1])], [(0, 1)])
    b = pack_shared_prompt_collate([ex, other])
    assert b.input_ids[0].tolist() == [5, 6, 7, 8, 9, 4, 1, 2, 3, 2]
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 0, 1, 0, 1]   # rejected tail continues the prompt
    assert b.seq_ids[0].tolist() == [0, 0, 0, 0, 0, 2, 1, 1, 3, 3]        # chosen k = k, rejected k = P + k
    assert b.pred_index[0, 5] == 2                                         # token 4 is predicted from prompt's 7
    assert b.last_index.tolist() == [4, 7, 5, 9] and b.num_tokens == 5 + 4 + 2 + 2


def test_reference_logps_are_cached_on_examples_and_the_copy_freed(tiny_model_dir, tmp_path):
    small = write_pref_jsonl(tmp_path / "s.jsonl", n=6, ranking_every=3)
    cfg = dpo_cfg(tiny_model_dir, tmp_path, batch_size=4, **{"data.train": small})
    eng = Engine(cfg, DPO(cfg))
    _perturb(eng.model)                                      # the policy is no longer the reference
    first = eng.algo.micro_batches(0)[0]                     # 4 of the 6 rows: reference run now
    assert eng.algo.ref is not None and first.ref_chosen_logps is not None
    again = eng.algo.batch([eng.algo.examples[i] for i in eng.algo.sampler.micro_indices(0)[0]])
    torch.testing.assert_close(again.ref_chosen_logps, first.ref_chosen_logps, atol=0, rtol=0)  # from the cache
    with torch.no_grad(), eng.algo.ref.model() as ref:
        lp = (token_logps(ref, *_padded(eng, 0)[:2]) * _padded(eng, 0)[2]).sum(-1)
    p = first.num_pairs
    torch.testing.assert_close(first.ref_chosen_logps, lp[:p], atol=1e-5, rtol=1e-6)  # sums of ~100 terms
    torch.testing.assert_close(first.ref_rejected_logps, lp[p:], atol=1e-5, rtol=1e-6)
    eng.algo.micro_batches(1)                                # the rest of the rows (epoch 0 ends at step 1)
    assert eng.algo.ref is None                              # every row cached: the copy is gone
    assert all(ex.ref_logps is not None for ex in eng.algo.examples)


def _padded(eng, step):
    b = preference_collate([eng.algo.examples[i] for i in eng.algo.sampler.micro_indices(step)[0]],
                           eng.tokenizer.pad_token_id)
    return b.input_ids, b.attention_mask, b.mask
