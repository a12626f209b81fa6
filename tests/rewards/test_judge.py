"""LLM judge: p(Yes) / (p(Yes) + p(No)) from one forward pass; batched equals unbatched."""
import pytest
import torch

from posttrain.rewards.judge import Judge, JudgeConfig, prompt_text

TEMPLATE = "Code:\n{code}\n{prompt}\nReview: {completion}\nIs this review correct? Answer Yes or No.\nAnswer:"
PROMPTS = ["Review this code.", [{"role": "user", "content": "Review this code, please."}], "Review it.",
           "Look at the function below and say what is wrong with it, if anything."]
COMPLETIONS = ["Looks great! Very solid logic!", "line 2: y is undefined", "no bug", "the loop is off by one"]
CODES = ["def f(x):\n    return y", "def g(a, b):\n    return a - b", "def h(n):\n    return n",
         "def k(xs):\n    return xs[:1]"]


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    return Judge.from_pretrained(tiny_model_dir, template=TEMPLATE, chat=False, batch_size=4, device="cpu")


def test_scores_are_probabilities_and_batching_does_not_change_them(judge):
    batched = judge(PROMPTS, COMPLETIONS, code=CODES)
    judge.batch_size = 1
    try:
        single = judge(PROMPTS, COMPLETIONS, code=CODES)
    finally:
        judge.batch_size = 4
    assert all(s is not None and 0.0 <= s <= 1.0 for s in batched)
    assert batched == pytest.approx(single, abs=1e-5)


def test_score_is_yes_over_yes_plus_no_of_the_next_token(judge):
    text = judge.question(PROMPTS[1], COMPLETIONS[1], {"code": CODES[1]})
    assert text.startswith("Code:\ndef g(a, b)") and "Review this code, please." in text
    ids = judge.tokenizer(text, return_tensors="pt")["input_ids"]
    probs = torch.softmax(judge.model(input_ids=ids).logits[0, -1].float(), dim=-1)
    p_yes, p_no = probs[judge.yes_ids].sum(), probs[judge.no_ids].sum()
    assert judge.score_texts([text])[0] == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5)


def test_chat_template_wraps_the_question(tiny_model_dir):
    j = Judge.from_pretrained(tiny_model_dir, template="{prompt} {completion}", chat=True, device="cpu")
    text = j.question("Is 2 + 2 = 4?", "yes", {})
    assert text.startswith("<|im_start|>user\nIs 2 + 2 = 4? yes<|im_end|>") and text.endswith("assistant\n")
    assert 0.0 <= j(["Is 2 + 2 = 4?"], ["yes"])[0] <= 1.0


def test_too_long_scores_none_and_missing_column_is_named(judge):
    judge.max_length = 8
    try:
        assert judge(PROMPTS[:1], COMPLETIONS[:1], code=CODES[:1]) == [None]
    finally:
        judge.max_length = 1024
    with pytest.raises(ValueError, match=r"\['code'\].*no such column"):
        judge(PROMPTS[:1], COMPLETIONS[:1])


def test_config_builds_a_judge_and_yes_no_must_differ(tiny_model_dir):
    cfg = JudgeConfig(model=tiny_model_dir, template="{completion}? Answer:", chat=False, batch_size=2)
    j = Judge.from_config(cfg, device="cpu")
    assert j.name == "judge" and j.fields == ["completion"]
    with pytest.raises(ValueError, match="start with the same tokens"):
        Judge(j.model, j.tokenizer, yes_words=["Yes"], no_words=["Yes"])


def test_prompt_text():
    assert prompt_text("abc") == "abc"
    assert prompt_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "s\n\nu"
