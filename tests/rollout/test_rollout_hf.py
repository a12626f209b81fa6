"""HFBackend on the tiny random Llama: contract shapes, sampling semantics and exact log-probs."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.rollout import SamplingParams, make_backend
from posttrain.rollout.hf import HFBackend, filter_top_k_top_p, sample_next


def load(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir)


def chat(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def prompts(tiny):
    _, tok = tiny
    return [chat(tok, "What is 12 + 30?"), "the code", chat(tok, "review this line: for x in range(10): print(x)")]


def eos_biased(model_dir, bias=4.6):
    """The tiny model with an lm_head bias that makes EOS likely (~1 in 6 tokens), to exercise stopping."""
    model, tok = load(model_dir)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    head.bias.data[tok.eos_token_id] = bias
    model.lm_head = head
    return model, tok


def fresh_logps(model, prompt_ids, completion_ids, temperature=1.0):
    """log_softmax(logits / T) of each completion token from one unpadded forward pass."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    lps = torch.log_softmax(logits / temperature, dim=-1)
    return lps.gather(1, torch.tensor(completion_ids)[:, None]).squeeze(1)


def test_rows_are_n_contiguous_samples_per_prompt(tiny, prompts):
    model, tok = tiny
    out = HFBackend(model, tok, batch_size=8).generate(prompts, 4, SamplingParams(max_new_tokens=6, seed=1))
    assert len(out) == 12 and out.n == 4 and out.num_prompts == 3
    expected = tok(prompts, add_special_tokens=False)["input_ids"]
    for r in range(12):
        assert out.prompt_ids[r] == expected[r // 4] and out.prompt_index[r] == r // 4
        assert 1 <= len(out.completion_ids[r]) <= 6 and len(out.completion_logps[r]) == len(out.completion_ids[r])
    assert out.group(1) == slice(4, 8)
    assert len({tuple(out.completion_ids[r]) for r in range(4)}) > 1  # samples of one prompt differ


def test_greedy_group_rows_equal_that_prompt_alone(tiny, prompts):
    """Prefill-once + cache expansion gives every sample its own prompt's context."""
    model, tok = tiny
    backend = HFBackend(model, tok, batch_size=9)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    together = backend.generate(prompts, 3, params)
    for i, p in enumerate(prompts):
        alone = backend.generate([p], 1, params)
        for r in range(3 * i, 3 * i + 3):
            assert together.completion_ids[r] == alone.completion_ids[0]
            assert torch.allclose(torch.tensor(together.completion_logps[r]), torch.tensor(alone.completion_logps[0]),
                                  atol=1e-5)


def test_left_padding_does_not_change_a_prompt(tiny, prompts):
    model, tok = tiny
    backend = HFBackend(model, tok)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    short, long = prompts[1], prompts[2]
    assert len(tok(short)["input_ids"]) < len(tok(long)["input_ids"])
    alone = backend.generate([short], 1, params)
    batched = backend.generate([long, short], 1, params)
    assert batched.completion_ids[1] == alone.completion_ids[0]
    assert torch.allclose(torch.tensor(batched.completion_logps[1]), torch.tensor(alone.completion_logps[0]), atol=1e-5)


def test_same_seed_same_rollouts_other_seed_differs(tiny, prompts):
    model, tok = tiny
    backend = HFBackend(model, tok)
    a = backend.generate(prompts, 2, SamplingParams(max_new_tokens=8, seed=7))
    b = backend.generate(prompts, 2, SamplingParams(max_new_tokens=8, seed=7))
    c = backend.generate(prompts, 2, SamplingParams(max_new_tokens=8, seed=8))
    assert a.completion_ids == b.completion_ids and a.completion_logps == b.completion_logps
    assert a.completion_ids != c.completion_ids


def test_per_prompt_seeds_make_samples_independent_of_the_split(tiny_model_dir, prompts):
    """With one seed per prompt, a prompt's samples are the same whether it is generated with the others in
    one call, alone, or in another chunking (batch_size): what lets 2 processes sample as 1 does."""
    model, tok = eos_biased(tiny_model_dir)  # rows finish at different steps: dropped rows keep their streams
    seeds = (11, 22, 33)
    params = lambda s: SamplingParams(max_new_tokens=10, top_k=40, seeds=s)  # noqa: E731
    whole = HFBackend(model, tok, batch_size=64).generate(prompts, 3, params(seeds))
    parts = [HFBackend(model, tok, batch_size=3).generate(prompts[:2], 3, params(seeds[:2])),
             HFBackend(model, tok, batch_size=2).generate(prompts[2:], 3, params(seeds[2:]))]
    ids = parts[0].completion_ids + parts[1].completion_ids
    assert whole.completion_ids == ids
    assert len({len(c) for c in ids}) > 1 and len(set(map(tuple, ids[:3]))) > 1  # ragged, and samples differ
    for a, b in zip(whole.completion_logps, parts[0].completion_logps + parts[1].completion_logps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    plain = HFBackend(model, tok, lean=False).generate(prompts, 3, params(seeds))  # transformers' forward path
    assert plain.completion_ids == whole.completion_ids
    other = HFBackend(model, tok).generate(prompts, 3, params((11, 22, 34)))
    assert other.completion_ids[:6] == whole.completion_ids[:6] and other.completion_ids[6:] != whole.completion_ids[6:]
    with pytest.raises(ValueError, match="holds 2 seeds for 3 prompts"):
        HFBackend(model, tok).generate(prompts, 1, params((1, 2)))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (1.0, 40, 0.9), (0.7, 0, 1.0)])
def test_sampled_logps_equal_a_fresh_forward_pass(tiny_model_dir, prompts, temperature, top_k, top_p):
    # rows of different lengths exercise dropping finished rows; the bias scales with T so p(EOS) stays ~1/6
    model, tok = eos_biased(tiny_model_dir, bias=4.6 * temperature)
    params = SamplingParams(max_new_tokens=12, temperature=temperature, top_k=top_k, top_p=top_p, seed=3)
    out = HFBackend(model, tok, batch_size=6).generate(prompts, 3, params)
    assert len({len(ids) for ids in out.completion_ids}) > 1
    for r in range(len(out)):
        ref = fresh_logps(model, out.prompt_ids[r], out.completion_ids[r], temperature)
        assert torch.allclose(torch.tensor(out.completion_logps[r]), ref, atol=1e-4), r


def test_eos_ends_a_completion_and_nothing_follows(tiny_model_dir, prompts):
    model, tok = eos_biased(tiny_model_dir)
    eos = tok.eos_token_id
    out = HFBackend(model, tok).generate(prompts, 4, SamplingParams(max_new_tokens=8, seed=0))
    ended = [ids for ids in out.completion_ids if eos in ids]
    assert ended, "the EOS-biased model should end some samples"
    for r, ids in enumerate(out.completion_ids):
        if eos in ids:
            assert ids.index(eos) == len(ids) - 1 and not out.truncated[r]
        assert "<|im_end|>" not in out.texts[r]
        assert out.truncated[r] == (len(ids) == 8 and ids[-1] != eos)
    assert any(out.truncated) and not all(out.truncated)


def test_truncated_when_max_new_tokens_reached(tiny, prompts):
    model, tok = tiny
    out = HFBackend(model, tok).generate(prompts, 2, SamplingParams(max_new_tokens=3, seed=0))
    for ids, trunc in zip(out.completion_ids, out.truncated):
        assert trunc == (len(ids) == 3 and ids[-1] != tok.eos_token_id)
    assert any(out.truncated)


def test_stop_string_cuts_text_and_stops_generation(tiny, prompts):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=20, stop=(" ", "+"), seed=2)
    out = HFBackend(model, tok).generate(prompts, 4, params)
    stopped = 0
    for ids, text, trunc in zip(out.completion_ids, out.texts, out.truncated):
        full = tok.decode(ids, skip_special_tokens=True)
        assert " " not in text and "+" not in text and full.startswith(text)
        if " " in full or "+" in full:
            stopped += 1
            assert not trunc
            head = tok.decode(ids[:-1], skip_special_tokens=True)
            assert " " not in head and "+" not in head, "generation went on past the stop string"
    assert stopped >= len(out) // 2


def test_without_cache_gives_the_same_greedy_rollouts(tiny, prompts):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=6, temperature=0)
    cached = HFBackend(model, tok, use_cache=True).generate(prompts, 2, params)
    plain = HFBackend(model, tok, use_cache=False, batch_size=1).generate(prompts, 2, params)
    assert cached.completion_ids == plain.completion_ids
    for a, b in zip(cached.completion_logps, plain.completion_logps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_training_mode_and_grad_state_restored(tiny_model_dir, prompts):
    model, tok = load(tiny_model_dir)
    model.train()
    model.model.layers[0].eval()  # a frozen block stays in eval
    HFBackend(model, tok).generate(prompts[:1], 2, SamplingParams(max_new_tokens=3, seed=0))
    assert model.training and model.model.layers[1].training and not model.model.layers[0].training
    assert torch.is_grad_enabled() and all(p.grad is None for p in model.parameters())


def test_sync_weights_is_a_no_op_for_the_same_model_only(tiny, tiny_model_dir):
    model, tok = tiny
    backend = make_backend("hf", model, tok)
    backend.sync_weights(model)
    with pytest.raises(ValueError, match="different model"):
        backend.sync_weights(load(tiny_model_dir)[0])


def test_top_k_top_p_filter_by_hand():
    scores = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    assert torch.isinf(filter_top_k_top_p(scores, 3, 1.0)[0]).tolist() == [True, False, False, False]
    assert torch.isinf(filter_top_k_top_p(scores, 0, 0.75)[0]).tolist() == [True, False, True, False]
    assert torch.isinf(filter_top_k_top_p(scores, 0, 0.1)[0]).tolist() == [True, False, True, True]


def test_samples_stay_inside_the_filtered_set_and_logps_are_unfiltered():
    logits = torch.randn(2000, 50, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    tokens, logps = sample_next(logits, SamplingParams(max_new_tokens=1, top_k=3, temperature=0.5), gen)
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == tokens[:, None]).any(dim=1).all()
    expected = torch.log_softmax(logits / 0.5, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    assert torch.allclose(logps, expected)


def test_peft_policy_logps_equal_its_forward_pass(tiny_model_dir, prompts):
    from peft import LoraConfig, get_peft_model

    model, tok = load(tiny_model_dir)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"]))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = make_backend("hf", policy, tok).generate(prompts, 2, SamplingParams(max_new_tokens=6, seed=0))
    for r in range(len(out)):
        ref = fresh_logps(policy, out.prompt_ids[r], out.completion_ids[r])
        assert torch.allclose(torch.tensor(out.completion_logps[r]), ref, atol=1e-4), r
    plain = HFBackend(load(tiny_model_dir)[0], tok).generate(prompts, 2, SamplingParams(max_new_tokens=6, seed=0))
    assert plain.completion_logps != out.completion_logps  # the adapter is in effect


def test_inverse_cdf_draw_matches_the_categorical_distribution():
    from posttrain.rollout.hf import draw

    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0]).expand(40000, 5)
    counts = torch.bincount(draw(probs * 3.0, torch.Generator().manual_seed(0)), minlength=5).float() / 40000
    assert counts[1] == 0 and counts[4] == 0                     # zero mass is never drawn (unnormalised rows too)
    torch.testing.assert_close(counts, probs[0], atol=0.01, rtol=0)  # 4 sigma of a binomial(40000, 0.5) is 0.01
    one_hot = torch.zeros(3, 7).index_fill_(1, torch.tensor([6]), 1.0)
    assert draw(one_hot, torch.Generator().manual_seed(1)).tolist() == [6, 6, 6]
    # u * total rounding up to the total lands on the last token with mass, never on the zero-mass tail
    tail = torch.tensor([[0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0]])
    assert draw(tail, u=torch.tensor([1.0, 1.0])).tolist() == [1, 2]
    assert draw(tail, u=torch.tensor([0.0, 0.0])).tolist() == [0, 2]


def test_greedy_tokens_equal_transformers_generate(tiny, prompts):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=10, temperature=0.0, seed=0)
    out = HFBackend(model, tok, batch_size=8).generate(prompts, 2, params)
    for i, p in enumerate(prompts):
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = ref[:ref.index(tok.eos_token_id) + 1] if tok.eos_token_id in ref else ref
        assert out.completion_ids[2 * i] == out.completion_ids[2 * i + 1] == ref, i


def test_preallocated_kv_layer_holds_what_a_dynamic_layer_holds():
    from transformers.cache_utils import DynamicLayer

    from posttrain.rollout.kv_cache import GrowingLayer

    g = torch.Generator().manual_seed(0)
    grow, dyn = GrowingLayer(capacity=3), DynamicLayer()   # capacity 3 < 7 positions: the buffer must grow
    steps = [(2, 4), (1, 4), (1, 8), (1, 8), (2, 8), (1, 3)]  # (new positions, batch): prefill, decode, repeat, select
    for i, (t, b) in enumerate(steps):
        if i == 2:
            grow.batch_repeat_interleave(2), dyn.batch_repeat_interleave(2)
        if i == 5:
            keep = torch.tensor([0, 3, 6])
            grow.batch_select_indices(keep), dyn.batch_select_indices(keep)
        k, v = torch.randn(b, 2, t, 5, generator=g), torch.randn(b, 2, t, 5, generator=g)
        for a, e in zip(grow.update(k, v), dyn.update(k, v)):
            assert torch.equal(a, e), i
    assert grow.get_seq_length() == dyn.get_seq_length() == 8
