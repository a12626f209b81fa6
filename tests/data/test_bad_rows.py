"""Bad rows that used to get through: identical chosen/rejected, non-finite numbers, unknown roles, a
UTF-8 byte-order mark, and empty files."""
import pytest

from posttrain.data import DataError, build_sft_examples, load_rows
from posttrain.data.chat import encode_prompt
from posttrain.data.preference import build_preference_examples

U = {"role": "user", "content": "hi"}


def bot(text):
    return [{"role": "assistant", "content": text}]


def test_chosen_identical_to_rejected_is_dropped_and_counted(tok, write_jsonl):
    rows = [{"prompt": "p", "chosen": " a", "rejected": " b"}, {"prompt": "p", "chosen": " a", "rejected": " a"},
            {"chosen": [U, *bot("same")], "rejected": [U, *bot("same")]},
            {"prompt": "p", "responses": [" x", " x", " y"]}]  # a ranking keeps its distinct pairs only
    examples, stats = build_preference_examples(rows, tok, max_length=64)
    assert stats.kept == 2 and stats.dropped == {"chosen identical to rejected": 2}
    assert "chosen identical to rejected: 2" in stats.summary()
    assert examples[1].pairs == [(0, 2), (1, 2)] and stats.pairs == 3
    path = write_jsonl("same.jsonl", [rows[1], rows[1]])
    with pytest.raises(DataError, match=rf"^{path}: no usable preference row among 2: .*\(chosen identical to "
                                        r"rejected: 2\)"):
        build_preference_examples(load_rows(path, kind="preference"), tok, max_length=64)


def test_nonfinite_numbers_are_row_errors_naming_file_line_field(write_jsonl):
    path = write_jsonl("pref.jsonl", ['{"prompt": "p", "chosen": " a", "rejected": " b", "margin": 1.5}',
                                      '{"prompt": "p", "chosen": " a", "rejected": " b", "margin": NaN}'])
    with pytest.raises(DataError, match=rf"{path}:2: field 'margin': expected a finite number, found nan"):
        load_rows(path, kind="preference")
    path = write_jsonl("prompts.jsonl", ['{"prompt": "p", "answer": 3}', '{"prompt": "p", "scores": [1, -Infinity]}'])
    with pytest.raises(DataError, match=rf"{path}:2: field 'scores\[1\]': expected a finite number, found -inf"):
        load_rows(path, kind="prompt")


def test_unknown_role_is_a_row_error_unless_the_template_names_it(tok, write_jsonl):
    path = write_jsonl("sft.jsonl", [{"messages": [U, *bot("ok")]},
                                     {"messages": [U, {"role": "wizard", "content": "hm"}, *bot("ok")]}])
    with pytest.raises(DataError, match=rf"{path}:2: field 'messages': expected message roles .* found role 'wizard' "
                                        r"in message 2"):
        build_sft_examples(load_rows(path, kind="sft"), tok, max_length=64)
    with pytest.raises(DataError, match=r"field 'rejected': .* found role 'wizard' in message 1"):
        wizard = [{"role": "wizard", "content": "b"}]
        build_preference_examples([{"prompt": [U], "chosen": bot("a"), "rejected": wizard}], tok, max_length=64)
    wizard_tok = tok.__class__.from_pretrained(tok.name_or_path)  # a template that knows the role accepts it
    wizard_tok.chat_template = "{% if false %}{{ 'wizard' }}{% endif %}" + tok.chat_template
    examples, _ = build_sft_examples(load_rows(path, kind="sft"), wizard_tok, max_length=64)
    assert len(examples) == 2
    assert encode_prompt({"prompt": [{"role": "wizard", "content": "q"}]}, wizard_tok).startswith("<|im_start|>wizard")


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "p", "completion": "c"}\n{"text": "t"}\n')
    rows = load_rows(str(path), kind="sft")
    assert rows == [{"prompt": "p", "completion": "c"}, {"text": "t"}] and rows.sources[1].line == 2
    arr = tmp_path / "bom.json"
    arr.write_bytes(b"\xef\xbb\xbf" + b'[{"prompt": "p", "completion": "c"}]')
    assert load_rows(str(arr), kind="sft") == [{"prompt": "p", "completion": "c"}]


@pytest.mark.parametrize("kind", ["sft", "preference", "prompt"])
def test_empty_file_says_no_rows(tmp_path, kind):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=rf"^{path}: no rows$"):
        load_rows(str(path), kind=kind)
