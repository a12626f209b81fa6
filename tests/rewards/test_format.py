"""Format (regex / tags) reward and the DAPO soft length penalty, against hand-worked values."""
import pytest

from posttrain.rewards.format import FormatReward, LengthPenalty


def test_default_think_answer_tags():
    fmt = FormatReward()
    completions = [
        "<think>2+2 is 4</think>\n<answer>4</answer>",           # good
        "  <think>\nmulti\nline\n</think> <answer>4</answer>\n",  # whitespace around is fine
        "<answer>4</answer>",                                     # no think
        "<think>x</think><answer>4</answer> trailing text",       # text after
        "<answer>4</answer><think>x</think>",                     # wrong order
        "<think>x</think><answer>4</answer><answer>5</answer>",   # answer twice
        "<think>a <think>b</think></think><answer>4</answer>",   # nested tag
        "",
    ]
    assert fmt(["p"] * len(completions), completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_custom_tags_and_user_regex():
    assert FormatReward(tags=["answer"])(["p", "p"], ["<answer>7</answer>", "7"]) == [1.0, 0.0]
    boxed = FormatReward(pattern=r".*\\boxed\{[^{}]+\}\s*")
    assert boxed(["p", "p"], ["so \\boxed{7}", "so 7"]) == [1.0, 0.0]
    anywhere = FormatReward(pattern=r"#### \d+", search=True)
    assert anywhere(["p", "p"], ["work...\n#### 72\nthanks", "72"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="invalid regex '\\('"):
        FormatReward(pattern="(")


def test_length_penalty_formula():
    pen = LengthPenalty(max_length=100, buffer=20)  # free up to 80 chars, -1 beyond 100
    lengths = [0, 80, 81, 90, 100, 101, 1000]
    got = pen(["p"] * len(lengths), ["x" * n for n in lengths])
    assert got == pytest.approx([0.0, 0.0, -1 / 20, -0.5, -1.0, -1.0, -1.0])


def test_length_penalty_units():
    words = LengthPenalty(max_length=4, buffer=2, unit="words")
    assert words(["p", "p"], ["a b", "a b c"]) == [0.0, -0.5]
    tokens = LengthPenalty(max_length=10, buffer=10, unit="tokens")
    assert tokens(["p", "p"], ["ignored", "text"], completion_lengths=[5, 20]) == [-0.5, -1.0]
    with pytest.raises(ValueError, match="needs a 'completion_lengths' column"):
        tokens(["p"], ["x"])
    with pytest.raises(ValueError, match="0 < buffer <= max_length"):
        LengthPenalty(max_length=5, buffer=6)
