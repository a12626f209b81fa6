"""The lab world: every split of every task, built deterministically from one seed and a size preset.

`World(seed, sizes)` holds arithmetic problems (train / test / hard), code-review tasks (train / eval) and
facts (train / probe people). Splits never share a question: arithmetic by expression, reviews by code,
facts by person. `WORLD_VERSION` changes whenever any generator changes what it writes, so caches keyed
by `World.fingerprint()` (e.g. a pretrained base model) are rebuilt.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from .arithmetic import ArithmeticProblem, arithmetic_splits
from .facts import Fact, facts_splits
from .review import ReviewTask, review_splits

WORLD_VERSION = "3"


@dataclass(frozen=True)
class WorldSizes:
    arith_train: int = 3000
    arith_test: int = 400
    arith_hard: int = 300
    review_train: int = 2000
    review_eval: int = 400
    people: int = 200
    pref_pairs: int = 4000
    pref_eval_pairs: int = 400
    rankings: int = 1000
    web_docs: int = 20000
    p_buggy: float = 0.5


SIZES = {
    "small": WorldSizes(arith_train=300, arith_test=60, arith_hard=60, review_train=300, review_eval=60, people=40,
                        pref_pairs=400, pref_eval_pairs=100, rankings=100, web_docs=2000),
    "default": WorldSizes(),
}


def resolve_sizes(sizes: WorldSizes | str) -> WorldSizes:
    if isinstance(sizes, WorldSizes):
        return sizes
    if sizes not in SIZES:
        raise ValueError(f"unknown world size {sizes!r}; expected one of {sorted(SIZES)}")
    return SIZES[sizes]


class World:
    """All splits of the lab world for `seed`; `sizes` is a `WorldSizes` or a key of `SIZES`."""

    def __init__(self, seed: int = 0, sizes: WorldSizes | str = "default", **overrides: int | float):
        self.seed = seed
        self.sizes = replace(resolve_sizes(sizes), **overrides)
        s = self.sizes
        arith = arithmetic_splits(seed, s.arith_train, s.arith_test, s.arith_hard)
        self.arith_train: list[ArithmeticProblem] = arith["train"]
        self.arith_test: list[ArithmeticProblem] = arith["test"]
        self.arith_hard: list[ArithmeticProblem] = arith["hard"]
        reviews = review_splits(seed, s.review_train, s.review_eval, s.p_buggy)
        self.review_train: list[ReviewTask] = reviews["train"]
        self.review_eval: list[ReviewTask] = reviews["eval"]
        self.facts = facts_splits(seed, s.people)
        self.facts_train: list[Fact] = self.facts["train"]
        self.facts_probe: list[Fact] = self.facts["probe"]

    @property
    def people(self) -> list[str]:
        return [f.person for f in self.facts_train + self.facts_probe]

    def describe(self) -> dict:
        """Version, seed and sizes: what identifies this world."""
        return {"world_version": WORLD_VERSION, "seed": self.seed, "sizes": asdict(self.sizes)}

    def fingerprint(self) -> str:
        """A short stable hash of `describe()`, for cache keys."""
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
