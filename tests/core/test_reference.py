"""The LoRA reference (adapter disabled) gives the policy back in its training mode, even after an error."""
import pytest
import torch

from posttrain.config import LoraConfig
from posttrain.core.models import Reference, apply_lora


def test_lora_reference_restores_train_mode_after_an_error(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4))
    model.train()
    ref = Reference(model)
    with pytest.raises(RuntimeError, match="out of memory"):
        with ref.model() as m:
            assert not m.training and not torch.is_grad_enabled()
            raise RuntimeError("CUDA out of memory")
    assert model.training
    with ref.model():
        pass
    assert model.training
