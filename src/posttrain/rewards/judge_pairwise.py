"""A pairwise judge: "which of A and B is better", asked in BOTH orders.

For x against y, order 1 puts x in position A and order 2 puts x in position B:

    p1 = P(A | A=x, B=y)       p2 = P(B | A=y, B=x)        (each: P(first) / (P(first) + P(second)))

x wins when both orders prefer it (p1 > 0.5 and p2 > 0.5), y wins when both prefer y, and anything
else is a tie: a judge that always says "A" produces only ties, not a winner. The verdict's
confidence is (p1 + p2) / 2 = P(x better) averaged over the orders. Either order unanswerable (a
reply naming neither A nor B, a failed server call, a too-long input) makes the verdict None.
`stats` counts verdicts, ties and Nones; `summary()` gives the position consistency (share of
answered pairs where both orders name the same response) and the first-position win rate (share of
answered questions where position A was preferred; 0.5 for a judge with no position bias).

As a reward (`PairwiseReward`, `judge.mode: pairwise`): win 1, tie 0.5, loss 0, None when unanswered.
- with `reference: COLUMN`: each completion against the row's reference answer; 2 questions per
  completion, and a fixed anchor, so scores are comparable across rounds; it saturates once every
  completion beats the reference (all 1: no advantage left).
- without: each completion against every other completion of its group (same prompt), its reward the
  mean over opponents; G(G-1) questions per group of G. GRPO's advantage is relative within the
  group anyway, so the group's own win rate is exactly the quantity it needs, with no reference
  answer in the data and no saturation; its cost grows with G².
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .judge_text import DEFAULT_TEMPLATES, Fence, JudgeError, check_template, fill, prompt_text


@dataclass
class Verdict:
    p1: float               # P(x better) with x in position A
    p2: float               # P(x better) with x in position B
    winner: str             # "x", "y" or "tie"
    confidence: float       # (p1 + p2) / 2

    @property
    def value(self) -> float:
        return {"x": 1.0, "y": 0.0, "tie": 0.5}[self.winner]


class PairwiseJudge:
    def __init__(self, backend, *, template: str | None = None, defend: bool = True,
                 a_words: Sequence[str] = ("A", " A"), b_words: Sequence[str] = ("B", " B"),
                 max_new_tokens: int = 8, fence: Fence | None = None):
        self.backend = backend
        self.template = template if template is not None else DEFAULT_TEMPLATES["pairwise"]
        self.fields = check_template(self.template, "pairwise")
        self.fence = (fence or Fence()) if defend else None
        self.a_words, self.b_words, self.max_new_tokens = list(a_words), list(b_words), max_new_tokens
        self.cache: dict[tuple, float] = {}
        self.stats = {"pairs": 0, "none": 0, "ties": 0, "consistent": 0, "first_position_wins": 0, "asked": 0}

    def question(self, prompt, a: str, b: str, columns: dict) -> str:
        values = {**columns, "prompt": prompt_text(prompt), "completion_a": a, "completion_b": b}
        return fill(self.template, self.fields, values, self.fence)

    def _p_first(self, prompts, firsts, seconds, columns: list[dict]) -> list[float | None]:
        """P(position A better) for each (prompt, A, B), through the cache."""
        keys = [(self.backend.name, self.template, prompt_text(p), a, b, tuple(sorted(c.items())))
                for p, a, b, c in zip(prompts, firsts, seconds, columns)]
        first: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in self.cache:
                first.setdefault(k, i)
        ask = list(first.values())
        texts = [self.question(prompts[i], firsts[i], seconds[i], columns[i]) for i in ask]
        got = self.backend.choice_probs(texts, self.a_words, self.b_words) if texts else []
        fresh = dict(zip((keys[i] for i in ask), got))
        self.stats["asked"] += len(ask)
        out = [self.cache.get(k, fresh.get(k)) for k in keys]
        self.cache.update((k, v) for k, v in fresh.items() if v is not None)
        return out

    def compare(self, prompts: Sequence, xs: Sequence[str], ys: Sequence[str],
                columns: list[dict] | None = None) -> list[Verdict | None]:
        """One verdict of x against y per row (module docstring); `columns[i]` fills other template fields."""
        if not len(prompts) == len(xs) == len(ys):
            raise JudgeError(f"pairwise judge: {len(prompts)} prompts, {len(xs)} first and {len(ys)} second responses")
        columns = columns or [{} for _ in prompts]
        n = len(prompts)
        both = self._p_first(list(prompts) * 2, list(xs) + list(ys), list(ys) + list(xs), list(columns) * 2)
        out: list[Verdict | None] = []
        for i in range(n):
            a_first, b_first = both[i], both[n + i]      # P(A) with x as A; P(A) with y as A
            if a_first is None or b_first is None:
                self.stats["none"] += 1
                out.append(None)
                continue
            p1, p2 = a_first, 1.0 - b_first
            winner = "x" if p1 > 0.5 and p2 > 0.5 else "y" if p1 < 0.5 and p2 < 0.5 else "tie"
            self.stats["pairs"] += 1
            self.stats["ties"] += winner == "tie"
            self.stats["consistent"] += winner != "tie"
            self.stats["first_position_wins"] += (a_first > 0.5) + (b_first > 0.5)
            out.append(Verdict(p1, p2, winner, (p1 + p2) / 2))
        return out

    def summary(self) -> dict[str, float]:
        """Counts so far, with `position_consistency` and `first_position_win_rate` (nan before any pair)."""
        s, n = dict(self.stats), self.stats["pairs"]
        s["position_consistency"] = s["consistent"] / n if n else float("nan")
        s["first_position_win_rate"] = s["first_position_wins"] / (2 * n) if n else float("nan")
        return s


class PairwiseReward:
    """`PairwiseJudge` as a `RewardFn` (module docstring: against `reference` or the group's others)."""

    def __init__(self, judge: PairwiseJudge, reference: str | None = None, name: str = "judge"):
        self.judge, self.reference, self.name = judge, reference, name
        self._seen = dict(judge.stats)

    def counts(self) -> dict[str, float]:
        """Counts since the previous call, summable over processes (`RewardOutput.counts`): judge/pairs (verdicts),
        judge/consistent (both orders agreed: consistency = consistent / pairs), judge/first_position_wins (out
        of 2 * pairs questions), judge/unanswered."""
        now, before = dict(self.judge.stats), self._seen
        self._seen = now
        keys = {"pairs": "pairs", "consistent": "consistent", "first_position_wins": "first_position_wins",
                "unanswered": "none"}
        return {f"{self.name}/{k}": float(now[v] - before[v]) for k, v in keys.items()}

    def __call__(self, prompts: Sequence, completions: Sequence[str], **columns) -> list[float | None]:
        if len(prompts) != len(completions):
            raise JudgeError(f"{len(prompts)} prompts but {len(completions)} completions")
        used = [k for k in self.judge.fields if k not in ("prompt", "completion_a", "completion_b")]
        missing = [k for k in used + ([self.reference] if self.reference else []) if k not in columns]
        if missing:
            raise JudgeError(f"pairwise judge needs data column(s) {missing}; columns: {sorted(columns)}")
        cols = [{k: columns[k][i] for k in used} for i in range(len(prompts))]
        if self.reference:
            refs = [str(r) for r in columns[self.reference]]
            return [None if v is None else v.value for v in self.judge.compare(prompts, completions, refs, cols)]
        return self._against_group(prompts, completions, cols)

    def _against_group(self, prompts, completions, cols) -> list[float | None]:
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault((prompt_text(p), tuple(sorted(cols[i].items()))), []).append(i)
        pairs = [(g[a], g[b]) for g in groups.values() for a in range(len(g)) for b in range(a + 1, len(g))]
        verdicts = self.judge.compare([prompts[i] for i, _ in pairs], [completions[i] for i, _ in pairs],
                                      [completions[j] for _, j in pairs], [cols[i] for i, _ in pairs])
        wins: list[list[float]] = [[] for _ in prompts]
        for (i, j), v in zip(pairs, verdicts):
            if v is not None:
                wins[i].append(v.value)
                wins[j].append(1.0 - v.value)
        return [sum(w) / len(w) if w else None for w in wins]
