import pytest
import torch

from posttrain.data.chat import Encoded, encode_sft_row
from posttrain.data.collators import pack_collate, pack_into_bins, pad_collate

ROWS = [
    {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}]},
    {"prompt": "the code", "completion": " looks great", "rejected": " is a bug"},
    {"text": "print total in range of x"},
]


@pytest.fixture(scope="module")
def examples(tok):
    return [e for row in ROWS for e in encode_sft_row(row, tok, max_length=128)]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=request.param).eval()


def alone(model, e: Encoded) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([e.input_ids])).logits[0]


def test_pad_collate(examples, tok):
    b = pad_collate(examples, tok.pad_token_id)
    lengths = [len(e.input_ids) for e in examples]
    assert b.input_ids.shape == (4, max(lengths)) and b.num_rows == 4
    assert b.attention_mask.sum(1).tolist() == lengths
    assert b.position_ids[1].tolist() == list(range(max(lengths)))
    for i, e in enumerate(examples):
        n = lengths[i]
        assert b.input_ids[i, :n].tolist() == e.input_ids and (b.input_ids[i, n:] == tok.pad_token_id).all()
        target, other = (b.neg_mask, b.mask) if e.negative else (b.mask, b.neg_mask)
        assert target[i, :n].tolist() == [float(m) for m in e.mask] and other[i].sum() == 0
        assert target[i, n:].sum() == 0
    assert [e.negative for e in examples] == [False, False, True, False]
    assert b.mask.dtype == b.neg_mask.dtype == torch.float32
    assert b.num_items == sum(sum(e.mask) for e in examples)


def test_pack_collate_restarts_positions(examples):
    b = pack_collate(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert b.input_ids.shape == (1, sum(lengths)) and b.attention_mask is None
    assert b.position_ids[0].tolist() == [p for n in lengths for p in range(n)]
    assert b.input_ids[0].tolist() == [t for e in examples for t in e.input_ids]
    assert b.mask[0].tolist() == [float(m) * (not e.negative) for e in examples for m in e.mask]
    assert b.neg_mask[0].tolist() == [float(m) * e.negative for e in examples for m in e.mask]
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    assert (b.mask[0, starts] == 0).all() and (b.neg_mask[0, starts] == 0).all()  # no loss across a seam


def test_transformers_detects_the_packed_sequences(examples):
    from transformers.masking_utils import find_packed_sequence_indices

    b = pack_collate(examples)
    ids = find_packed_sequence_indices(b.position_ids)
    assert ids[0].tolist() == [i for i, e in enumerate(examples) for _ in e.input_ids]


def test_packed_logits_equal_each_sequence_alone(model, examples):
    b = pack_collate(examples)
    with torch.no_grad():
        packed = model(b.input_ids, position_ids=b.position_ids, use_cache=False).logits[0]
    start = 0
    for e in examples:
        n = len(e.input_ids)
        torch.testing.assert_close(packed[start:start + n], alone(model, e), atol=1e-5, rtol=0)
        start += n


def test_packing_leaks_across_sequences_when_a_cache_is_built(model, examples):
    """Why the trainer must pass use_cache=False: with the config default a DynamicCache is created and
    transformers skips packed-sequence detection, so the second sequence attends to the first."""
    assert model.config.use_cache
    b = pack_collate(examples[:2])
    with torch.no_grad():
        leaky = model(b.input_ids, position_ids=b.position_ids).logits[0]
    n = len(examples[0].input_ids)
    assert (leaky[n:] - alone(model, examples[1])).abs().max() > 1e-3


def test_padded_logits_equal_each_sequence_alone(model, examples):
    b = pad_collate(examples, 0)
    with torch.no_grad():
        padded = model(b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
    for i, e in enumerate(examples):
        torch.testing.assert_close(padded[i, :len(e.input_ids)], alone(model, e), atol=1e-5, rtol=0)


def test_pack_into_bins():
    lengths = [5, 9, 3, 7, 1, 4, 10]
    bins = pack_into_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 39 tokens need >= 4 packs of 10
    assert bins == pack_into_bins(lengths, 10)
    assert bins[0] == [6] and [1, 4] in bins
    assert pack_into_bins([], 8) == []
    with pytest.raises(ValueError, match="example 1 has 12 tokens, more than max_tokens=10"):
        pack_into_bins([3, 12], 10)


def test_collators_refuse_empty():
    with pytest.raises(ValueError):
        pad_collate([], 0)
    with pytest.raises(ValueError):
        pack_collate([])
