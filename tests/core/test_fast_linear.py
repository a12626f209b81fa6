"""float32 linears on oneDNN (`core.fast_linear`): F.linear's values and gradients to float rounding, the
fallbacks, and which algorithms the engine switches."""
import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import posttrain.core.fast_linear as fl
from posttrain.core.fast_linear import _Linear, bucket, onednn_available, onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("rows", [(7, 3), (1,), (130,), (1000,), (2, 64)])   # odd counts, 3-D, on a bucket
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_f_linear(bias, rows):
    up_scale = lambda r: math.prod(r) ** 0.5  # noqa: E731
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g, requires_grad=True)
    b = torch.randn(24, generator=g, requires_grad=True) if bias else None
    x = torch.randn(*rows[::-1], 40, generator=g).transpose(0, len(rows) - 1).requires_grad_()   # 3-D: strided
    up = torch.randn(*rows, 24, generator=g) / up_scale(rows)   # dW, db sum over the rows: O(1) whatever their count
    ref = F.linear(x, w, b)
    got = _Linear.apply(x, w, b)
    assert got.shape == ref.shape == (*rows, 24)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    params = (x, w) + ((b,) if bias else ())
    for r, q in zip(torch.autograd.grad((ref * up).sum(), params), torch.autograd.grad((got * up).sum(), params)):
        torch.testing.assert_close(q, r, atol=1e-5, rtol=1e-5)


def test_bucket_sizes():
    # multiples of 8 up to 128, then 16 sizes per octave: 129..136 -> 136, 2000 -> 2048 (q = 64), never fewer rows
    assert [bucket(m) for m in (1, 8, 9, 127, 128, 129, 255, 256, 257, 1000, 2000, 2049)] == [
        8, 8, 16, 128, 128, 136, 256, 256, 272, 1024, 2048, 2176]
    sizes = [bucket(m) for m in range(1, 4097)]
    assert all(m <= s <= m * 17 / 16 for m, s in zip(range(129, 4097), sizes[128:]))   # <= 6.25% extra rows
    assert len(set(sizes)) == 16 + 16 * 5                                        # 16 below 128, 16 per octave above


def test_shapes_onednn_sees_are_bounded(monkeypatch):
    seen, real = [], fl._pointwise
    record = lambda a, w, b: seen.append((tuple(a.shape), tuple(w.shape))) or real(a, w, b)  # noqa: E731
    monkeypatch.setattr(fl, "_pointwise", record)
    lin = torch.nn.Linear(16, 8)
    onednn_linears(lin)
    counts = torch.randint(1500, 2600, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    for m in counts:   # 200 steps, each a new token count (a packed batch)
        lin(torch.randn(m, 16, requires_grad=True)).sum().backward()
    assert len(set(counts)) > 150 and len(seen) == 3 * len(counts)   # forward, input grad, weight grad each
    assert len(set(seen)) == 3 * len({bucket(m) for m in counts}) <= 3 * 19   # 1536..2048 step 64, 2176..2688 step 128


def test_reused_padded_input_is_not_stale():
    # q/k/v read one input: its padded copy is made once; a changed input (in place, or a new one) is copied anew
    w1, w2 = torch.randn(6, 5), torch.randn(7, 5)
    x = torch.randn(11, 5)
    torch.testing.assert_close(_Linear.apply(x, w1, None), F.linear(x, w1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_Linear.apply(x, w2, None), F.linear(x, w2), atol=1e-5, rtol=1e-5)
    x.mul_(-2)
    torch.testing.assert_close(_Linear.apply(x, w2, None), F.linear(x, w2), atol=1e-5, rtol=1e-5)
    y = torch.randn(11, 5)
    torch.testing.assert_close(_Linear.apply(y, w2, None), F.linear(y, w2), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():   # inference tensors: no version counter, so never reused
        z = torch.randn(11, 5)
        torch.testing.assert_close(_Linear.apply(z, w1, None), F.linear(z, w1), atol=1e-5, rtol=1e-5)
        z.add_(1)
        torch.testing.assert_close(_Linear.apply(z, w1, None), F.linear(z, w1), atol=1e-5, rtol=1e-5)


def test_only_the_gradients_asked_for():
    w = torch.randn(5, 4, requires_grad=True)
    x = torch.randn(6, 4)                       # an input without grad (the embedding-free first layer of a test)
    _Linear.apply(x, w, None).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(6, 5).t() @ x)   # dW = g^T x with g all ones
    frozen = torch.randn(5, 4)                  # a frozen weight (a LoRA base layer): only dx
    x2 = torch.randn(6, 4, requires_grad=True)
    _Linear.apply(x2, frozen, None).sum().backward()
    torch.testing.assert_close(x2.grad, torch.ones(6, 5) @ frozen)   # dx = g W


def test_model_switched_same_logits_and_gradients(tiny_model_dir):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fast = copy.deepcopy(plain)
    n_linear = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert onednn_linears(fast) == n_linear == 7 * plain.config.num_hidden_layers + 1   # 7 per layer + head
    assert onednn_linears(fast) == 0   # already switched
    ids = torch.randint(4, plain.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    a, b = plain(input_ids=ids).logits, fast(input_ids=ids).logits
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    for (n, p), q in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-4, msg=n)
    with torch.inference_mode():   # the reference model's pass: no graph, same values
        torch.testing.assert_close(fast(input_ids=ids).logits, a.detach(), atol=1e-5, rtol=1e-5)
    c = copy.deepcopy(fast)        # a copy (the reference model) keeps the switch, bound to itself
    assert c.lm_head.forward.__self__ is c.lm_head
    torch.testing.assert_close(c(input_ids=ids).logits, a.detach(), atol=1e-5, rtol=1e-5)


def test_fallbacks_run_the_module_own_forward(monkeypatch):
    import posttrain.core.fast_linear as fl

    lin = torch.nn.Linear(4, 3)
    onednn_linears(lin)
    calls = []
    monkeypatch.setattr(fl._Linear, "apply", lambda *a: calls.append(1) or F.linear(*a))
    lin(torch.randn(2, 4))
    assert calls == [1]
    x64 = torch.randn(2, 4, dtype=torch.float64)
    assert torch.equal(lin.double()(x64), F.linear(x64, lin.weight, lin.bias))   # float64: not oneDNN's
    lin.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):                            # autocast decides the dtype
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    assert calls == [1]


def test_every_algorithm_asks_and_the_cpu_decides(monkeypatch):
    from posttrain.algorithms.dpo import DPO
    from posttrain.algorithms.grpo import GRPO
    from posttrain.algorithms.reward_model import RewardModelTrainer as RewardModel
    from posttrain.algorithms.sft import SFT
    from posttrain.core.algorithm import Algorithm
    from posttrain.core.speedups import speed_up

    assert all(a.onednn_linear for a in (Algorithm, SFT, DPO, RewardModel, GRPO))
    monkeypatch.delenv(fl.ENV, raising=False)
    cases = (("GenuineIntel", True, False), ("AuthenticAMD", True, True), ("AuthenticAMD", False, False),
             ("", False, False))   # (vendor, AVX-512, oneDNN): only AMD with AVX-512 (Zen 4) gains
    for vendor, avx512, want in cases:
        monkeypatch.setattr(fl, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(fl, "cpu_has_avx512", lambda a=avx512: a)
        assert fl.onednn_pays() is want
        assert fl.onednn_pays(decode=True) is (vendor == "AuthenticAMD")   # decode: any non-Intel x86
        lin = torch.nn.Linear(4, 3)
        speed_up(lin, onednn_linear=True)
        assert ("forward" in vars(lin)) is want
    monkeypatch.setattr(fl, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(fl, "cpu_has_avx512", lambda: True)
    monkeypatch.setenv(fl.ENV, "0")
    assert not fl.onednn_pays()                      # AMD with AVX-512, forced off
    monkeypatch.setattr(fl, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setenv(fl.ENV, "1")
    assert fl.onednn_pays()                          # Intel, forced on
    monkeypatch.setenv(fl.ENV, "maybe")
    with pytest.raises(ValueError, match="POSTTRAIN_ONEDNN_LINEAR: expected 1"):
        fl.onednn_pays()


@pytest.mark.parametrize("lead", [(3, 7), (16, 1), (1, 130)])   # the lean decode's prefill and step shapes
def test_bucketed_linear_with_a_prepacked_weight(lead):
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(*lead, 40, generator=g), torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
    with torch.inference_mode():
        got = fl.bucketed_linear(x, packed, b)
    assert got.shape == (*lead, 24)
    torch.testing.assert_close(got, F.linear(x, w, b), atol=1e-5, rtol=1e-5)


def test_primitive_cache_is_capped_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    onednn_linears(torch.nn.Linear(4, 3))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "32"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    onednn_linears(torch.nn.Linear(4, 3))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
