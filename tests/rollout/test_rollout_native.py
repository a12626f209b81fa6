"""The compiled lean decode step (`rollout.native`): the Python step's values bit for bit at every row count a
chunk passes through, the same samples from `generate`, and a one-line fallback when it cannot be built."""
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.core.fast_linear import cpu_has_avx2_fma
from posttrain.rollout import SamplingParams, native
from posttrain.rollout.hf import HFBackend
from posttrain.rollout.lean import LeanLlama, prefill_mask, with_views
from posttrain.rollout.lean_linear import mkl_packed_available

pytestmark = pytest.mark.skipif(not native.compiler_found() or not native.enabled(),
                                reason="no C++ compiler ($CXX or c++), or POSTTRAIN_NATIVE=0")


@pytest.fixture(scope="module")
def op():
    op = native.load()
    assert op is not None, f"a compiler is here but the step did not build: {native._STATE.get('error')}"
    return op


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def qwen2_with_biases(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    for layer in model.model.layers:   # q/k/v biases away from zero, so that using them matters
        torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
        torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    return model


def kinds():
    return [k for k, ok in (("mkl", mkl_packed_available()), ("onednn", torch.backends.mkldnn.is_available()),
                            ("avx2", cpu_has_avx2_fma())) if ok]


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_compiled_step_equals_the_python_step_bit_for_bit(op, tiny, kind, arch):
    """6 rows (one left-padded: a key mask), then 5 of them (compacted: "mkl" pads them up to its pack of 6) and
    2 (packed again), each without and with the mask: the same hidden states and cache slot, bit for bit, on
    the GQA tiny-llama and on a Qwen2 with q/k/v biases."""
    model = tiny[0] if arch == "llama" else qwen2_with_biases(tiny[0].config.vocab_size)
    compiled, plain = LeanLlama(model, 12, kind=kind), LeanLlama(model, 12, kind=kind, native=False)
    assert compiled.native is not None and plain.native is None
    ids = torch.randint(4, model.config.vocab_size, (6, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    keys = torch.zeros(6, 1, 1, 12)
    keys[0, ..., :2] = float("-inf")
    with torch.no_grad():
        cache = plain.new_cache(6, 12)
        plain.forward(ids, pos, cache, 0, prefill_mask(mask))
        for rows in ([0, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [0, 5]):
            keep = torch.tensor(rows)
            tok, nxt = torch.arange(5, 5 + len(rows)), pos[keep, -1] + 1
            for m in (None, keys[keep, ..., :6]):
                a, b = ([with_views(c[keep].clone()) for c, _, _ in cache] for _ in range(2))
                got = compiled.step(tok, compiled.rope(nxt), a, 5, m)
                want = plain.step(tok, plain.rope(nxt), b, 5, m)
                assert torch.equal(got, want), (rows, m is None)
                assert all(torch.equal(ca[:, :, :6], cb[:, :, :6]) for (ca, _, _), (cb, _, _) in zip(a, b))
    if kind == "mkl":
        assert compiled.native.rows == 2 and compiled.layers[0]["qkv"].rows == 2


SAMPLINGS = {"streams": dict(seeds=[1, 2, 3]), "generator": dict(seed=4), "greedy": dict(temperature=0.0),
             "temperature": dict(temperature=0.7, seeds=[1, 2, 3]), "top-k": dict(top_k=40, seeds=[1, 2, 3])}


@pytest.mark.parametrize("sampling", sorted(SAMPLINGS))
def test_generate_samples_the_same_with_and_without_it(op, tiny, sampling, monkeypatch):
    """Sampled rows that finish at different steps (an EOS-biased head: compaction), prompts of three lengths
    (left padding): the compiled calls (`LeanLlama.advance`: step, head and draw, for greedy and unfiltered
    sampling from per-row streams or one generator; `step` alone under top-k) and the Python step (`compiled`
    False: the same linear kind, the machine's own) give the same tokens and log-probs, exactly."""
    model, tok = tiny
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    head.bias.data[tok.eos_token_id] = 0.0 if sampling == "greedy" else 3.0   # greedy: no row would start
    model.lm_head, original = head, model.lm_head
    try:
        prompts = ["the code", "What is 12 + 30?", "review this line: for x in range(10)"]
        params = SamplingParams(max_new_tokens=20, **SAMPLINGS[sampling])
        outs = []
        for compiled in (True, False):
            if not compiled:
                monkeypatch.setattr(LeanLlama, "compiled", lambda self, rows: False)
            outs.append(HFBackend(model, tok, batch_size=12).generate(prompts, 4, params))
    finally:
        model.lm_head = original
    lengths = {len(ids) for ids in outs[0].completion_ids}
    assert max(lengths) == 20 if sampling == "greedy" else len(lengths) > 3
    assert outs[0].completion_ids == outs[1].completion_ids
    assert outs[0].completion_logps == outs[1].completion_logps


def test_no_compiler_says_so_in_one_line_and_decodes_in_python(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    said = []
    assert native.load(log=said.append) is None and native.load(log=said.append) is None   # tried once
    assert len(said) == 1 and "\n" not in said[0]
    assert "no C++ compiler" in said[0] and "no-such-c++" in said[0] and "Python step" in said[0]
    assert LeanLlama(model, 8).native is None
    out = HFBackend(model, tok).generate(["the code"], 2, SamplingParams(max_new_tokens=4, seed=0))
    assert len(out) == 2


def test_a_failed_build_names_the_error_and_leaves_no_file(tmp_path, monkeypatch):
    bad = tmp_path / "lean_step.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", bad)
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    path = native.library_path()
    with pytest.raises(RuntimeError, match=r"failed \(exit \d+\).*lean_step\.cpp"):
        native.build(path)
    assert os.listdir(path.parent) == []


@pytest.mark.slow
def test_a_corrupt_cached_library_is_built_again(tmp_path):
    """A cached file that does not load (here: garbage) is rebuilt in place, in a fresh process (~20 s)."""
    env = {**os.environ, "POSTTRAIN_CACHE": str(tmp_path)}
    code = "from posttrain.rollout import native; print(native.library_path()); print(native.load() is not None)"
    path = subprocess.run([sys.executable, "-c", "from posttrain.rollout import native; print(native.library_path())"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"not a library")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [path, "True"]
    with open(path, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_a_lean_model_is_freed_at_once_after_its_steps(op, tiny):
    """No reference cycle between a `LeanLlama` and its compiled step: its weight copies and packs (~15 MB for the
    bench's model, built every `generate`) go when the call ends, not at the next full garbage collection (a cycle
    here grew a GRPO run's peak memory by ~24 MB a step)."""
    import gc
    import weakref

    model = tiny[0]
    lean = LeanLlama(model, 8)
    assert lean.native is not None
    cache = lean.new_cache(2, 8)
    with torch.no_grad():
        lean.step(torch.tensor([5, 6]), lean.rope(torch.tensor([0, 0])), cache, 0, None)
    gone = weakref.ref(lean)
    gc.disable()
    try:
        del lean
        assert gone() is None
    finally:
        gc.enable()
