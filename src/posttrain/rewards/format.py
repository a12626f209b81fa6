"""``format`` and ``length_penalty`` rewards: the shape of a completion, not its correctness.

``format``: 1.0 when the completion matches a regex, else 0.0. By default the whole completion
must be ``<think>…</think>`` then ``<answer>…</answer>`` (whitespace around allowed, each tag
exactly once, no tag nested in another); ``tags`` changes the sequence, ``pattern`` replaces it
with a user regex (matched against the whole completion, or anywhere with ``search=True``).

``length_penalty``: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13). With
``L_max = max_length``, ``L_cache = buffer`` and ``L = |completion|``:
    R = 0                                   if L <= L_max - L_cache
    R = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max   (from 0 down to -1)
    R = -1                                  if L > L_max
``unit``: ``chars`` (default), ``words`` (whitespace-separated), or ``tokens``, read from the
``completion_lengths`` column (token counts the trainer passes).
"""
from __future__ import annotations

import re


def _tags_pattern(tags: tuple[str, ...]) -> str:
    names = "|".join(re.escape(t) for t in tags)
    body = rf"(?:(?!</?(?:{names})>).)*"  # content that holds none of the tags
    return r"\s*" + r"\s*".join(rf"<{re.escape(t)}>{body}</{re.escape(t)}>" for t in tags) + r"\s*"


class FormatReward:
    name = "format"

    def __init__(self, *, pattern: str | None = None, tags: tuple[str, ...] | list[str] = ("think", "answer"),
                 search: bool = False):
        if pattern is None and not tags:
            raise ValueError("format reward: give a regex 'pattern' or a non-empty list of 'tags'")
        source = pattern if pattern is not None else _tags_pattern(tuple(tags))
        try:
            self.regex = re.compile(source, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"format reward: invalid regex {source!r}: {exc}") from None
        self.search = search

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        match = self.regex.search if self.search else self.regex.fullmatch
        return [1.0 if match(c) else 0.0 for c in completions]


class LengthPenalty:
    name = "length_penalty"

    def __init__(self, *, max_length: int, buffer: int, unit: str = "chars"):
        if not 0 < buffer <= max_length:
            raise ValueError(f"length_penalty: need 0 < buffer <= max_length, got buffer={buffer}, "
                             f"max_length={max_length}")
        if unit not in ("chars", "words", "tokens"):
            raise ValueError(f"length_penalty: unit must be chars|words|tokens, got {unit!r}")
        self.max_length, self.buffer, self.unit = int(max_length), int(buffer), unit

    def _lengths(self, completions: list[str], columns: dict) -> list[int]:
        if self.unit == "chars":
            return [len(c) for c in completions]
        if self.unit == "words":
            return [len(c.split()) for c in completions]
        if "completion_lengths" not in columns:
            raise ValueError("length_penalty with unit='tokens' needs a 'completion_lengths' column "
                             f"(token counts); columns given: {sorted(columns)}")
        lengths = [int(n) for n in columns["completion_lengths"]]
        if len(lengths) != len(completions):
            raise ValueError(f"length_penalty: {len(completions)} completions but {len(lengths)} lengths")
        return lengths

    def penalty(self, length: int) -> float:
        free = self.max_length - self.buffer
        if length <= free:
            return 0.0
        if length <= self.max_length:
            return (free - length) / self.buffer
        return -1.0

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        return [self.penalty(n) for n in self._lengths(completions, columns)]
