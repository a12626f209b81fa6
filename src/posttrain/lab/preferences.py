"""Preference and ranking data sets on code reviews, judged by a simulated rater.

A pair holds two reviews of the same code written in two different styles and of different gold quality
(gold ties are redrawn, so `gold_chosen_better` always says which one gold prefers). A ranking holds one
review per style (K = 4). Responses are drawn with the world's own seeded generator; the rater's choices
with the rater's own seed, so changing the rater's biases changes the labels and never the candidates.
"""
from __future__ import annotations

import random

from .raters import SimulatedRater
from .review import STYLES, ReviewTask, review_gold, review_response


def candidate_pair(task: ReviewTask, rng: random.Random) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two `(style, response)` of different styles and different gold quality."""
    for _ in range(100):
        s1, s2 = rng.sample(STYLES, 2)
        a, b = review_response(task, s1, rng), review_response(task, s2, rng)
        if review_gold(task, a) != review_gold(task, b):
            return (s1, a), (s2, b)
    raise ValueError(f"no two reviews of different gold quality for:\n{task.code}")


def preference_rows(tasks: list[ReviewTask], rater: SimulatedRater, n_pairs: int, seed: int) -> list[dict]:
    """`n_pairs` TRL conversational preference rows over `tasks` (cycled in a seeded order).

    Columns: `prompt`, `chosen`, `rejected` (message lists), `rater_prob`, `gold_chosen`, `gold_rejected`,
    `gold_chosen_better`, `chosen_style`, `rejected_style`, and the task's gold fields.
    """
    if not tasks:
        raise ValueError("preference_rows needs at least one review task")
    rng = random.Random(f"pairs-{seed}")
    order = list(range(len(tasks)))
    rows = []
    for i in range(n_pairs):
        if i % len(tasks) == 0:
            rng.shuffle(order)
        task = tasks[order[i % len(tasks)]]
        (s1, a), (s2, b) = candidate_pair(task, rng)
        row = rater.preference_row(task, a, b)
        chosen_first = row["chosen"][0]["content"] == a
        row["chosen_style"], row["rejected_style"] = (s1, s2) if chosen_first else (s2, s1)
        rows.append(row)
    return rows


def ranking_rows(tasks: list[ReviewTask], rater: SimulatedRater, n_rows: int, seed: int) -> list[dict]:
    """`n_rows` K-wise rows: `prompt`, `responses` (one assistant message list per style, best first), `gold`,
    `styles`, and the task's gold fields."""
    if not tasks:
        raise ValueError("ranking_rows needs at least one review task")
    rng = random.Random(f"rankings-{seed}")
    rows = []
    for i in range(n_rows):
        task = tasks[rng.randrange(len(tasks))]
        by_text = {review_response(task, s, rng): s for s in STYLES}
        row = rater.ranking_row(task, list(by_text))
        row["styles"] = [by_text[r[0]["content"]] for r in row["responses"]]
        rows.append(row)
    return rows
