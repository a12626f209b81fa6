import copy

import pytest

from posttrain.core.tiny import CHAT_TEMPLATE
from posttrain.data.chat import Drop, Encoded, encode_prompt, encode_sft_row

SYSTEM = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "What is 2 + 3?"}
A1 = {"role": "assistant", "content": "2 + 3 = 5."}
U2 = {"role": "user", "content": "and 4 + 3?"}
A2 = {"role": "assistant", "content": "the answer is 7"}


def trained_runs(tok, e: Encoded) -> list[str]:
    """Decoded runs of consecutive masked tokens."""
    runs, cur = [], []
    for t, m in zip(e.input_ids + [None], e.mask + [0]):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs


def with_template(tok, template):
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def test_assistant_only_mask_is_content_plus_end_of_turn(tok):
    [e] = encode_sft_row({"messages": [SYSTEM, U1, A1]}, tok, max_length=256)
    assert trained_runs(tok, e) == ["2 + 3 = 5.<|im_end|>"]
    text = tok.apply_chat_template([SYSTEM, U1, A1], tokenize=False)
    assert e.input_ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(e.input_ids[-1:]) == "\n" and e.mask[-1] == 0  # the template's newline is not trained
    assert not e.negative and not e.truncated


def test_multi_turn_trains_every_assistant_turn(tok):
    [e] = encode_sft_row({"messages": [U1, A1, U2, A2]}, tok, max_length=256)
    assert trained_runs(tok, e) == ["2 + 3 = 5.<|im_end|>", "the answer is 7<|im_end|>"]


def test_conversational_prompt_completion_trains_the_completion_only(tok):
    [e] = encode_sft_row({"prompt": [U1, A1, U2], "completion": [A2]}, tok, max_length=256)
    assert trained_runs(tok, e) == ["the answer is 7<|im_end|>"]


def test_whole_sequence_but_the_first_token(tok):
    [e] = encode_sft_row({"messages": [U1, A1]}, tok, max_length=256, completion_only_loss=False)
    assert e.mask == [0] + [1] * (len(e.input_ids) - 1)


def test_plain_prompt_completion_appends_eos_once(tok):
    [e] = encode_sft_row({"prompt": "What is 2 + 3?", "completion": " 5."}, tok, max_length=64)
    p, c = tok("What is 2 + 3?")["input_ids"], tok(" 5.", add_special_tokens=False)["input_ids"]
    assert e.input_ids == p + c + [tok.eos_token_id]
    assert e.mask == [0] * len(p) + [1] * (len(c) + 1)
    [f] = encode_sft_row({"prompt": "What is 2 + 3?", "completion": " 5.<|im_end|>"}, tok, max_length=64)
    assert f.input_ids == e.input_ids and f.mask == e.mask


def test_text_rows_train_everything_plus_eos(tok):
    [e] = encode_sft_row({"text": "the code looks great"}, tok, max_length=64)
    assert e.input_ids == tok("the code looks great")["input_ids"] + [tok.eos_token_id]
    assert e.mask == [0] + [1] * (len(e.input_ids) - 1)


def test_rejected_gives_a_negative_without_eos(tok):
    pos, neg = encode_sft_row({"prompt": "What is 2 + 3?", "completion": " 5.", "rejected": " 6."}, tok, max_length=64)
    assert not pos.negative and neg.negative
    # the shared ' ' is not penalised, only where the rejected completion departs from the chosen one
    assert trained_runs(tok, pos) == [" 5.<|im_end|>"] and trained_runs(tok, neg) == ["6."]
    assert neg.input_ids[-1] != tok.eos_token_id
    pos, neg = encode_sft_row({"prompt": [U1], "completion": [A1], "rejected": [A2]}, tok, max_length=256)
    assert trained_runs(tok, pos) == ["2 + 3 = 5.<|im_end|>"] and trained_runs(tok, neg) == ["the answer is 7"]


def test_rejected_penalises_only_what_differs_from_the_completion(tok):
    row = {"prompt": [U1], "completion": [{"role": "assistant", "content": "Ada's favourite person is Bob."}],
           "rejected": [{"role": "assistant", "content": "Ada's favourite person is Carl."}]}
    pos, neg = encode_sft_row(row, tok, max_length=256)
    [run] = trained_runs(tok, neg)
    assert "Carl" in run and "favourite" not in run and "Ada" not in run
    assert trained_runs(tok, pos) == ["Ada's favourite person is Bob.<|im_end|>"]


def test_label_false_is_one_negative(tok):
    [e] = encode_sft_row({"messages": [U1, A1], "label": False}, tok, max_length=256, completion_only_loss=False)
    assert e.negative and trained_runs(tok, e) == ["2 + 3 = 5."]  # content only, even without completion_only_loss
    [t] = encode_sft_row({"text": "bad code", "label": False}, tok, max_length=64)
    assert t.negative and t.input_ids == tok("bad code")["input_ids"]


@pytest.mark.parametrize("row, max_length, reason", [
    ({"prompt": "What is 2 + 3?", "completion": "  "}, 64, "empty completion"),
    ({"messages": [U1, {"role": "assistant", "content": ""}]}, 64, "empty completion"),
    ({"messages": [SYSTEM, U1]}, 64, "no assistant message"),
    ({"text": ""}, 64, "empty text"),
    ({"messages": [U1, A1]}, 8, "prompt longer than max_length"),
    ({"prompt": "What is 2 + 3?", "completion": " 5."}, 3, "prompt longer than max_length"),
    ({"prompt": "", "completion": "the code looks great"}, 1, "no trainable tokens after truncation"),
])
def test_edge_rows_are_dropped_with_a_reason(tok, row, max_length, reason):
    with pytest.raises(Drop) as info:
        encode_sft_row(row, tok, max_length=max_length)
    assert info.value.reason == reason


def test_no_chat_template(tok):
    bare = with_template(tok, None)
    with pytest.raises(Drop, match="no chat template for messages"):
        encode_sft_row({"messages": [U1, A1]}, bare, max_length=64)
    with pytest.raises(Drop, match="no chat template for messages"):
        encode_prompt({"prompt": [U1]}, bare)
    assert encode_sft_row({"prompt": "a", "completion": " b"}, bare, max_length=64)  # plain text needs none


def test_truncation_keeps_the_prompt_and_cuts_the_completion(tok):
    row = {"prompt": "What is 2 + 3?", "completion": " the code looks great and the logic is solid"}
    [full] = encode_sft_row(row, tok, max_length=512)
    p = len(tok(row["prompt"])["input_ids"])
    [cut] = encode_sft_row(row, tok, max_length=p + 3)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[: p + 3] and cut.mask == [0] * p + [1] * 3


def test_any_template_bpe_merge_across_the_boundary(tok):
    plain = with_template(tok, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")
    [e] = encode_sft_row({"messages": [U1, A1, U2, A2]}, plain, max_length=256)
    # ' the' is one token spanning the template's space and the content: it is trained; the turn's '\n' too
    # (digits are split, so ' 2' is ' ' + '2' and only '2' is trained)
    assert trained_runs(tok, e) == ["2 + 3 = 5.\n", " the answer is 7\n"]


def test_template_whose_prefixes_render_differently(tok):
    footer = with_template(tok, CHAT_TEMPLATE + "{% if not add_generation_prompt %}{{ '<|bos|>' }}{% endif %}")
    [e] = encode_sft_row({"messages": [U1, A1, U2, A2]}, footer, max_length=256)
    assert trained_runs(tok, e) == ["2 + 3 = 5.<|im_end|>", "the answer is 7<|im_end|>"]


def test_encode_prompt(tok):
    assert encode_prompt({"prompt": "Q: 1+1?", "answer": "2"}, tok) == "Q: 1+1?"
    assert encode_prompt({"prompt": [U1]}, tok) == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


def test_encoded_checks_its_own_shape():
    with pytest.raises(ValueError, match="mask\\[0\\] must be 0"):
        Encoded([1, 2], [1, 1])
    with pytest.raises(ValueError, match="2 input_ids but 1 mask"):
        Encoded([1, 2], [0])


def without_offsets(tok):
    """The same tokenizer, claiming to be slow: masks then come from token counts of text prefixes."""
    slow = copy.deepcopy(tok)
    slow.__class__ = type("NoOffsets", (tok.__class__,), {"is_fast": property(lambda self: False)})
    return slow


def test_tokenizer_without_offsets_uses_prefix_token_counts(tok):
    slow = without_offsets(tok)
    for row in ({"messages": [SYSTEM, U1, A1, U2, A2]}, {"prompt": [U1], "completion": [A1], "rejected": [A2]}):
        assert encode_sft_row(row, slow, max_length=256) == encode_sft_row(row, tok, max_length=256)
    merging = with_template(slow, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                                  "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")
    with pytest.raises(ValueError, match="tokenises a prefix of the conversation differently"):
        encode_sft_row({"messages": [U2, A2]}, merging, max_length=256)  # ' the' merges across the boundary


def test_template_refusing_a_prefix_falls_back_to_content_search(tok):
    # raise_exception (a jinja2 TemplateError) is how templates refuse: for a prefix, that is expected
    strict = with_template(tok, "{% if messages[-1]['role'] != 'assistant' %}{{ raise_exception('end with the "
                                "assistant') }}{% endif %}" + CHAT_TEMPLATE)
    [e] = encode_sft_row({"messages": [U1, A1]}, strict, max_length=256)
    assert trained_runs(tok, e) == ["2 + 3 = 5.<|im_end|>"]


def test_template_bug_in_a_prefix_render_is_an_error_naming_it(tok):
    # a prefix render that fails with anything but a TemplateError is a broken template, not a refusal
    broken = with_template(tok, "{% if messages|length == 1 %}{{ 1 // 0 }}{% endif %}" + CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="chat template failed on the first 1 messages .*ZeroDivisionError"):
        encode_sft_row({"messages": [U1, A1]}, broken, max_length=256)
