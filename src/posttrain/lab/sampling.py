"""Drawing distinct items from a seeded generator (shared by the world's generators)."""
from __future__ import annotations

from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


def draw_distinct(draw: Callable[[], T], key: Callable[[T], Hashable], n: int, what: str,
                  exclude: set | None = None) -> list[T]:
    """`n` results of `draw()` with distinct `key`s, none in `exclude`, in draw order; gives up (ValueError
    naming `what`) after 50 n + 1000 draws."""
    seen = set(exclude or ())
    out: list[T] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct {what}")
        item = draw()
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out
