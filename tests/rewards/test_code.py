"""The ``code`` reward: code extraction, scoring rows, and refusing to run without isolation."""
import pytest

from posttrain.rewards import load_reward
from posttrain.rewards.code import CodeReward, SandboxUnavailable, extract_code

TESTS = "assert double(2) == 4\nassert double(-3) == -6\nassert double(0) == 0\n"


def test_extract_code():
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    two = "First:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```\nDone."
    assert extract_code(two) == "x = 2\n"
    assert extract_code("```py\ny = 3\n```") == "y = 3\n"
    assert extract_code("```\nz = 4\n```") == "z = 4\n"
    assert extract_code("```python\nx = 1\n```\n```text\nnot code\n```") == "x = 1\n"
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"  # unclosed


@pytest.fixture(scope="module")
def reward():
    return load_reward("code", timeout=5.0, memory_mb=512)


def test_code_reward_scores_rows(reward):
    completions = [
        "Here you go:\n```python\ndef double(x):\n    return 2 * x\n```",
        "def double(x):\n    return x * x\n",                 # right only for 2 and 0
        "```python\ndef double(x):\n    return x +\n```",      # syntax error
        "```python\ndef double(x):\n    return 2 * x\n```",
    ]
    scores = reward(["p"] * 4, completions, tests=[TESTS, TESTS, TESTS, None])
    assert scores == [1.0, pytest.approx(2 / 3), 0.0, None]
    assert [r and r.status for r in reward.last_results] == ["ok", "ok", "import_error", None]


def test_all_pass_and_code_prefix():
    strict = CodeReward(timeout=5.0, memory_mb=512, all_pass=True)
    prefix = "import math\n\ndef double(x):\n    \"\"\"Twice x.\"\"\"\n"
    completions = ["    return 2 * x\n", "    return x * x\n"]  # body-only completions
    assert strict(["p", "p"], completions, tests=[TESTS, TESTS], code_prefix=[prefix, prefix]) == [1.0, 0.0]


def test_column_errors(reward):
    with pytest.raises(ValueError, match="needs a 'tests' column"):
        reward(["p"], ["x = 1"], answer=["1"])
    with pytest.raises(ValueError, match="1 completions but 2 tests"):
        reward(["p"], ["x = 1"], tests=[TESTS, TESTS])


def test_refuses_without_isolation_unless_unsafe():
    # 'plain' mode has no namespaces: the self-test sees writes outside the folder succeed
    with pytest.raises(SandboxUnavailable, match="(?s)writes_outside_blocked=NO.*allow_unsafe=True"):
        CodeReward(timeout=5.0, mode="plain")
    with pytest.warns(UserWarning, match="allow_unsafe=True"):
        unsafe = CodeReward(timeout=5.0, mode="plain", allow_unsafe=True)
    assert unsafe(["p"], ["def double(x):\n    return 2 * x\n"], tests=[TESTS]) == [1.0]
