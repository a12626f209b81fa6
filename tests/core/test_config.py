import pytest

from posttrain.algorithms.sft import SFTConfig
from posttrain.config import ConfigError, describe, load_config, to_yaml


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("max_steps: 7\nlearning_rate: 0.001\ndata:\n  train: a.jsonl\nlora:\n  r: 4\n")
    cfg = load_config(SFTConfig, str(p), ["max_steps=9", "data.eval=[b.jsonl, c.jsonl]", "loss=dft"])
    assert cfg.max_steps == 9 and cfg.learning_rate == 0.001 and cfg.lora.r == 4
    assert list(cfg.data.eval) == ["b.jsonl", "c.jsonl"] and cfg.loss == "dft"
    assert "max_steps: 9" in to_yaml(cfg)


@pytest.mark.parametrize("bad, named, hint", [
    (["max_step=3"], "max_step", "max_steps"),
    (["data.trian=x"], "data.trian", "data.train"),
    (["lora.rank=8"], "lora.rank", "lora.r"),
])
def test_unknown_key_names_key_and_nearest(bad, named, hint):
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, bad)
    assert f"'{named}'" in str(e.value) and f"'{hint}'" in str(e.value)


def test_unknown_key_in_file_names_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*learning_rat.*learning_rate"):
        load_config(SFTConfig, str(p))


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(SFTConfig, None, ["max_steps=many"])


def test_every_key_documented():
    rows = describe(SFTConfig)
    keys = {k for k, _, _ in rows}
    for shared in ("model", "data.train", "data.eval", "output_dir", "max_steps", "save_steps", "seed",
                   "learning_rate", "batch_size", "grad_accum", "max_length", "lora.r", "lora.alpha",
                   "lora.target_modules", "loss", "unlikelihood_alpha"):
        assert shared in keys
    assert all(meaning for _, _, meaning in rows)


def test_mixed_precision_no_survives_yaml(tmp_path):
    from posttrain.core.engine import mixed_precision_name

    p = tmp_path / "r.yaml"
    p.write_text("mixed_precision: no\n")
    cfg = load_config(SFTConfig, str(p), [])
    assert mixed_precision_name(cfg.mixed_precision) == "no"
    assert mixed_precision_name(load_config(SFTConfig, None, ["mixed_precision=no"]).mixed_precision) == "no"
    assert mixed_precision_name("bf16") == "bf16"
    with pytest.raises(ValueError, match="mixed_precision"):
        mixed_precision_name("fp8")
