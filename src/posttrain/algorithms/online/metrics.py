"""Online algorithms' bookkeeping around the maths: the columns a reward function sees, a round's
metrics summed over processes, and the sample tables written to the output folder."""
from __future__ import annotations

import json
import math
import os

from posttrain.core.distributed import all_reduce


def columns_for(row_columns: list[dict], n: int, completion_ids: list[list[int]]) -> dict[str, list]:
    """Reward columns, one entry per completion (each row's value repeated for its `n` samples), plus
    `completion_lengths` (tokens of each completion) and `completion_ids` (TRL's name for the tokens)."""
    keys = sorted({k for cols in row_columns for k in cols})
    out = {k: [cols.get(k) for cols in row_columns for _ in range(n)] for k in keys}
    out["completion_lengths"] = [len(ids) for ids in completion_ids]
    out["completion_ids"] = [list(ids) for ids in completion_ids]  # as TRL passes them
    return out


def _local_sums(scores, rollouts, names: list[str]) -> list[float]:
    if scores is None:
        return [0.0] * (6 + 2 * len(names))
    total = [v for v in scores.total if v is not None]
    out = [len(scores.total), len(total), sum(total), sum(v * v for v in total),
           sum(len(c) for c in rollouts.completion_ids), sum(rollouts.truncated)]
    for name in names:
        values = [v for v in scores.components[name] if v is not None]
        out += [sum(values), len(values)]
    return [float(v) for v in out]


def summarise(scores, rollouts, names: list[str], extra: dict[str, float] | None = None) -> dict[str, float]:
    """Metrics of completions over ALL processes (a collective call: every process must make it):
    `reward/total/{mean,std,none_count}`, `reward/<name>/{mean,none_count}` per function,
    `completion_len/{mean,max}`, `frac_truncated`, and each `extra` value and reward count (`scores.counts`) summed."""
    extra = {**(getattr(scores, "counts", None) or {}), **dict(extra or {})}
    sums = all_reduce(_local_sums(scores, rollouts, names) + list(extra.values()))
    longest = 0 if scores is None else max((len(c) for c in rollouts.completion_ids), default=0)
    longest = all_reduce([float(longest)], op="max")[0]
    rows, n, s, s2, length, trunc = sums[:6]
    nan = float("nan")
    mean = s / n if n else nan
    out = {"reward/total/mean": mean, "reward/total/std": math.sqrt(max(s2 / n - mean * mean, 0.0)) if n else nan,
           "reward/total/none_count": rows - n, "completion_len/mean": length / rows if rows else nan,
           "completion_len/max": longest, "frac_truncated": trunc / rows if rows else nan}
    for k, name in enumerate(names):
        cs, cn = sums[6 + 2 * k: 8 + 2 * k]
        out[f"reward/{name}/mean"] = cs / cn if cn else nan
        out[f"reward/{name}/none_count"] = rows - cn
    out.update(zip(extra, sums[6 + 2 * len(names):]))
    return out


def write_samples(path: str, step: int, prompts: list[str], rollouts, scores, advantages) -> str:
    """JSONL sample table: one line per completion with prompt, completion, reward (total and per function),
    advantage, completion length and whether it was truncated. Written atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        for i, text in enumerate(rollouts.texts):
            f.write(json.dumps({"step": step, "prompt": prompts[i], "completion": text, "reward": scores.total[i],
                                "rewards": {k: v[i] for k, v in scores.components.items()},
                                "advantage": round(float(advantages[i]), 4),
                                "length": len(rollouts.completion_ids[i]), "truncated": rollouts.truncated[i]}) + "\n")
    os.replace(tmp, path)
    return path
