import pytest
import torch

from posttrain.data.formats import DataError, load_rows
from posttrain.data.preference import (PreferenceStats, build_preference_examples, encode_response,
                                       load_preference_examples, preference_collate, split_implicit_prompt)

U = {"role": "user", "content": "Review this code: print(x)"}


def bot(text):
    return [{"role": "assistant", "content": text}]


def test_conversational_pair_masks_response_and_ends_at_end_of_turn(tok):
    rows = [{"prompt": [U], "chosen": bot("x is undefined"), "rejected": bot("looks great"), "margin": 1.5}]
    (ex,), stats = build_preference_examples(rows, tok, max_length=64)
    assert stats == PreferenceStats(kept=1, truncated=0, pairs=1)
    assert ex.pairs == [(0, 1)] and ex.weight == 1.0 and ex.margin == 1.5
    for resp, text in zip(ex.responses, ["x is undefined", "looks great"]):
        marked = [t for t, m in zip(resp.input_ids, resp.mask) if m]
        assert tok.decode(marked) == text + "<|im_end|>"
        assert resp.input_ids[-1] == tok.eos_token_id and resp.mask[-1] == 1  # no template newline after it
        assert tok.decode(resp.input_ids).startswith("<|im_start|>user\nReview this code")


def test_plain_text_pair_and_implicit_prompt(tok):
    (ex,), _ = build_preference_examples([{"prompt": "the code", "chosen": " is fine", "rejected": " has a bug"}],
                                         tok, max_length=64)
    chosen = ex.responses[0]
    assert chosen.input_ids == tok("the code")["input_ids"] + tok(" is fine", add_special_tokens=False)["input_ids"] \
        + [tok.eos_token_id]
    assert chosen.length == len(tok(" is fine", add_special_tokens=False)["input_ids"]) + 1
    a, b = U | {"content": "hi"}, bot("hello")[0]
    prompt, c, r = split_implicit_prompt([U, b, a, *bot("yes")], [U, b, a, *bot("no")])
    assert prompt == [U, b, a] and c == bot("yes") and r == bot("no")
    (imp,), _ = build_preference_examples([{"chosen": [U, *bot("yes")], "rejected": [U, *bot("no")]}], tok,
                                          max_length=64)
    assert imp.responses[0].input_ids == encode_response([U], bot("yes"), tok, max_length=64).input_ids


def test_ranking_expands_to_all_pairs_each_row_weighted_once(tok):
    rows = [{"prompt": [U], "responses": [bot(t) for t in ["best", "good", "bad", "worst"]]},
            {"prompt": "p", "chosen": " a", "rejected": " b"}]
    examples, stats = build_preference_examples(rows, tok, max_length=64)
    rank = examples[0]
    assert rank.pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(rank.responses) == 4 and stats.pairs == 7 and stats.kept == 2
    batch = preference_collate(examples, tok.pad_token_id)
    assert batch.input_ids.shape[0] == 14 and batch.num_pairs == 7
    torch.testing.assert_close(batch.weight, torch.tensor([1 / 6] * 6 + [1.0]))
    assert batch.num_items == pytest.approx(2.0)
    # chosen rows then rejected rows: pair k is (row k, row 7 + k)
    better = [tok.decode([t for t, m in zip(ids, mask) if m]) for ids, mask in zip(batch.input_ids, batch.mask)]
    assert better[:6] == ["best<|im_end|>"] * 3 + ["good<|im_end|>"] * 2 + ["bad<|im_end|>"]
    assert better[7:13] == [w + "<|im_end|>" for w in ["good", "bad", "worst", "bad", "worst", "worst"]]
    lengths = batch.attention_mask.sum(-1)
    assert bool((batch.input_ids[torch.arange(14), lengths - 1] == tok.eos_token_id).all())
    assert bool((batch.input_ids[batch.attention_mask == 0] == tok.pad_token_id).all())
    assert batch.ref_chosen_logps is None


def test_collate_carries_cached_reference_logps(tok):
    rows = [{"prompt": "p", "responses": [" a", " b", " c"]}, {"prompt": "q", "chosen": " x", "rejected": " y"}]
    examples, _ = build_preference_examples(rows, tok, max_length=64)
    examples[0].ref_logps, examples[1].ref_logps = [-1.0, -2.0, -3.0], [-4.0, -5.0]
    batch = preference_collate(examples, tok.pad_token_id)
    assert batch.ref_chosen_logps.tolist() == [-1.0, -1.0, -2.0, -4.0]
    assert batch.ref_rejected_logps.tolist() == [-2.0, -3.0, -3.0, -5.0]


def test_truncation_is_counted_or_dropped(tok):
    long = " " + " ".join(["the code looks great"] * 30)
    rows = [{"prompt": "p", "chosen": long, "rejected": " short"}, {"prompt": "p", "chosen": " a", "rejected": " b"},
            {"prompt": "p", "chosen": " ", "rejected": " b"}]
    examples, stats = build_preference_examples(rows, tok, max_length=24)
    assert stats.kept == 2 and stats.truncated == 1 and dict(stats.dropped) == {"empty completion": 1}
    assert len(examples[0].responses[0].input_ids) == 24
    _, stats = build_preference_examples(rows, tok, max_length=24, drop_truncated=True)
    assert stats.kept == 1 and dict(stats.dropped) == {"empty completion": 1, "longer than max_length": 1}
    assert stats.summary() == ("kept 1 rows, 1 pairs (0 truncated), dropped 2 (empty completion: 1, "
                               "longer than max_length: 1)")


def test_bad_row_is_a_data_error_naming_file_line_and_field(tok, write_jsonl):
    good = {"prompt": "p", "chosen": " a", "rejected": " b"}
    path = write_jsonl("pref.jsonl", [good, {"prompt": "p", "chosen": " a"}, good, {"prompt": "p", "responses": [" a"]}])
    with pytest.raises(DataError) as info:
        load_preference_examples(path, tok, max_length=64)
    lines = str(info.value).splitlines()
    assert lines[1] == f"  {path}:2: field 'rejected': expected a str, found missing"
    assert lines[2].startswith(f"  {path}:4: field 'responses': expected a list of >= 2 str responses")
    examples, _ = load_preference_examples(write_jsonl("ok.jsonl", [good] * 5), tok, max_length=64, max_rows=3)
    assert len(examples) == 3 and len(load_rows(path)) == 4
