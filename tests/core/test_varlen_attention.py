import torch
from transformers import AutoModelForCausalLM

from posttrain.core.varlen_attention import NAME, segment_bounds, use_varlen


def test_segment_bounds():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert segment_bounds(pos) == [(0, 3), (3, 5), (5, 6), (6, 10)]


def test_packed_varlen_equals_each_row_alone_and_gradients(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    assert use_varlen(model) and model.config._attn_implementation == NAME
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, model.config.vocab_size, (n,), generator=g) for n in (7, 3, 12)]
    ids = torch.cat(rows)[None]
    pos = torch.cat([torch.arange(len(r)) for r in rows])[None]
    packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
    packed.sum().backward()
    start = 0
    for r in rows:
        alone = model(input_ids=r[None], use_cache=False).logits[0]
        torch.testing.assert_close(packed[start:start + len(r)], alone, atol=1e-5, rtol=1e-5)
        start += len(r)
    assert all(p.grad is not None for p in model.parameters())


def test_padded_batches_and_generation_unchanged(tiny_model_dir):
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    use_varlen(model)
    ids = torch.randint(4, 100, (2, 9))
    am = torch.ones_like(ids)
    am[1, :3] = 0
    torch.testing.assert_close(model(input_ids=ids, attention_mask=am).logits, ref(input_ids=ids, attention_mask=am).logits)
    out_a = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=5, do_sample=False)
    out_b = ref.generate(input_ids=ids, attention_mask=am, max_new_tokens=5, do_sample=False)
    assert torch.equal(out_a, out_b)
