"""The lean decode path (`rollout.lean`): the tokens transformers' own generate gives, the log-probs a fresh
forward gives, and the fallback for what it does not know."""
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.rollout import SamplingParams
from posttrain.rollout.hf import HFBackend
from posttrain.rollout.lean import lean_supported


def load(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(tiny):
    tok = tiny[1]
    chat = [{"role": "user", "content": "What is 12 + 30?"}]
    return [tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), "the code",
            "review this line: for x in range(10): print(x)"]  # three lengths: left padding in every chunk


def reference_greedy(model, tok, prompt, max_new):
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    return out[:out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out


def fresh_logps(model, prompt_ids, completion_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(completion_ids)[:, None]).squeeze(1)


def test_the_tiny_llama_takes_the_lean_path(tiny):
    model, tok = tiny
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA is exercised
    assert lean_supported(model) and HFBackend(model, tok).lean
    assert not HFBackend(model, tok, lean=False).lean and not HFBackend(model, tok, use_cache=False).lean


KINDS = ["mkl", "onednn", "avx2", None]   # every way `_Linear` runs its matmuls (lean_linear.linear_kind picks one)


def skip_unavailable(kind):
    from posttrain.core.fast_linear import cpu_has_avx2_fma
    from posttrain.rollout import native
    from posttrain.rollout.lean_linear import mkl_packed_available

    if kind == "mkl" and not mkl_packed_available():
        pytest.skip("torch without MKL's packed sgemm")
    if kind == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN")
    if kind == "avx2" and not (cpu_has_avx2_fma() and native.available()):
        pytest.skip("no AVX2 and FMA here, or no compiled step (rollout.native)")


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_equal_transformers_generate(tiny, prompts, kind, monkeypatch):
    import posttrain.rollout.lean as lean

    skip_unavailable(kind)
    monkeypatch.setattr(lean, "linear_kind", lambda w: kind)
    model, tok = tiny
    out = HFBackend(model, tok, batch_size=4).generate(prompts, 2, SamplingParams(max_new_tokens=16, temperature=0))
    for i, p in enumerate(prompts):
        ref = reference_greedy(model, tok, p, 16)
        assert out.completion_ids[2 * i] == out.completion_ids[2 * i + 1] == ref, i


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logps_equal_a_fresh_forward(tiny_model_dir, prompts, temperature):
    model, tok = load(tiny_model_dir)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)  # bias: the head's
    head.weight.data.copy_(model.lm_head.weight.data)                                         # bias is handled
    head.bias.data.zero_()
    head.bias.data[tok.eos_token_id] = 4.6 * temperature   # EOS ~1 in 6: rows finish at different steps
    model.lm_head = head
    backend = HFBackend(model, tok, batch_size=6)
    assert backend.lean
    out = backend.generate(prompts, 3, SamplingParams(max_new_tokens=12, temperature=temperature, seed=3))
    assert len({len(ids) for ids in out.completion_ids}) > 1   # finished rows were dropped mid-way
    for r in range(len(out)):
        ref = fresh_logps(model, out.prompt_ids[r], out.completion_ids[r], temperature)
        torch.testing.assert_close(torch.tensor(out.completion_logps[r]), ref, atol=1e-5, rtol=0)


def test_lean_and_transformers_paths_sample_the_same_rows(tiny, prompts):
    """Same RNG use row by row: with a seed, both paths draw the same samples (logits agree to ~1e-6)."""
    model, tok = tiny
    params = SamplingParams(max_new_tokens=10, seed=11)
    lean = HFBackend(model, tok, batch_size=6).generate(prompts, 2, params)
    plain = HFBackend(model, tok, batch_size=6, lean=False).generate(prompts, 2, params)
    assert lean.completion_ids == plain.completion_ids
    for a, b in zip(lean.completion_logps, plain.completion_logps):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


def test_weights_changed_between_calls_are_used(tiny_model_dir, prompts):
    model, tok = load(tiny_model_dir)
    backend = HFBackend(model, tok)
    params = SamplingParams(max_new_tokens=5, seed=0)
    before = backend.generate(prompts[:1], 2, params)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(3.0)   # an "optimizer step"
    after = backend.generate(prompts[:1], 2, params)
    assert after.completion_logps != before.completion_logps
    for r in range(2):
        ref = fresh_logps(model, after.prompt_ids[r], after.completion_ids[r])
        torch.testing.assert_close(torch.tensor(after.completion_logps[r]), ref, atol=1e-5, rtol=0)


def test_qwen2_biases_decode_lean_and_match_generate(tiny):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny[1]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    for layer in model.model.layers:   # q/k/v biases away from zero, so using them matters
        torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
        torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    backend = HFBackend(model, tok)
    assert backend.lean
    out = backend.generate(["the code", "What is 1 + 2?"], 1, SamplingParams(max_new_tokens=8, temperature=0))
    assert out.completion_ids == [reference_greedy(model, tok, p, 8) for p in ["the code", "What is 1 + 2?"]]


def test_unknown_architectures_and_wrapped_layers_fall_back(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    qwen3 = Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    assert not lean_supported(qwen3)   # q/k norms: not the Llama layer
    model, _ = load(tiny_model_dir)
    assert not lean_supported(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).get_base_model())
    model, _ = load(tiny_model_dir)
    model.config.sliding_window = 4
    assert not lean_supported(model)
    model, _ = load(tiny_model_dir)
    model.lm_head.weight.ds_id = 0   # a DeepSpeed ZeRO-3 partition: only the module's forward gathers it
    assert not lean_supported(model)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_decode_step_equals_forward_bit_for_bit(tiny, kind, native, monkeypatch):
    """`LeanLlama.step` (the decode loop's call, [B, heads, D] layout; compiled where `rollout.native` builds, and
    in Python) is `forward` at T = 1: the same hidden states and the same cache slot, bit for bit; and its
    rotation is transformers' rotate_half formula.
    (A prefill's "mkl" products run unpacked, equal to ~1e-7, not bit for bit: here both sides pack.)"""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from posttrain.rollout.lean import LeanLlama, _rotate, prefill_mask, with_views
    from posttrain.rollout.lean_linear import _Linear

    skip_unavailable(kind)
    monkeypatch.setattr(_Linear, "prefill", _Linear.__call__)
    model, _ = tiny
    lean = LeanLlama(model, 10, kind=kind, native=native)
    ids = torch.randint(4, model.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0                                   # a left-padded row
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a, b = lean.new_cache(3, 10), lean.new_cache(3, 10)
        lean.forward(ids, pos, a, 0, prefill_mask(mask))
        for (ca, _, _), (cb, _, _) in zip(a, b):
            cb.copy_(ca)
        keys = torch.zeros(3, 1, 1, 7)
        keys[0, ..., :2] = float("-inf")
        tok, nxt = torch.tensor([5, 6, 7]), pos[:, -1] + 1
        ref = lean.forward(tok[:, None], nxt[:, None], a, 6, keys)[:, 0]
        got = lean.step(tok, lean.rope(nxt), b, 6, keys)
        # rows that see every key: no mask is the same as an all-zero additive one
        free = [lean.step(tok[1:], lean.rope(nxt[1:]), [with_views(c[1:].clone()) for c, _, _ in b], 6, m)
                for m in (None, keys[1:])]
    assert torch.equal(got, ref) and torch.equal(*free)
    for (ca, ka, va), (cb, _, _) in zip(a, b):
        assert torch.equal(ca[:, :, :7], cb[:, :, :7])
        assert ka.data_ptr() == ca.data_ptr() and torch.equal(torch.cat((ka, va), 1)[:, :, :7], ca[:, :, :7])
    q = torch.randn(3, 2, lean.heads + 2 * lean.kv, lean.dim, generator=torch.Generator().manual_seed(1))
    cos, sin = model.model.rotary_emb(q, position_ids=pos[:, :2])
    h = lean.heads + lean.kv   # q and k heads rotate, v heads pass unchanged
    want = apply_rotary_pos_emb(q[:, :, :h].transpose(1, 2), q[:, :, :h].transpose(1, 2), cos, sin)[0]
    rc, rs = lean.rope(pos[:, :2])                      # [3 x 2, heads, 1, D]: cos, signed sin
    got = _rotate(q, rc.view(q.shape), rs.view(q.shape))
    assert torch.equal(got[:, :, :h].transpose(1, 2), want) and torch.equal(got[:, :, h:], q[:, :, h:])


@pytest.mark.parametrize("kind", KINDS)
def test_a_folded_norm_weight_equals_the_norm_then_the_linear(kind):
    """`_Linear(parts, kind, norm=w)` (an RMSNorm's weight folded into q/k/v's concatenated copy) computes
    F.linear(x * w) of each part to float rounding, leaves the modules' weights as they were, and says so
    (`folded`); kind None (the modules' own weights) never folds."""
    from posttrain.rollout.lean_linear import _Linear

    skip_unavailable(kind)
    torch.manual_seed(0)
    parts = [torch.nn.Linear(32, 24, bias=False), torch.nn.Linear(32, 8, bias=True)]
    before = [p.weight.clone() for p in parts]
    w = torch.rand(32) + 0.5
    lin = _Linear(parts, kind, norm=w)
    assert lin.folded is (kind is not None)
    for m in (16, 40):
        x = torch.randn(m, 32)
        got = lin.prefill(x) if m == 40 else lin(x)
        want = torch.cat([F.linear(x * w if lin.folded else x, p.weight, p.bias) for p in parts], dim=-1)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(p.weight, b) for p, b in zip(parts, before))


@pytest.mark.parametrize("kind", KINDS)
def test_linear_kinds_equal_f_linear_as_rows_finish(kind):
    """`_Linear` of q/k/v-like parts (one with a bias) equals `F.linear` of each part, concatenated, at every
    row count a decode chunk passes through: 16 rows, rows finishing one by one ("mkl": padded up to the packed
    16, then packed again at 8, 4, 2, 1), a new chunk of 16 again, and a prefill."""
    from posttrain.rollout.lean_linear import _Linear

    skip_unavailable(kind)
    torch.manual_seed(0)
    parts = [torch.nn.Linear(32, 24, bias=False), torch.nn.Linear(32, 8, bias=True), torch.nn.Linear(32, 8, bias=False)]
    lin = _Linear(parts, kind)
    packs = []
    for m in [16, 15, 12, 9, 8, 7, 5, 4, 3, 2, 1, 16, 16, 40]:
        x = torch.randn(m, 32)
        got = lin.prefill(x) if m == 40 else lin(x)
        want = torch.cat([F.linear(x, p.weight, p.bias) for p in parts], dim=-1)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        packs.append(lin.rows)
    if kind == "mkl":
        assert packs == [16, 16, 16, 16, 8, 8, 8, 4, 4, 2, 1, 16, 16, 16]


@pytest.mark.parametrize("seeded", ["seed", "seeds"])
def test_finished_rows_kept_or_compacted_give_the_same_samples(tiny_model_dir, prompts, seeded, monkeypatch):
    """Finished rows stay in the lean batch until `COMPACT` of it is live: the samples and log-probs are those
    of compacting at every finishing step (1.0), of never compacting (0.0), and the transformers path's (which
    drops finished rows at once), with one generator for all rows and with per-row streams; and so are those of
    one prompt per chunk (batch_size 4: no left padding, no key mask) with per-row streams (one generator's
    draws depend on the chunking)."""
    import posttrain.rollout.decode_rows as decode_rows

    model, tok = load(tiny_model_dir)
    model.lm_head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    torch.nn.init.normal_(model.lm_head.weight, std=0.02)
    model.lm_head.bias.data.zero_()
    model.lm_head.bias.data[tok.eos_token_id] = 3.0   # EOS ~1 in 8: rows finish at many different steps
    kw = dict(seed=5) if seeded == "seed" else dict(seeds=[5, 6, 7])
    params = SamplingParams(max_new_tokens=24, **kw)
    outs = []
    for share, batch in ((1.0, 12), (0.75, 12), (0.0, 12)) + (((0.75, 4),) if seeded == "seeds" else ()):
        monkeypatch.setattr(decode_rows, "COMPACT", share)
        outs.append(HFBackend(model, tok, batch_size=batch).generate(prompts, 4, params))
    plain = HFBackend(model, tok, batch_size=12, lean=False).generate(prompts, 4, params)
    lengths = {len(ids) for ids in plain.completion_ids}
    assert len(lengths) > 3 and max(lengths) == 24   # rows finished at several steps, some ran to the budget
    for out in outs:
        assert out.completion_ids == plain.completion_ids
        for a, b in zip(out.completion_logps, plain.completion_logps):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    assert outs[0].completion_logps == outs[1].completion_logps == outs[2].completion_logps
