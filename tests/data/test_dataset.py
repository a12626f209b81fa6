import pytest

from posttrain.data.dataset import Stats, build_sft_examples
from posttrain.data.formats import DataError, load_rows
from posttrain.data.inspect import inspect_rows, marked_text

U = {"role": "user", "content": "What is 2 + 3?"}
A = {"role": "assistant", "content": "2 + 3 = 5."}
LONG = " ".join(["the code looks great"] * 20)
ROWS = [
    {"messages": [U, A]},
    {"prompt": "the code", "completion": " looks great", "rejected": " is a bug"},
    {"prompt": "the code", "completion": ""},
    {"prompt": "review", "completion": LONG},
    {"messages": [U]},
    {"text": "print total", "label": False},
]


def test_build_counts_kept_truncated_dropped(tok, write_jsonl):
    rows = load_rows(write_jsonl("sft.jsonl", ROWS), kind="sft")
    examples, stats = build_sft_examples(rows, tok, max_length=40, completion_only_loss=True)
    assert stats == Stats(kept=4, truncated=1, dropped={"empty completion": 1, "no assistant message": 1}, sequences=5)
    assert [e.negative for e in examples] == [False, False, True, False, True]
    assert max(len(e.input_ids) for e in examples) == 40
    assert stats.summary() == ("kept 4 rows (1 truncated), dropped 2 (empty completion: 1, no assistant message: 1)")


def test_template_failure_is_a_data_error_naming_the_row(tok, write_jsonl):
    strict = tok.__class__.from_pretrained(tok.name_or_path)
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}"
                            "{% endif %}{{ m['content'] }}{% endfor %}")
    path = write_jsonl("t.jsonl", [{"messages": [U, A]}, {"messages": [U, {"role": "tool", "content": "x"}, A]}])
    with pytest.raises(DataError) as info:
        build_sft_examples(load_rows(path), strict, max_length=64)
    assert str(info.value).splitlines()[1].startswith(f"  {path}:2: field 'messages': expected a row the tokenizer "
                                                      "and chat template accept, found TemplateError: no tools here")


def test_validation_runs_first_and_nothing_left_is_an_error(tok):
    with pytest.raises(DataError, match=r"<rows>\[row 2\]: field 'text': expected a str"):
        build_sft_examples([{"text": "ok"}, {"text": 3}], tok, max_length=64)
    with pytest.raises(DataError, match=r"no usable row among 1: kept 0 rows .* \(empty completion: 1\)"):
        build_sft_examples([{"prompt": "p", "completion": ""}], tok, max_length=64)


def test_inspect_marks_trained_tokens_and_counts(tok):
    report = inspect_rows(ROWS, tok, max_length=40, completion_only_loss=True, n=3, color=False)
    lines = report.splitlines()
    assert "[[2 + 3 = 5.<|im_end|>]]\n" in report
    assert "the code[[ looks great<|im_end|>]]" in report and "the code[- is a bug-]" in report
    assert "--- row 2 (<rows>[row 2]): negative," in report
    assert "--- row 3 (<rows>[row 3]): dropped: empty completion" in report
    assert lines[-1] == ("=== kept 4 rows (1 truncated), dropped 2 (empty completion: 1, no assistant message: 1); "
                         "5 sequences")
    colored = inspect_rows(ROWS[:1], tok, max_length=64, color=True)
    assert "\033[42;30m2 + 3 = 5.<|im_end|>\033[0m" in colored


def test_marked_text_round_trips(tok):
    examples, _ = build_sft_examples(ROWS[:2], tok, max_length=64)
    for e in examples:
        plain = marked_text(e, tok).replace("[[", "").replace("]]", "").replace("[-", "").replace("-]", "")
        assert plain == tok.decode(e.input_ids)


def test_arrow_rows_with_null_columns_from_mixed_parquet(tok, tmp_path):
    """Parquet/hub rows of mixed formats come back with every column, null where absent: still fine."""
    import datasets

    path = str(tmp_path / "mixed.parquet")
    datasets.Dataset.from_dict({"messages": [[U, A], None], "prompt": [None, "the code"],
                                "completion": [None, " looks great"]}).to_parquet(path)
    rows = load_rows(path, kind="sft")
    assert rows[0]["prompt"] is None and rows[1]["messages"] is None
    examples, stats = build_sft_examples(rows, tok, max_length=64)
    assert stats.kept == 2 and not any(e.negative for e in examples)
    assert tok.decode([t for t, m in zip(examples[0].input_ids, examples[0].mask) if m]) == "2 + 3 = 5.<|im_end|>"
