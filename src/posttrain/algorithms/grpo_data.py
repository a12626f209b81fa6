"""GRPO's I/O around the maths: prompts from data specs, rewards from config, the columns a reward
function sees, step metrics summed over processes, and the sample tables written to the output folder.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from posttrain.core.engine import _all_reduce


def build_reward(specs: Any):
    """A `CombinedReward` from the config's `rewards`: a list whose entries are a name (weight 1) or a
    mapping `{name, weight (default 1), ...options passed to the reward}`; a single entry may stand alone."""
    from posttrain.config import plain
    from posttrain.rewards import CombinedReward, load_reward

    specs = plain(specs)
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if not specs:
        raise ValueError("rewards: give at least one reward function, e.g. [{name: math, weight: 1.0}]")
    fns, weights = [], []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"rewards[{i}]: expected a name or a mapping with 'name', found {spec!r}")
        options = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        fns.append(load_reward(spec["name"], **options))
        weights.append(float(spec.get("weight", 1.0)))
    return CombinedReward(fns, weights)


def _user_text(prompt) -> str:
    """The text a `prompt_template` receives: a plain prompt, or the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content") or "")


def load_prompts(spec, tokenizer, template: str | None, budget: int, max_rows: int | None = None
                 ) -> tuple[list[str], list[dict], int]:
    """(prompt texts, other columns of each row, rows dropped for being over `budget` tokens).

    A text is `template.format(prompt=...)` when `template` is set, else the chat template with the
    generation prompt (`data.encode_prompt`; a plain-text prompt stays as it is)."""
    from posttrain.data import DataError, Drop, encode_prompt, load_rows
    from posttrain.data.chat import BadRow
    from posttrain.data.errors import Problem, files_of

    rows = load_rows(spec, kind="prompt")
    if max_rows is not None:
        rows = rows.subset(range(min(max_rows, len(rows))))
    texts, problems = [], []
    for row, src in zip(rows, rows.sources):
        if template:
            texts.append(template.format(prompt=_user_text(row["prompt"])))
            continue
        try:
            texts.append(encode_prompt(row, tokenizer))
        except BadRow as e:
            problems.append(Problem(src, e.field, e.expected, e.found))
        except Drop:
            raise DataError("the prompts are messages but the tokenizer has no chat template; set prompt_template "
                            "(e.g. 'Question: {prompt}\\nAnswer:')") from None
    if problems:
        raise DataError(problems, header=f"{len(problems)} bad prompt row{'s' if len(problems) != 1 else ''}")
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    keep = [i for i, n in enumerate(lengths) if 0 < n <= budget]
    columns = [{k: v for k, v in rows[i].items() if k != "prompt"} for i in keep]
    if not keep:
        raise DataError(f"{files_of(rows.sources)}: no usable prompt among {len(rows)}: dropped {len(rows)} "
                        f"(longer than max_length - max_new_tokens = {budget} tokens, or empty)")
    return [texts[i] for i in keep], columns, len(rows) - len(keep)


def columns_for(row_columns: list[dict], n: int, completion_ids: list[list[int]]) -> dict[str, list]:
    """Reward columns, one entry per completion (each row's value repeated for its `n` samples), plus
    `completion_lengths` (tokens of each completion)."""
    keys = sorted({k for cols in row_columns for k in cols})
    out = {k: [cols.get(k) for cols in row_columns for _ in range(n)] for k in keys}
    out["completion_lengths"] = [len(ids) for ids in completion_ids]
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
    `completion_len/{mean,max}`, `frac_truncated`, and each `extra` value summed."""
    import torch.distributed as dist

    extra = dict(extra or {})
    sums = _all_reduce(_local_sums(scores, rollouts, names) + list(extra.values()))
    longest = 0 if scores is None else max((len(c) for c in rollouts.completion_ids), default=0)
    longest = _all_reduce([float(longest)], op=dist.ReduceOp.MAX)[0]
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
