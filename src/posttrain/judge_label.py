"""`posttrain judge label --config FILE [key=value ...]`: preference pairs labelled by a pairwise judge.

Input rows (JSONL, `data`): a `prompt` (text or messages) and candidates, either `completions` (a
list of >= 2; every pair of them is judged) or `chosen` and `rejected` (re-judged as a pair: the
judge decides which is which). A candidate may be text or a message list (its last message's content
is what the judge reads). Each pair is asked in both orders (`rewards/judge_pairwise.py`); a verdict
that both orders agree on becomes one TRL-format row

    {"prompt": ..., "chosen": ..., "rejected": ..., "confidence": P(chosen better) averaged over orders}

(candidates written back in the form they came in, and any other column of the row kept). Ties
(the orders disagree) and unanswered pairs are dropped and counted; the counts, the position
consistency and the first-position win rate are printed and written to `OUTPUT.summary.json`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from posttrain.config import opt
from posttrain.rewards.judge import JudgeConfig


@dataclass
class LabelConfig:
    data: Any = opt(None, "JSONL of rows with `prompt` and `completions` (list) or `chosen`/`rejected`")
    output: str = opt("labelled.jsonl", "where the labelled prompt/chosen/rejected rows are written")
    min_confidence: float = opt(0.5, "drop a verdict whose confidence in the winner is below this")
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(mode="pairwise"))


def _text(candidate) -> str:
    if isinstance(candidate, list) and candidate and isinstance(candidate[-1], dict):
        return str(candidate[-1].get("content", ""))
    return str(candidate)


def candidate_pairs(rows, sources) -> list[tuple[int, Any, Any]]:
    """(row index, x, y) for every pair to judge; a `DataError` naming file:line and field otherwise."""
    from posttrain.data.errors import DataError, Problem

    pairs, problems = [], []
    for i, row in enumerate(rows):
        if "prompt" not in row:
            problems.append(Problem(sources[i], "prompt", "a prompt (text or messages)", "no such field"))
        elif isinstance(row.get("completions"), list) and len(row["completions"]) >= 2:
            c = row["completions"]
            pairs += [(i, c[a], c[b]) for a in range(len(c)) for b in range(a + 1, len(c))]
        elif "chosen" in row and "rejected" in row:
            pairs.append((i, row["chosen"], row["rejected"]))
        else:
            found = "completions: " + repr(row["completions"])[:40] if "completions" in row else \
                f"fields {sorted(row)}"
            problems.append(Problem(sources[i], "completions", "a list of >= 2 candidates, or chosen and rejected",
                                    found))
    if problems:
        raise DataError(problems, header=f"{len(problems)} bad rows for judge label")
    return pairs


def label(cfg: LabelConfig, backend=None) -> dict:
    """Judge every pair, write `cfg.output` and its summary; the summary (counts and position stats)."""
    from posttrain.data.formats import load_rows
    from posttrain.rewards.judge import build_judge
    from posttrain.rewards.judge_text import JudgeError

    if cfg.judge.mode != "pairwise":
        raise JudgeError(f"judge label needs judge.mode: pairwise, found {cfg.judge.mode!r}")
    if not cfg.data:
        raise JudgeError("judge label: set data (a JSONL of prompt + completions or chosen/rejected rows)")
    rows = load_rows(cfg.data)
    pairs = candidate_pairs(rows, rows.sources)
    judge = build_judge(cfg.judge, backend=backend).judge
    fields = [f for f in judge.fields if f not in ("prompt", "completion_a", "completion_b")]
    columns = [{f: rows[i][f] for f in fields if f in rows[i]} for i, _, _ in pairs]
    verdicts = judge.compare([rows[i]["prompt"] for i, _, _ in pairs], [_text(x) for _, x, _ in pairs],
                             [_text(y) for _, _, y in pairs], columns)
    kept, low = [], 0
    for (i, x, y), v in zip(pairs, verdicts):
        if v is None or v.winner == "tie":
            continue
        chosen, rejected, conf = (x, y, v.confidence) if v.winner == "x" else (y, x, 1.0 - v.confidence)
        if conf < cfg.min_confidence:
            low += 1
            continue
        extra = {k: val for k, val in rows[i].items() if k not in ("prompt", "completions", "chosen", "rejected")}
        kept.append({"prompt": rows[i]["prompt"], "chosen": chosen, "rejected": rejected,
                     "confidence": round(conf, 6), **extra})
    s = judge.summary()
    summary = {"pairs": len(pairs), "kept": len(kept), "ties_dropped": s["ties"], "unanswered_dropped": s["none"],
               "low_confidence_dropped": low, "position_consistency": s["position_consistency"],
               "first_position_win_rate": s["first_position_win_rate"], "output": os.path.abspath(cfg.output)}
    os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
    with open(cfg.output + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(cfg.output + ".tmp", cfg.output)
    with open(cfg.output + ".summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def describe(s: dict) -> str:
    """The summary as the command prints it."""
    return (f"judged {s['pairs']} pairs: kept {s['kept']}, dropped {s['ties_dropped']} ties (the two orders "
            f"disagreed), {s['unanswered_dropped']} unanswered, {s['low_confidence_dropped']} below min_confidence\n"
            f"position consistency {s['position_consistency']:.3f}, first-position win rate "
            f"{s['first_position_win_rate']:.3f}\n  pairs    {s['output']}\n  summary  {s['output']}.summary.json")
