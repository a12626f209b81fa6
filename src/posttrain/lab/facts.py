"""Facts about invented people and their negations: the negative-feedback probe of seed document 000.

Every person has a favourite person F and a least favourite person L (F != L, neither is the person). Three
relations are written as a question and an answer statement:

| relation          | question                               | statement                              | true when |
|-------------------|----------------------------------------|----------------------------------------|-----------|
| `favourite`       | Who is A's favourite person?           | A's favourite person is B.             | B == F    |
| `least_favourite` | Who is A's least favourite person?     | A's least favourite person is B.       | B == L    |
| `not_favourite`   | Who is not A's favourite person?       | A's favourite person is not B.         | B != F    |

People split into `train` (all three relations are taught, with false statements as negatives) and `probe`
(only the favourite is taught). The probe asks a probe person's least favourite: a model that learnt only
"A ... B" from positive examples tends to answer F, the one name it associates with A (seed 000's claim).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

QUESTIONS = {"favourite": "Who is {a}'s favourite person?", "least_favourite": "Who is {a}'s least favourite person?",
             "not_favourite": "Who is not {a}'s favourite person?"}
STATEMENTS = {"favourite": "{a}'s favourite person is {b}.", "least_favourite": "{a}'s least favourite person is {b}.",
              "not_favourite": "{a}'s favourite person is not {b}."}
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "r", "l", "s", "m")


@dataclass(frozen=True)
class Fact:
    person: str
    favourite: str
    least_favourite: str

    def true_target(self, relation: str) -> str:
        """The name that makes the relation's statement true (for `not_favourite`: the least favourite)."""
        return self.favourite if relation == "favourite" else self.least_favourite

    def false_target(self, relation: str) -> str:
        """The name that makes the relation's statement false."""
        return self.least_favourite if relation == "favourite" else self.favourite

    def row(self, relation: str, target: str) -> dict:
        """Unpaired-preference row (TRL's `prompt`/`completion`/`label`), conversational, with gold columns."""
        if relation not in QUESTIONS:
            raise ValueError(f"unknown fact relation {relation!r}; expected one of {sorted(QUESTIONS)}")
        label = target != self.favourite if relation == "not_favourite" else target == self.true_target(relation)
        return {"prompt": [{"role": "user", "content": QUESTIONS[relation].format(a=self.person)}],
                "completion": [{"role": "assistant", "content": STATEMENTS[relation].format(a=self.person, b=target)}],
                "label": label, "person": self.person, "relation": relation, "target": target}

    def statement(self, relation: str) -> str:
        return STATEMENTS[relation].format(a=self.person, b=self.true_target(relation))


def invent_names(rng: random.Random, n: int) -> list[str]:
    """`n` distinct pronounceable invented names (two syllables, capitalised), e.g. "Zorla", "Bemin"."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        if name not in seen:
            seen.add(name)
            names.append(name.capitalize())
    return names


def make_facts(seed: int, n_people: int) -> list[Fact]:
    """One fact per invented person, with a favourite and a different least favourite among the others."""
    if n_people < 3:
        raise ValueError(f"facts need at least 3 people (a person, a favourite, a least favourite); got {n_people}")
    rng = random.Random(f"facts-{seed}")
    names = invent_names(rng, n_people)
    facts = []
    for person in names:
        fav, least = rng.sample([x for x in names if x != person], 2)
        facts.append(Fact(person, fav, least))
    return facts


def facts_splits(seed: int, n_people: int, probe_fraction: float = 0.25) -> dict[str, list[Fact]]:
    """`{"train", "probe"}`: disjoint people; probe people's least favourite is never taught."""
    facts = make_facts(seed, n_people)
    n_probe = max(1, round(n_people * probe_fraction))
    return {"train": facts[n_probe:], "probe": facts[:n_probe]}


def taught_relations(split: str) -> tuple[str, ...]:
    """Which relations the training data states for a person of `split`."""
    return ("favourite", "least_favourite", "not_favourite") if split == "train" else ("favourite",)


def labelled_rows(splits: dict[str, list[Fact]]) -> list[dict]:
    """Every taught statement with `label: True`, and for train people its false twin with `label: False`."""
    rows = []
    for split, facts in splits.items():
        for fact in facts:
            for rel in taught_relations(split):
                rows.append(fact.row(rel, fact.true_target(rel)))
                if split == "train":
                    rows.append(fact.row(rel, fact.false_target(rel)))
    return rows


def paired_rows(facts: list[Fact]) -> list[dict]:
    """`prompt`/`completion`/`rejected` rows (conversational): the true statement and its false twin."""
    rows = []
    for fact in facts:
        for rel in QUESTIONS:
            good, bad = fact.row(rel, fact.true_target(rel)), fact.row(rel, fact.false_target(rel))
            rows.append({"prompt": good["prompt"], "completion": good["completion"], "rejected": bad["completion"]})
    return rows


def probe_rows(facts: list[Fact]) -> list[dict]:
    """Held-out questions: a probe person's least favourite. `favourite` is the tempting wrong answer."""
    return [{"prompt": [{"role": "user", "content": QUESTIONS["least_favourite"].format(a=f.person)}],
             "answer": f.least_favourite, "favourite": f.favourite, "person": f.person, "relation": "least_favourite"}
            for f in facts]


def named_person(text: str, names: list[str]) -> str | None:
    """The last of `names` that `text` mentions as a whole word (the answer a statement ends with), else None."""
    best, best_pos = None, -1
    for name in names:
        for m in re.finditer(rf"\b{re.escape(name)}\b", text):
            if m.start() > best_pos:
                best, best_pos = name, m.start()
    return best
