"""The "web": the pretraining mixture of the world's text, and the corpus a tokenizer is trained on.

Documents are drawn (seeded) from TRAIN splits only, never from test, hard, eval or probe material:

- arithmetic (40%): a question and a bare answer ("What is 17 + 25?\\n17 + 25 = 42"), never the `#### N`
  format, which the base model first meets in SFT;
- code reviews (45%): a review prompt and a review in any style, as on the web: sycophantic 40%,
  honest 30%, vague 15%, false alarm 15%;
- facts (15%): the taught statements ("Zorla's favourite person is Bemin.").

`web_texts(world, chat=False)` writes plain text: the prompt, a newline, the answer. With `chat=True`
each question/answer document is a ChatML conversation exactly as `core.tiny.CHAT_TEMPLATE` renders it
(`<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n...<|im_end|>\\n`); facts stay plain statements.
"""
from __future__ import annotations

import random
from typing import Iterator

from .arithmetic import ArithmeticProblem
from .facts import taught_relations
from .review import review_response
from .rows import sft_rows
from .world import World

WEB_MIX = {"arithmetic": 0.40, "review": 0.45, "facts": 0.15}
WEB_REVIEW_STYLES = {"sycophantic": 0.40, "honest": 0.30, "vague": 0.15, "false_alarm": 0.15}


def chatml(messages: list[dict]) -> str:
    """Messages in ChatML, as `core.tiny.CHAT_TEMPLATE` renders them (no generation prompt)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def _bare_answer(p: ArithmeticProblem, rng: random.Random) -> str:
    form = rng.randrange(3)
    if form == 0:
        return f"{p.expression} = {p.answer}"
    if form == 1:
        return f"The answer is {p.answer}."
    return "\n".join(f"{a} {op} {b} = {r}" for a, op, b, r in p.steps())


def _doc(prompt: str, answer: str, chat: bool) -> str:
    if chat:
        return chatml([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return f"{prompt}\n{answer}"


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def web_texts(world: World, *, chat: bool = False, n: int | None = None) -> list[str]:
    """`n` (default `world.sizes.web_docs`) pretraining documents; plain text unless `chat`."""
    rng = random.Random(f"web-{world.seed}")
    statements = [f.statement(rel) for split, facts in world.facts.items() for f in facts
                  for rel in taught_relations(split)]
    docs = []
    for _ in range(world.sizes.web_docs if n is None else n):
        kind = _pick(rng, WEB_MIX)
        if kind == "arithmetic":
            p = rng.choice(world.arith_train)
            docs.append(_doc(p.prompt, _bare_answer(p, rng), chat))
        elif kind == "review":
            t = rng.choice(world.review_train)
            docs.append(_doc(t.prompt, review_response(t, _pick(rng, WEB_REVIEW_STYLES), rng), chat))
        else:
            docs.append(rng.choice(statements))
    return docs


def corpus(world: World) -> Iterator[str]:
    """Text for training a tokenizer: the plain web, its ChatML form, and the SFT demonstrations (with `####`)."""
    yield from web_texts(world)
    yield from web_texts(world, chat=True, n=max(1, world.sizes.web_docs // 10))
    for row in sft_rows(world):
        yield chatml(row["messages"])
