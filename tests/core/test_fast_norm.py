"""The lean RMSNorm backward: the same forward bit for bit, the same gradients as autograd's."""
import copy

import torch
from transformers import AutoModelForCausalLM

from posttrain.core.fast_norm import _RMSNorm, lean_rms_norms


def test_rms_norm_function_value_and_gradients():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(0)
    norm = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
    x = torch.randn(3, 5, 16, generator=g, requires_grad=True)
    up = torch.randn(3, 5, 16, generator=g)
    ref = norm(x)
    rx, rw = torch.autograd.grad((ref * up).sum(), (x, norm.weight))
    got = _RMSNorm.apply(x, norm.weight, 1e-6)
    gx, gw = torch.autograd.grad((got * up).sum(), (x, norm.weight))
    assert torch.equal(got, ref)
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)
    x64 = x.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: _RMSNorm.apply(a, w, 1e-6), (x64, norm.weight.detach().double()
                                                                             .requires_grad_()))


def test_model_norms_switched_same_logits_and_gradients(tiny_model_dir):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lean = copy.deepcopy(plain)
    # every decoder layer's two norms and the final norm
    assert lean_rms_norms(lean) == 2 * plain.config.num_hidden_layers + 1
    assert lean_rms_norms(lean) == 0  # already switched: nothing done twice
    ids = torch.randint(4, plain.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    a, b = plain(input_ids=ids).logits, lean(input_ids=ids).logits
    assert torch.equal(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    for (n, p), q in zip(plain.named_parameters(), lean.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)
    c = copy.deepcopy(lean)  # a copy (the reference model) keeps the lean forward, bound to itself
    assert torch.equal(c(input_ids=ids).logits, a.detach())
    assert c.model.norm.forward.__self__ is c.model.norm
