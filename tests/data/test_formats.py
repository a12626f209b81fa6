import json

import pytest

from posttrain.data.formats import DataError, Rows, Source, load_rows, validate_rows

USER = {"role": "user", "content": "What is 2 + 3?"}
BOT = {"role": "assistant", "content": "5"}


def test_jsonl_rows_keep_their_source_and_stay_untouched(write_jsonl):
    rows_in = [{"messages": [USER, BOT]}, {"prompt": "a", "completion": "b", "extra": 1}]
    path = write_jsonl("train.jsonl", [rows_in[0], "", rows_in[1]])  # blank line 2 is skipped
    rows = load_rows(path, kind="sft")
    assert isinstance(rows, Rows) and list(rows) == rows_in  # no hidden keys, extra columns kept
    assert rows.sources == [Source(path, 1), Source(path, 3)]
    assert rows.subset([1]).sources == [Source(path, 3)]


def test_json_array_parquet_folder_and_list(tmp_path, write_jsonl):
    import datasets

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.json").write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    datasets.Dataset.from_list([{"text": "three"}]).to_parquet(str(tmp_path / "d" / "b.parquet"))
    write_jsonl("d/c.jsonl", [{"text": "four"}])
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    rows = load_rows(str(tmp_path / "d"), kind="sft")
    assert [r["text"] for r in rows] == ["one", "two", "three", "four"]
    assert [str(s) for s in rows.sources] == [f"{tmp_path}/d/a.json[row 1]", f"{tmp_path}/d/a.json[row 2]",
                                              f"{tmp_path}/d/b.parquet[row 1]", f"{tmp_path}/d/c.jsonl:1"]
    both = load_rows([str(tmp_path / "d" / "c.jsonl"), str(tmp_path / "d" / "b.parquet")])
    assert [r["text"] for r in both] == ["four", "three"]


def test_hub_name_offline_error_names_the_spec(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fail at once instead of retrying the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"could not load 'nobody-here/no-such-set' as a hub data set \(split 'test'"):
        load_rows("nobody-here/no-such-set", split="test")
    with pytest.raises(DataError, match="ConnectionError"):
        load_rows(["nobody-here/no-such-set"])


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        load_rows(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="folder has no"):
        load_rows(str(tmp_path))


def test_malformed_jsonl_gives_one_error_with_every_bad_row(write_jsonl):
    good = {"messages": [USER, BOT]}
    lines = [good, good, '{"messages": [', good, {"messages": "hello"}, good, {"prompt": "p"}, good]
    path = write_jsonl("train.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_rows(path, kind="sft")
    msg = str(info.value)
    assert msg.startswith(f"3 bad rows in {path} ('sft' data):")
    body = msg.splitlines()[1:]
    assert body[0].startswith(f"  {path}:3: expected a JSON object, found invalid JSON (")
    assert body[1] == (f"  {path}:5: field 'messages': expected a list of {{role, content}} messages, found str")
    assert body[2] == (f"  {path}:7: field 'completion': expected a str or messages to go with 'prompt', "
                       "found missing")
    assert len(body) == 3 and "Traceback" not in msg


def test_error_is_capped_at_twenty_with_a_count(write_jsonl):
    path = write_jsonl("bad.jsonl", [{"text": i} for i in range(25)])
    with pytest.raises(DataError) as info:
        load_rows(path, kind="sft")
    lines = str(info.value).splitlines()
    assert len(info.value.problems) == 25
    assert lines[1] == f"  {path}:1: field 'text': expected a str, found int"
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 5 more"


def test_unreadable_lines_raise_without_kind(write_jsonl):
    path = write_jsonl("x.jsonl", [{"text": "a"}, "[1, 2]"])
    with pytest.raises(DataError, match=r"x.jsonl:2: expected a JSON object, found list"):
        load_rows(path)


@pytest.mark.parametrize("row, found", [
    ({"messages": [{"role": "user"}]}, "messages': expected a list of {role, content} messages, "
                                       "found a list whose item 0 has content missing"),
    ({"messages": [USER, 3]}, "found a list whose item 1 is int"),
    ({"prompt": "p", "completion": [BOT]}, "field 'completion': expected a str (like 'prompt'), found list"),
    ({"prompt": [USER], "completion": "c"}, "field 'completion': expected a list of {role, content} messages "
                                            "(like 'prompt'), found str"),
    ({"prompt": "p", "completion": "c", "rejected": 1}, "field 'rejected': expected a str (like 'prompt'), found int"),
    ({"prompt": "p", "completion": "c", "label": "no"}, "field 'label': expected a bool"),
    ({"messages": [USER, BOT], "rejected": "x"}, "field 'rejected'"),
    ({"chosen": "a"}, "expected one of 'messages', 'prompt' + 'completion' or 'text', found object with keys [chosen]"),
])
def test_sft_rows_rejected(row, found):
    with pytest.raises(DataError) as info:
        validate_rows([row], "sft", "rows.jsonl")
    assert str(info.value).splitlines()[1].startswith("  rows.jsonl[row 1]: ")
    assert found in str(info.value)


def test_sft_rows_accepted():
    validate_rows([{"messages": [USER, BOT]}, {"prompt": "p", "completion": "c", "rejected": "r", "label": True},
                   {"prompt": [USER], "completion": [BOT], "rejected": [BOT]}, {"text": "t", "messages": None},
                   {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]}]}],
                  "sft")


def test_preference_rows():
    other = {"role": "assistant", "content": "6"}
    validate_rows([{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1.5},
                   {"prompt": [USER], "chosen": [BOT], "rejected": [other]},
                   {"chosen": [USER, BOT], "rejected": [USER, other]},
                   {"prompt": "p", "responses": ["best", "worse", "worst"]},
                   {"prompt": [USER], "responses": [[BOT], [other]]}], "preference")
    bad = [{"prompt": "p", "chosen": "a"}, {"chosen": "a", "rejected": "b"},
           {"chosen": [USER, BOT], "rejected": [{"role": "user", "content": "x"}, other]},
           {"prompt": "p", "responses": ["only"]}, {"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"},
           {"prompt": [USER], "responses": ["a", "b"]}]
    with pytest.raises(DataError) as info:
        validate_rows(bad, "preference", "pref.jsonl")
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 6
    assert lines[0] == "  pref.jsonl[row 1]: field 'rejected': expected a str, found missing"
    assert lines[1] == "  pref.jsonl[row 2]: field 'prompt': expected a 'prompt' column when 'chosen'/'rejected' are str, found missing"
    assert "row 3]: field 'rejected': expected to share its first message" in lines[2]
    assert lines[3].endswith("field 'responses': expected a list of >= 2 str responses, best first, found 1 item(s)")
    assert lines[4].endswith("field 'margin': expected a number, found str")
    assert "row 6]: field 'responses': expected a list of >= 2 message lists" in lines[5]


def test_prompt_rows_keep_extra_columns(write_jsonl):
    path = write_jsonl("p.jsonl", [{"prompt": "2+2?", "answer": "4"}, {"prompt": [USER], "tests": ["assert f()"]},
                                   {"question": "no prompt"}])
    with pytest.raises(DataError, match=r"p.jsonl:3: field 'prompt': expected a str or a list of \{role, content\} "
                                        r"messages, found missing"):
        load_rows(path, kind="prompt")
    rows = load_rows(path)
    validate_rows(rows[:2], "prompt")
    assert rows[0]["answer"] == "4" and rows[1]["tests"] == ["assert f()"]
