"""Simulated human raters: gold quality plus configurable biases, under a Bradley-Terry choice model.

A rater's utility for a response is

    u = gold(task, response) + length_bias * length + confidence_bias * confidence + sycophancy_bias * flattery

with the surface features read from the text (`response_features`): `length` = words / 20, capped at 2;
`confidence` in [-1, 1] (emphatic markers minus hedges); `flattery` in [0, 1] (praise words / 3, capped).
It prefers `a` over `b` with probability `sigmoid((u_a - u_b) / temperature)` (Bradley-Terry; temperature 0
is a deterministic rater that breaks exact ties at random), and ranks K responses by Plackett-Luce sampling
(Gumbel-perturbed `u / temperature`). With all biases 0 the rater is noisy but unbiased with respect to gold;
the biases are the knobs of the Goodhart and sycophancy experiments.

A task is anything with `prompt_messages() -> list[dict]`, `gold(response) -> float` and `gold_fields() -> dict`
(`ReviewTask`, `ArithmeticProblem`).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .review import praise_count

_HEDGES = re.compile(r"\b(might|may|maybe|perhaps|possibly|probably|i think|seems?|could|not sure|hard to say|"
                     r"i don't see)\b", re.IGNORECASE)
_EMPHATIC = re.compile(r"\b(definitely|clearly|certainly|obviously|for sure|without doubt)\b|!", re.IGNORECASE)


class Task(Protocol):
    def prompt_messages(self) -> list[dict]: ...
    def gold(self, response: str) -> float: ...
    def gold_fields(self) -> dict: ...


@dataclass(frozen=True)
class Features:
    length: float      # words / 20, capped at 2
    confidence: float  # in [-1, 1]: +0.5 per emphatic marker, -0.5 per hedge
    flattery: float    # in [0, 1]: praise words / 3


def response_features(text: str) -> Features:
    """The surface features a biased rater reacts to."""
    words = len(text.split())
    conf = 0.5 * len(_EMPHATIC.findall(text)) - 0.5 * len(_HEDGES.findall(text))
    return Features(min(words / 20, 2.0), max(-1.0, min(1.0, conf)), min(praise_count(text) / 3, 1.0))


class Comparison(NamedTuple):
    chosen: str
    rejected: str
    prob: float  # the rater's probability of the choice it made


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


class SimulatedRater:
    """Compares responses by gold quality plus biases; seeded, so the same calls give the same choices."""

    def __init__(self, length_bias: float = 0.0, confidence_bias: float = 0.0, sycophancy_bias: float = 0.0,
                 temperature: float = 1.0, seed: int = 0):
        if temperature < 0:
            raise ValueError(f"rater temperature must be >= 0, got {temperature}")
        self.length_bias, self.confidence_bias, self.sycophancy_bias = length_bias, confidence_bias, sycophancy_bias
        self.temperature = temperature
        self.seed = seed
        self.rng = random.Random(f"rater-{seed}")

    def config(self) -> dict:
        return {"length_bias": self.length_bias, "confidence_bias": self.confidence_bias,
                "sycophancy_bias": self.sycophancy_bias, "temperature": self.temperature, "seed": self.seed}

    def utility(self, task: Task, response: str) -> float:
        f = response_features(response)
        return (task.gold(response) + self.length_bias * f.length + self.confidence_bias * f.confidence
                + self.sycophancy_bias * f.flattery)

    def prob_prefers(self, task: Task, a: str, b: str) -> float:
        """P(the rater prefers `a` over `b`)."""
        diff = self.utility(task, a) - self.utility(task, b)
        if self.temperature == 0:
            return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
        return _sigmoid(diff / self.temperature)

    def compare(self, task: Task, a: str, b: str) -> Comparison:
        """One noisy judgement: `(chosen, rejected, probability of this choice)`."""
        p = self.prob_prefers(task, a, b)
        if self.rng.random() < p:
            return Comparison(a, b, p)
        return Comparison(b, a, 1 - p)

    def rank(self, task: Task, responses: list[str]) -> list[str]:
        """`responses` best first: a Plackett-Luce sample (Gumbel-perturbed utilities / temperature)."""
        def key(r: str) -> tuple[float, float]:
            u = self.utility(task, r)
            tie = self.rng.random()
            if self.temperature == 0:
                return (u, tie)
            return (u / self.temperature - math.log(-math.log(max(tie, 1e-300))), 0.0)
        keyed = [(key(r), i) for i, r in enumerate(responses)]
        return [responses[i] for _, i in sorted(keyed, reverse=True)]

    def preference_row(self, task: Task, a: str, b: str) -> dict:
        """A TRL conversational preference row plus the rater's probability and the gold preference."""
        c = self.compare(task, a, b)
        g_chosen, g_rejected = task.gold(c.chosen), task.gold(c.rejected)
        return {"prompt": task.prompt_messages(), "chosen": _assistant(c.chosen), "rejected": _assistant(c.rejected),
                "rater_prob": c.prob, "gold_chosen": g_chosen, "gold_rejected": g_rejected,
                "gold_chosen_better": g_chosen > g_rejected, **task.gold_fields()}

    def ranking_row(self, task: Task, responses: list[str]) -> dict:
        """A K-wise ranking row: `responses` (each a one-message assistant list) best first, with gold scores."""
        ranked = self.rank(task, responses)
        return {"prompt": task.prompt_messages(), "responses": [_assistant(r) for r in ranked],
                "gold": [task.gold(r) for r in ranked], **task.gold_fields()}
