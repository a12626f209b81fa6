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
    fast.backward()
    g_fast = _grads(model)
    plain_lp = token_logps(model, batch.input_ids, batch.attention_mask, batch.position_ids)
    plain, _ = algo.loss_fn(plain_lp, batch.mask, batch.neg_mask, batch.num_items)
    plain.backward()
    g_plain = _grads(model)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert g_fast.keys() == g_plain.keys() and len(g_fast) == len(list(model.parameters()))
    for n in g_fast:
        torch.testing.assert_close(g_fast[n], g_plain[n], atol=1e-5, rtol=1e-5, msg=n)
    # the selected log-probs are the plain ones where a token carries loss, exactly 0 elsewhere
    with torch.no_grad():
        lp = algo.logps(model, batch)
    sel = (batch.mask + batch.neg_mask) > 0
    torch.testing.assert_close(lp[sel], plain_lp.detach()[sel], atol=1e-5, rtol=1e-5)
    assert torch.all(lp[~sel] == 0)
