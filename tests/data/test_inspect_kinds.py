"""Trip 10: `data inspect` shows what every algorithm trains on: preference pairs and rankings (RM, DPO),
prompt-only rows (GRPO, PPO) and unpaired rows (SFT negatives), from any algorithm's config."""
import os
import shutil

from posttrain.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
U = lambda text: [{"role": "user", "content": text}]  # noqa: E731
A = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731


def test_dpo_recipe_shows_pairs_rankings_and_counts(tiny_model_dir, write_jsonl, tmp_path, capsys):
    data = write_jsonl("pref.jsonl", [
        {"prompt": "2+2?", "chosen": " 4", "rejected": " 5"},
        {"prompt": U("3+3?"), "responses": [A("6"), A("7"), A("8")]},
        {"chosen": U("hi") + A("hello"), "rejected": U("hi") + A("go away")},
    ])
    recipe = shutil.copy(os.path.join(ROOT, "recipes", "dpo-tiny.yaml"), tmp_path / "dpo-tiny.yaml")
    args = ["data", "inspect", "--config", str(recipe), f"model={tiny_model_dir}", f"data.train={data}", "n=3"]
    assert main(args) == 0  # before: "unknown key 'beta'"
    out = capsys.readouterr().out
    assert out.startswith("# data inspect: dpo on ")
    assert "--- example 1: pair, 1 pair(s)" in out and "--- example 2: ranking of 3, 3 pair(s)" in out
    assert "each pair weighs 0.333333" in out  # a ranking row weighs 1 in total: 1/3 per pair
    assert "chosen (response 1" in out and "rejected (response 3" in out and "[[" in out
    assert "=== kept 3 rows, 5 pairs (0 truncated), dropped 0" in out
    assert main(["data", "inspect", "rm", f"model={tiny_model_dir}", f"data.train={data}", "n=1"]) == 0
    assert capsys.readouterr().out.startswith("# data inspect: rm on ")


def test_prompt_only_rows_show_rendered_prompt_budget_and_reward_columns(tiny_model_dir, write_jsonl, tmp_path, capsys):
    data = write_jsonl("prompts.jsonl", [{"prompt": "Compute 2 + 3.", "answer": "5"},
                                         {"prompt": "x " * 200, "answer": "0"}])
    recipe = shutil.copy(os.path.join(ROOT, "recipes", "dapo-tiny.yaml"), tmp_path / "dapo-tiny.yaml")  # a GRPO variant
    args = ["data", "inspect", "--config", str(recipe), f"model={tiny_model_dir}", f"data.train={data}", "max_length=64",
            "max_new_tokens=16", 'prompt_template="Q: {prompt}\\nA:"']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("# data inspect: grpo on ")
    assert "budget 48 tokens" in out and "reward functions receive the columns: answer" in out
    assert "Q: Compute 2 + 3.\nA:" in out and "=== kept 1 prompts, dropped 1 longer than 48 tokens" in out


def test_unpaired_negatives_are_shown_as_penalised(tiny_model_dir, write_jsonl, capsys):
    data = write_jsonl("kto.jsonl", [{"prompt": "2+2?", "completion": " 4", "label": True},
                                     {"prompt": "2+2?", "completion": " 5", "label": False}])
    assert main(["data", "inspect", "sft", f"model={tiny_model_dir}", f"data.train={data}", "loss=unlikelihood"]) == 0
    out = capsys.readouterr().out
    assert "positive" in out and "negative" in out and "[-" in out


def test_kto_unpaired_rows_show_labels(tiny_model_dir, write_jsonl, capsys):
    data = write_jsonl("kto2.jsonl", [{"prompt": "2+2?", "completion": " 4", "label": True},
                                      {"prompt": "2+2?", "completion": " 5", "label": False}])
    assert main(["data", "inspect", "kto", f"model={tiny_model_dir}", f"data.train={data}"]) == 0
    out = capsys.readouterr().out
    assert "--- example 1: desirable" in out and "--- example 2: undesirable" in out
    assert "=== kept 2 (1 desirable, 1 undesirable), dropped 0" in out
