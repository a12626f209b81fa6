"""The Python API: the README's example runs as written; the same config objects as the command line."""
import os
import re
import shutil

import pytest

import posttrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    shutil.copytree(os.path.join(ROOT, "recipes"), tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), scope)
    result = scope["result"]
    assert result.output_dir == str(tmp_path / "runs" / "notebook-sft")
    assert result.metrics["loss"] > 0 and result.metrics["grad_norm"] > 0
    assert os.path.exists(os.path.join(result.final_dir, "model.safetensors"))
    assert result.config.max_steps == 2 and "tiny-random" in result.config.model  # builtin: resolved to its folder
    assert scope["cfg"].beta == 0.2 and scope["cfg"].learning_rate == 5e-6
    # rerun: nothing left to do, and it says so in the metrics
    again = posttrain.train("sft", "recipes/sft-tiny.yaml", model="builtin:tiny-random", max_steps=2, batch_size=4,
                            data={"train": "my_sft.jsonl", "eval": None}, report_to=[], output_dir="runs/notebook-sft")
    assert again.metrics["already_finished"] and again.metrics["loss"] == result.metrics["loss"]


def test_make_config_matches_the_command_line_and_rejects_mistakes(tmp_path):
    from posttrain.algorithms.dpo import DPOConfig
    from posttrain.config import ConfigError, load_config

    recipe = os.path.join(ROOT, "recipes", "dpo-tiny.yaml")
    cli = load_config(DPOConfig, recipe, ["beta=0.3", "data.train=x.jsonl"])
    api = posttrain.make_config("dpo", recipe, beta=0.3, **{"data.train": "x.jsonl"})
    assert api == cli
    assert posttrain.make_config("dpo", {"beta": 0.3, "data": {"train": "x.jsonl"}}, ) == \
        load_config(DPOConfig, None, ["beta=0.3", "data.train=x.jsonl"])
    with pytest.raises(ConfigError, match="unknown key 'bta'; did you mean 'beta'"):
        posttrain.make_config("dpo", recipe, bta=0.3)
    with pytest.raises(ValueError, match="unknown algorithm 'dop'"):
        posttrain.make_config("dop")
    assert isinstance(posttrain.config_class("dpo")(), DPOConfig)
