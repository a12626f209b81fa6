"""The lean rotary backward: the same forward bit for bit, the same gradients as autograd's."""
import copy

import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama

from posttrain.core.fast_rotary import _Rotary, lean_rotary


def _original():
    f = modeling_llama.apply_rotary_pos_emb
    return getattr(f, "posttrain_original", f)


def test_rotary_function_value_and_gradients():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 8, generator=g, requires_grad=True)
    k = torch.randn(2, 1, 5, 8, generator=g, requires_grad=True)  # fewer key heads (GQA) broadcast the same way
    ang = torch.randn(2, 5, 8, generator=g)
    cos, sin = ang.cos(), ang.sin()
    wq, wk = torch.randn(2, 3, 5, 8, generator=g), torch.randn(2, 1, 5, 8, generator=g)
    rq, rk = _original()(q, k, cos, sin)
    ref = torch.autograd.grad((rq * wq).sum() + (rk * wk).sum(), (q, k))
    oq, ok = _Rotary.apply(q, k, cos.unsqueeze(1), sin.unsqueeze(1))
    got = torch.autograd.grad((oq * wq).sum() + (ok * wk).sum(), (q, k))
    assert torch.equal(oq, rq) and torch.equal(ok, rk)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    c64, s64 = cos.double().unsqueeze(1), sin.double().unsqueeze(1)
    assert torch.autograd.gradcheck(lambda a, b: _Rotary.apply(a, b, c64, s64), (q64, k64))


def test_model_uses_lean_rotary_same_logits_and_gradients(tiny_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = copy.deepcopy(model)
    assert lean_rotary(model) and lean_rotary(model)  # switched; a second call finds it switched
    assert hasattr(modeling_llama.apply_rotary_pos_emb, "posttrain_original")
    ids = torch.randint(4, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    lean_logits = model(input_ids=ids).logits
    lean_logits.square().mean().backward()
    with monkeypatch.context() as m:
        m.setattr(modeling_llama, "apply_rotary_pos_emb", _original())
        plain_logits = plain(input_ids=ids).logits
        plain_logits.square().mean().backward()
    assert torch.equal(lean_logits, plain_logits)
    for (n, p), q in zip(plain.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)
