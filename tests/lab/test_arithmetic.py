import random

import pytest

from posttrain.lab.arithmetic import (LEVELS, ArithmeticProblem, arithmetic_correct, arithmetic_splits, extract_answer,
                                      make_problem, wrong_solution)


def test_worked_solution_is_short_and_ends_with_the_answer():
    p = ArithmeticProblem(1, (17, 25), ("+",))
    assert p.prompt == "What is 17 + 25?"
    assert p.answer == 42
    assert p.solution == "17 + 25 = 42\n#### 42"
    q = ArithmeticProblem(2, (17, 25, 8), ("+", "-"), phrasing=1)
    assert q.solution == "17 + 25 = 42\n42 - 8 = 34\n#### 34"
    assert q.prompt == "Compute 17 + 25 - 8."


def test_answers_match_python_and_steps_are_true():
    rng = random.Random(0)
    for level in LEVELS:
        for _ in range(200):
            p = make_problem(rng, level)
            assert p.level == level and len(p.ops) == LEVELS[level].n_ops
            assert p.answer == eval(p.expression) and p.answer >= 0
            for line in p.solution.split("\n")[:-1]:
                left, right = line.split(" = ")
                assert eval(left) == int(right)
            assert arithmetic_correct(p.solution, p.answer)
            assert not arithmetic_correct(wrong_solution(p, rng), p.answer)


def test_splits_are_deterministic_per_seed_and_disjoint():
    a, b, c = arithmetic_splits(0, 300, 100, 50), arithmetic_splits(0, 300, 100, 50), arithmetic_splits(1, 300, 100, 50)
    assert a == b
    assert [p.expression for p in a["train"]] != [p.expression for p in c["train"]]
    train, test, hard = ({p.expression for p in a[k]} for k in ("train", "test", "hard"))
    assert len(train) == 300 and len(test) == 100 and len(hard) == 50
    assert not train & test and not hard & (train | test)
    assert {p.level for p in a["train"]} == {1, 2} == {p.level for p in a["test"]}
    assert {p.level for p in a["hard"]} == {3}


@pytest.mark.parametrize("completion, answer, ok", [
    ("17 + 25 = 42\n#### 42", 42, True),
    ("#### 41", 42, False),
    ("#### 12 wait\n#### 42", "42", True),
    ("#### 42\n#### 12", 42, False),
    ("The answer is 42.", 42, False),
    ("#### ", 42, False),
    ("####-3", -3, True),
    ("#### 1,234.", 1234, True),
])
def test_checker_reads_the_number_after_the_last_marker(completion, answer, ok):
    assert arithmetic_correct(completion, answer) is ok


def test_extract_answer_and_bad_level():
    assert extract_answer("x #### 7") == 7 and extract_answer("no marker") is None
    with pytest.raises(ValueError, match="level"):
        make_problem(random.Random(0), 9)
