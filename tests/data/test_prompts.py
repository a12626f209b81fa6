"""Prompt data of online algorithms: rendering, the length budget, max_rows, reasons for drops."""
import json

import pytest
from transformers import AutoTokenizer

from posttrain.data.prompts import load_prompts, user_text


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_texts_rows_budget_and_max_rows(tok, tmp_path):
    rows = [{"prompt": "What is 1 + 2?", "answer": "3"}, {"prompt": "word " * 200, "answer": "x"},
            {"prompt": [{"role": "user", "content": "Hi"}], "answer": "4"}, {"prompt": "Last?", "answer": "5"}]
    p = load_prompts(_write(tmp_path / "p.jsonl", rows), tok, budget=32)
    assert len(p) == 3 and p.dropped == {"longer than max_length - max_new_tokens = 32 tokens": 1}
    assert p.texts[0] == "What is 1 + 2?"                                  # plain text stays as it is
    assert p.texts[1] == tok.apply_chat_template(rows[2]["prompt"], tokenize=False, add_generation_prompt=True)
    assert p.rows[1]["prompt"] == rows[2]["prompt"] and p.columns(1) == {"answer": "4"}
    first_two = load_prompts(_write(tmp_path / "p.jsonl", rows), tok, budget=32, max_rows=2)
    assert first_two.texts == p.texts[:2]                                 # the first usable rows


def test_template_replaces_the_chat_template(tok, tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "2 + 2?"}]}]
    p = load_prompts(_write(tmp_path / "p.jsonl", rows), tok, budget=32, template="Q: {prompt}\nA:")
    assert p.texts == ["Q: 2 + 2?\nA:"] and user_text("plain") == "plain"


def test_messages_without_a_chat_template_name_the_fix(tok, tmp_path):
    bare = AutoTokenizer.from_pretrained(tok.name_or_path)
    bare.chat_template = None
    path = _write(tmp_path / "p.jsonl", [{"prompt": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(ValueError, match="no chat template; set prompt_template"):
        load_prompts(path, bare, budget=32)
