"""Math verification (math-verify in timed worker processes) and exact match."""
import threading
import time

import pytest

from posttrain.rewards.math import ExactMatchReward, MathReward, extract_final_answer, normalize_answer
from posttrain.rewards.timed_pool import TimedPool

EQUAL = [
    ("The answer is \\boxed{\\frac{1}{2}}.", "0.5"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("so the total is\n#### 1,000", "1000"),
    ("\\boxed{1000}", "1,000"),
    ("<answer>42</answer>", "Natalia sold 48/2 = 24 clips...\n#### 42"),
    ("<answer>\\boxed{3}</answer>", "3"),
    ("First \\boxed{5}, no wait: \\boxed{\\frac{3}{4}}", "0.75"),
    ("\\boxed{x^2 + 1}", "1 + x^2"),
    ("#### 42", "42"),
]
UNEQUAL = [
    ("\\boxed{\\frac{1}{3}}", "0.5"),
    ("#### 1,001", "1000"),
    ("<answer>41</answer>", "#### 42"),
    ("\\boxed{x^2 - 1}", "x^2 + 1"),
    ("\\boxed{5} is my final answer", "\\frac{3}{4}"),
]
NO_ANSWER = ["I think it is 42", "", "<answer></answer>", "\\boxed{"]


@pytest.fixture(scope="module")
def math_reward():
    return MathReward(timeout=5.0)


def test_math_table(math_reward):
    rows = EQUAL + UNEQUAL + [(c, "42") for c in NO_ANSWER]
    got = math_reward(["p"] * len(rows), [c for c, _ in rows], answer=[a for _, a in rows])
    expected = [1.0] * len(EQUAL) + [0.0] * len(UNEQUAL) + [0.0] * len(NO_ANSWER)
    assert got == expected, [(r, g) for r, g, e in zip(rows, got, expected) if g != e]


def test_math_unscorable_gold_is_none(math_reward):
    assert math_reward(["p", "p"], ["\\boxed{1}", "\\boxed{1}"], answer=[None, "  "]) == [None, None]
    with pytest.raises(ValueError, match="needs an 'answer' column"):
        math_reward(["p"], ["\\boxed{1}"])


def test_math_timeout_gives_none_then_recovers():
    slow = MathReward(timeout=1.0)
    slow.score_one("\\boxed{1}", "1")  # the worker is warm: start-up is not part of the timing
    start = time.monotonic()
    assert slow.score_one("\\boxed{9^{9^{9^{9}}}}", "1") is None
    assert time.monotonic() - start < 2.5
    assert slow.score_one("\\boxed{2}", "2") == 1.0  # a fresh worker replaces the killed one


def test_math_reward_from_a_non_main_thread(math_reward):
    results = {}

    def work():
        results["v"] = math_reward(["p", "p"], ["\\boxed{\\frac{1}{2}}", "#### 3"], answer=["0.5", "4"])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert results["v"] == [1.0, 0.0]


def test_timed_pool_statuses():
    pool = TimedPool("time:sleep", size=1)
    try:
        assert pool.call([0.01], timeout=5) == ("ok", None)
        assert pool.call([5], timeout=0.3)[0] == "timeout"
        assert pool.call(["x"], timeout=5)[0] == "error"
        assert pool.call([0], timeout=5) == ("ok", None)
    finally:
        pool.close()


def test_extract_final_answer():
    assert extract_final_answer("a \\boxed{\\frac{a}{b}} b") == "\\frac{a}{b}"
    assert extract_final_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_final_answer("<answer> 7 </answer> \\boxed{8}") == "7"
    assert extract_final_answer("steps\n#### 72\n") == "72"
    assert extract_final_answer("nothing") is None


def test_exact_match():
    em = ExactMatchReward()
    rows = [("#### 1,000", "1000"), ("<answer>Paris.</answer>", "paris"), ("\\boxed{2.50}", "2.5"),
            ("\\boxed{\\frac{1}{2}}", "0.5"), ("no final answer", "7"), ("#### 7", None)]
    assert em(["p"] * len(rows), [c for c, _ in rows], answer=[a for _, a in rows]) == [1.0, 1.0, 1.0, 0.0, 0.0, None]
    assert normalize_answer(" $\\text{Yes}$. ") == "yes"


def test_last_number_fallback_only_when_asked():
    from posttrain.rewards.math import MathReward

    strict, loose = MathReward(), MathReward(last_number=True)
    comps = ["17 + 25 = 42", "The answer is 1,000.", "no number", "#### 41 then 42"]
    answers = ["42", "1000", "3", "42"]
    assert strict(["q"] * 4, comps, answer=answers) == [0.0, 0.0, 0.0, 0.0]
    assert loose(["q"] * 4, comps, answer=answers) == [1.0, 1.0, 0.0, 0.0]
