"""The vLLM backend cannot run here (no GPU): its clear errors, and the weight naming that sync_weights sends."""
import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.rollout import RolloutBackendUnavailable, make_backend
from posttrain.rollout.vllm import vllm_named_weights


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_without_vllm_installed_the_error_says_how_to_get_it(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(RolloutBackendUnavailable, match=r"posttrain\[vllm\]"):
        make_backend("vllm", *tiny)


def test_without_a_gpu_the_error_says_so(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RolloutBackendUnavailable, match="CUDA GPU"):
        make_backend("vllm", *tiny)


def test_unknown_backend_name_lists_the_known_ones(tiny):
    with pytest.raises(ValueError, match=r"'sglang'.*\['hf', 'vllm'\]"):
        make_backend("sglang", *tiny)


def test_plain_model_weights_keep_their_hf_names(tiny):
    model, _ = tiny
    sent = dict(vllm_named_weights(model))
    assert sent.keys() == model.state_dict().keys()
    assert all(torch.equal(sent[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("use_dora", [False, True])
def test_peft_model_is_sent_merged_under_base_names_without_touching_it(tiny_model_dir, use_dora):
    import copy

    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    names = set(base.state_dict())
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "lm_head"], use_dora=use_dora)
    peft_model = get_peft_model(base, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a non-zero update
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    sent = dict(vllm_named_weights(peft_model))
    oracle = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(sent) == names == set(oracle)
    for k in names:
        assert torch.allclose(sent[k], oracle[k], atol=1e-6), k
    assert not torch.allclose(sent["model.layers.0.self_attn.q_proj.weight"],
                              before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])
    assert all(torch.equal(v, before[k]) for k, v in peft_model.state_dict().items()), "the policy was modified"
