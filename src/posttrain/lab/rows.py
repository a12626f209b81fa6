"""The world's supervised data sets as TRL rows (conversational: lists of `{"role", "content"}` messages).

- `sft_rows`: `messages` demonstrations: arithmetic with worked answers and HONEST code reviews.
- `sft_neg_rows`: `prompt` / `completion` / `rejected`: a right answer and a wrong one for the same prompt,
  for unlikelihood training (arithmetic with a wrong final number, a sycophantic or false-alarm review,
  a false fact).
- `review_prompt_rows`: review prompts with the gold columns a reward function needs.

Every row has a `task` column (`arithmetic`, `review`, `facts`) so experiments can split by task.
"""
from __future__ import annotations

import random

from .arithmetic import wrong_solution
from .facts import paired_rows
from .review import review_response
from .world import World


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def sft_rows(world: World, *, held_out: bool = False) -> list[dict]:
    """Demonstrations (shuffled): every train arithmetic problem and an honest review of every train task;
    `held_out=True` gives the same kind of rows on the test arithmetic and the eval review tasks."""
    rng = random.Random(f"sft-{'eval-' if held_out else ''}{world.seed}")
    arith, reviews = (world.arith_test, world.review_eval) if held_out else (world.arith_train, world.review_train)
    rows = [{"messages": _user(p.prompt) + _assistant(p.solution), "task": "arithmetic"} for p in arith]
    rows += [{"messages": _user(t.prompt) + _assistant(review_response(t, "honest", rng)), "task": "review"}
             for t in reviews]
    rng.shuffle(rows)
    return rows


def sft_neg_rows(world: World) -> list[dict]:
    """Rows with a negative (shuffled): `prompt`, `completion` (right), `rejected` (wrong), `task`."""
    rng = random.Random(f"sft-neg-{world.seed}")
    rows = [{"prompt": _user(p.prompt), "completion": _assistant(p.solution),
             "rejected": _assistant(wrong_solution(p, rng)), "task": "arithmetic"} for p in world.arith_train]
    for t in world.review_train:
        bad_style = "sycophantic" if t.buggy else "false_alarm"
        rows.append({"prompt": t.prompt_messages(), "completion": _assistant(review_response(t, "honest", rng)),
                     "rejected": _assistant(review_response(t, bad_style, rng)), "task": "review"})
    rows += [{**row, "task": "facts"} for row in paired_rows(world.facts_train)]
    rng.shuffle(rows)
    return rows


def review_prompt_rows(tasks) -> list[dict]:
    """`prompt` (one user message) plus gold columns `code`, `buggy`, `bug_line`, `bug_kind`."""
    return [{"prompt": t.prompt_messages(), **t.gold_fields()} for t in tasks]
