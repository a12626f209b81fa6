"""SFT's default forward (output head only at loss-carrying positions; a right-padded batch's attention over
each row's real tokens only) equals the plain forward (full head, padding mask): loss and every gradient."""
import pytest
import torch

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine
from posttrain.core.logprobs import token_logps

from tests.core.helpers import sft_overrides, write_sft_jsonl


def _grads(model):
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("packing,loss", [(False, "nll"), (True, "nll"), (False, "unlikelihood")])
def test_fast_logps_equal_plain_loss_and_gradients(tiny_model_dir, tmp_path, packing, loss):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=8, negatives=loss == "unlikelihood")
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), batch_size=8,
                                                     loss=loss, **{"data.packing": str(packing).lower()}))
    eng = Engine(cfg, SFT(cfg))
    algo, model = eng.algo, eng.model
    batch = algo.micro_batches(0)[0]
    if not packing:  # rows of different lengths: the padding is real
        lengths = batch.attention_mask.sum(-1)
        assert lengths.min() < lengths.max() == batch.input_ids.shape[1]
        assert algo.varlen  # the default path of a plain causal model on sdpa
    norm = type("N", (), {"num_items": batch.num_items})()
    fast, _ = algo.loss(model, batch, norm)
    g_fast, plain_lp, g_plain = _against_plain(algo, model, batch, fast)
    assert g_fast.keys() == g_plain.keys() and len(g_fast) == len(list(model.parameters()))
    for n in g_fast:
        torch.testing.assert_close(g_fast[n], g_plain[n], atol=1e-5, rtol=1e-5, msg=n)
    # the selected log-probs are the plain ones where a token carries loss, exactly 0 elsewhere
    with torch.no_grad():
        lp = algo.logps(model, batch)
    sel = (batch.mask + batch.neg_mask) > 0
    torch.testing.assert_close(lp[sel], plain_lp.detach()[sel], atol=1e-5, rtol=1e-5)
    assert torch.all(lp[~sel] == 0)



def _against_plain(algo, model, batch, fast):
    """Backward of the fast loss, then the plain padded computation (full forward, loss_fn) and its backward:
    asserts the two losses agree within 1e-5 and returns (fast grads, plain log-probs, plain grads)."""
    fast.backward()
    g_fast = _grads(model)
    plain_lp = token_logps(model, batch.input_ids, batch.attention_mask, batch.position_ids)
    plain, _ = algo.loss_fn(plain_lp, batch.mask, batch.neg_mask, batch.num_items)
    plain.backward()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    return g_fast, plain_lp, _grads(model)

def _uneven_sft_jsonl(path):
    """Rows from 4 to ~60 tokens: a padded batch of them is mostly padding in its short rows."""
    import json

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    with open(path, "w") as f:
        for i, n in enumerate([1, 30, 3, 12, 1, 25, 6, 2]):
            reply = " ".join(words[(i + k) % len(words)] for k in range(n))
            f.write(json.dumps({"messages": [{"role": "user", "content": "q" * (1 + i % 3)},
                                             {"role": "assistant", "content": reply}]}) + "\n")
    return str(path)


def _engine(tiny_model_dir, tmp_path, **kw):
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, str(tmp_path / "d.jsonl"), str(tmp_path / "out"),
                                                     batch_size=8, max_length=128, **kw))
    return Engine(cfg, SFT(cfg))


@pytest.mark.parametrize("loss,lora", [("nll", 0), ("dft", 0), ("nll", 4)])
def test_unpadded_batch_equals_padded_loss_and_gradients(tiny_model_dir, tmp_path, monkeypatch, loss, lora):
    """padding_free (default): the body runs on one row of the batch's real tokens; loss and every (trainable)
    gradient equal the padded computation (padding mask, full head) within 1e-5, on rows of very different
    lengths; LoRA too. (unlikelihood: test_fast_logps_equal_plain_loss_and_gradients.)"""
    import posttrain.core.unpad as unpad

    _uneven_sft_jsonl(tmp_path / "d.jsonl")
    eng = _engine(tiny_model_dir, tmp_path, loss=loss, **{"lora.r": lora})
    algo, model = eng.algo, eng.model
    assert algo.unpad
    batch = algo.micro_batches(0)[0]
    lengths = batch.attention_mask.sum(-1)
    assert lengths.max() >= 4 * lengths.min()  # very different lengths: most of a short row is padding
    shapes = []
    inner = unpad.hidden_states
    monkeypatch.setattr(unpad, "hidden_states", lambda m, ids, *a, **k: shapes.append(ids.shape) or inner(m, ids, *a, **k))
    norm = type("N", (), {"num_items": batch.num_items})()
    fast, _ = algo.loss(model, batch, norm)
    assert shapes == [(1, int(lengths.sum()))]  # one row holding the real tokens only, no padding position
    g_fast, plain_lp, g_plain = _against_plain(algo, model, batch, fast)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert g_fast.keys() == g_plain.keys() and len(g_fast) == len(trainable) and (lora == 0) == (
        len(trainable) == len(list(model.parameters())))
    for n in g_fast:
        torch.testing.assert_close(g_fast[n], g_plain[n], atol=1e-5, rtol=1e-5, msg=n)


def test_padding_free_off_runs_padded_with_the_same_loss(tiny_model_dir, tmp_path, monkeypatch):
    import posttrain.core.unpad as unpad

    _uneven_sft_jsonl(tmp_path / "d.jsonl")
    on = _engine(tiny_model_dir, tmp_path)
    batch = on.algo.micro_batches(0)[0]
    with torch.no_grad():
        lp_on = on.algo.logps(on.model, batch)
    off = _engine(tiny_model_dir, tmp_path, padding_free="false")
    assert not off.algo.unpad and off.algo.varlen
    monkeypatch.setattr(unpad, "hidden_states", None)  # the switch is off: the unpadded path is never entered
    with torch.no_grad():
        lp_off = off.algo.logps(off.model, batch)
    torch.testing.assert_close(lp_on, lp_off, atol=1e-5, rtol=1e-5)


def test_unpad_applies_only_to_known_decoders_on_varlen_and_right_padding():
    from posttrain.core.unpad import can_unpad, is_right_padded

    model = lambda kind: type("M", (), {"config": type("C", (), {"model_type": kind})()})()  # noqa: E731
    assert can_unpad(model("llama"), True) and can_unpad(model("qwen2"), True) and can_unpad(model("mistral"), True)
    assert not can_unpad(model("llama"), False)            # eager / sliding-window attention: no varlen
    assert not can_unpad(model("gpt2"), True)              # other decoders keep the padded forward
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))   # left padding
    assert not is_right_padded(torch.tensor([[1, 0, 1]]))              # a hole
    assert not is_right_padded(torch.tensor([[0, 0, 0], [1, 1, 1]]))   # an empty row


def test_eager_attention_falls_back_to_padded(tiny_model_dir, tmp_path):
    _uneven_sft_jsonl(tmp_path / "d.jsonl")
    eng = _engine(tiny_model_dir, tmp_path, attn_implementation="eager")
    assert not eng.algo.varlen and not eng.algo.unpad
    batch = eng.algo.micro_batches(0)[0]
    norm = type("N", (), {"num_items": batch.num_items})()
    loss, _ = eng.algo.loss(eng.model, batch, norm)
    assert torch.isfinite(loss)


def test_packed_and_padding_free_batches_run_the_same_decoder_row(tiny_model_dir, tmp_path):
    """The same examples, packed (`data.packing`) or padded and run padding-free (the default), reach the
    decoder as the same single row: equal input ids and position ids (restarting per example), so both paths
    do the same work per step (bench/README.md, "SFT packed vs padded: the same work"); equal losses."""
    _uneven_sft_jsonl(tmp_path / "d.jsonl")
    rows, losses = {}, {}
    for packing in ("true", "false"):
        eng = _engine(tiny_model_dir, tmp_path, **{"data.packing": packing})
        batch = eng.algo.micro_batches(0)[0]
        seen = []
        hook = eng.model.get_decoder().register_forward_pre_hook(
            lambda mod, args, kw: seen.append((kw["input_ids"].clone(), kw["position_ids"].clone())), with_kwargs=True)
        norm = type("N", (), {"num_items": batch.num_items})()
        with torch.no_grad():
            losses[packing] = eng.algo.loss(eng.model, batch, norm)[0]
        hook.remove()
        assert len(seen) == 1 and seen[0][0].shape[0] == 1
        rows[packing] = seen[0]
    assert torch.equal(rows["true"][0], rows["false"][0]) and torch.equal(rows["true"][1], rows["false"][1])
    assert int((rows["true"][1] == 0).sum()) == 8  # eight examples, each restarting at position 0
    torch.testing.assert_close(losses["true"], losses["false"], atol=1e-6, rtol=1e-6)
