"""float32 linears on oneDNN (`core.fast_linear`): F.linear's values and gradients to float rounding, the
fallbacks, and which algorithms the engine switches."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from posttrain.core.fast_linear import _Linear, onednn_available, onednn_linears

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_f_linear(bias):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g, requires_grad=True)
    b = torch.randn(24, generator=g, requires_grad=True) if bias else None
    x = torch.randn(3, 7, 40, generator=g).transpose(0, 1).requires_grad_()   # strided input: copied first
    up = torch.randn(7, 3, 24, generator=g)
    ref = F.linear(x, w, b)
    got = _Linear.apply(x, w, b)
    assert got.shape == ref.shape == (7, 3, 24)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    params = (x, w) + ((b,) if bias else ())
    for r, q in zip(torch.autograd.grad((ref * up).sum(), params), torch.autograd.grad((got * up).sum(), params)):
        torch.testing.assert_close(q, r, atol=1e-5, rtol=1e-5)


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


def test_online_algorithms_switch_offline_ones_do_not():
    from posttrain.algorithms.grpo import GRPO
    from posttrain.algorithms.sft import SFT
    from posttrain.core.algorithm import Algorithm

    assert GRPO.onednn_linear and not SFT.onednn_linear and not Algorithm.onednn_linear


@pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch build")
def test_primitive_cache_is_bounded_unless_the_user_chose(monkeypatch):
    # varying token counts would otherwise grow oneDNN's 1024-entry cache step after step (module comment)
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    onednn_linears(torch.nn.Linear(4, 3))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "32"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    onednn_linears(torch.nn.Linear(4, 3))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
