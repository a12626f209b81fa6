"""The engine switches on the lean backwards (core/speedups.py) for the model it trains."""


def test_engine_model_gets_the_lean_backwards(tiny_model_dir, tmp_path):
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core import fast_norm
    from posttrain.core.engine import Engine

    from tests.core.helpers import sft_overrides, write_sft_jsonl

    data = write_sft_jsonl(tmp_path / "d.jsonl", n=8)
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out")))
    eng = Engine(cfg, SFT(cfg))
    norms = [m for m in eng.model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert norms and all(m.forward.__func__ is fast_norm._forward for m in norms)
    from transformers.models.llama import modeling_llama
    assert hasattr(modeling_llama.apply_rotary_pos_emb, "posttrain_original")
