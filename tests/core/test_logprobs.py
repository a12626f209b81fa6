import torch
from transformers import AutoModelForCausalLM

from posttrain.core.logprobs import full_logps_reference, token_logps


def _batch(vocab, b=3, t=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (b, t), generator=g)
    am = torch.ones(b, t, dtype=torch.long)
    if b > 1:
        am[1, t - 5:] = 0
    return ids, am


def test_chunked_logps_equal_full_forward(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids, am = _batch(model.config.vocab_size)
    ref = full_logps_reference(model, ids, am)
    for chunk in (1, 7, 1024):
        got = token_logps(model, ids, am, chunk_size=chunk)
        assert got.shape == ids.shape and got.dtype == torch.float32
        assert torch.all(got[:, 0] == 0)
        torch.testing.assert_close(got[am.bool()], ref[am.bool()], atol=1e-5, rtol=1e-5)


def test_chunked_gradients_equal_full(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids, am = _batch(model.config.vocab_size, seed=1)
    mask = am.float()
    (token_logps(model, ids, am, chunk_size=5) * mask).sum().backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (full_logps_reference(model, ids, am) * mask).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(g1[n], p.grad, atol=1e-5, rtol=1e-4)


def test_entropy_matches_definition(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids, am = _batch(model.config.vocab_size, b=1, t=6)
    _, ent = token_logps(model, ids, with_entropy=True, chunk_size=2)
    with torch.no_grad():
        p = torch.softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
    expected = -(p * p.log()).sum(-1)
    torch.testing.assert_close(ent[:, 1:], expected, atol=1e-5, rtol=1e-5)


def test_target_logp_entropy_function_values_and_gradients():
    # forward: the same ops as log_softmax-gather and -(p * log p).sum; backward: dlogp = onehot - p and
    # dH = -p (log p + H), against autograd, with the entropy in the loss or only logged (no gradient then)
    from posttrain.core.logprobs import _TargetLogpEntropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 10, 5, 1])
    w, we = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    lp, ent = _TargetLogpEntropy.apply(logits, targets)
    ls = torch.log_softmax(logits, -1)
    ref_lp, ref_ent = ls.gather(-1, targets[:, None]).squeeze(-1), -(ls.exp() * ls).sum(-1)
    torch.testing.assert_close(lp, ref_lp)
    torch.testing.assert_close(ent, ref_ent)
    for loss, ref in (((lp * w).sum(), (ref_lp * w).sum()), ((lp * w + ent * we).sum(), (ref_lp * w + ref_ent * we).sum()),
                      ((ent * we).sum(), (ref_ent * we).sum())):
        (got,) = torch.autograd.grad(loss, logits, retain_graph=True)
        (want,) = torch.autograd.grad(ref, logits, retain_graph=True)
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda x: _TargetLogpEntropy.apply(x, targets), (logits,))
    # float32 forward: bit for bit the ops the plain path ran
    x = logits.detach().float()
    logz = torch.logsumexp(x, -1)
    lp32, ent32 = _TargetLogpEntropy.apply(x, targets)
    assert torch.equal(lp32, x.gather(-1, targets[:, None]).squeeze(-1) - logz)
    assert torch.equal(ent32, logz - (torch.softmax(x, -1) * x).sum(-1))


def test_target_logp_function_value_and_gradient():
    # the lean backward g * (onehot - softmax) against autograd through log_softmax + gather, and gradcheck
    from posttrain.core.logprobs import _TargetLogp

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 10, 5, 1])
    w = torch.randn(6, generator=g, dtype=torch.float64)
    got = _TargetLogp.apply(logits, targets)
    (gl,) = torch.autograd.grad((got * w).sum(), logits)
    ref = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    (rl,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(gl, rl)
    assert torch.autograd.gradcheck(lambda x: _TargetLogp.apply(x, targets), (logits,))
