"""Write the lab world as JSONL files in TRL's row formats (one JSON object per line, UTF-8).

| file                  | rows                                                                                |
|-----------------------|-------------------------------------------------------------------------------------|
| `sft.jsonl`           | `messages` (user, assistant): arithmetic worked answers + honest reviews; `task`    |
| `sft_eval.jsonl`      | the same on held-out arithmetic (test split) and held-out review tasks              |
| `sft_neg.jsonl`       | `prompt`, `completion`, `rejected` (message lists): right vs wrong answer; `task`   |
| `pref.jsonl`          | `prompt`, `chosen`, `rejected` (message lists) judged by the simulated rater on     |
|                       | train reviews; `rater_prob`, `gold_chosen`, `gold_rejected`, `gold_chosen_better`,  |
|                       | `chosen_style`, `rejected_style`, `code`, `buggy`, `bug_line`, `bug_kind`           |
| `pref_eval.jsonl`     | the same on held-out (eval) review tasks                                            |
| `rank.jsonl`          | `prompt`, `responses` (message lists, best first), `gold`, `styles`, gold columns  |
| `arith_train.jsonl`   | `prompt` (one user message), `answer` (string), `level`, `solution`                 |
| `arith_test.jsonl`    | same levels as train, disjoint expressions                                          |
| `arith_hard.jsonl`    | level 3 (three operations), held out                                                |
| `review_prompts.jsonl`| train review prompts: `prompt`, `code`, `buggy`, `bug_line`, `bug_kind`             |
| `review_eval.jsonl`   | the same for held-out review tasks (gold metrics, `pref_eval` prompts)              |
| `facts.jsonl`         | `prompt`, `completion`, `label` (TRL unpaired preference), `person`, `relation`,    |
|                       | `target`: true statements and, for train people, their false twins (`label: false`) |
| `facts_probe.jsonl`   | `prompt`, `answer`, `favourite`, `person`, `relation`: held-out least favourites    |
| `web.jsonl`           | `text`: the pretraining mixture (plain text unless `web_chat`)                      |
| `manifest.json`       | world version, seed, sizes, rater settings, web format, row counts                  |
"""
from __future__ import annotations

import json
import os

from .facts import labelled_rows, probe_rows
from .preferences import preference_rows, ranking_rows
from .raters import SimulatedRater
from .rows import review_prompt_rows, sft_neg_rows, sft_rows
from .web import web_texts
from .world import World, WorldSizes

DEFAULT_RATER_TEMPERATURE = 0.25


def write_jsonl(path: str, rows: list[dict]) -> str:
    """Write `rows` to `path` (one JSON object a line), atomically; returns the path."""
    tmp = f"{path}.tmp{os.getpid()}"   # per process: experiments run as parallel processes write the same files
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def world_files(world: World, rater: SimulatedRater, *, web_chat: bool = False) -> dict[str, list[dict]]:
    """Every exported data set of `world` by file stem (see the module docstring)."""
    s = world.sizes
    return {
        "sft": sft_rows(world),
        "sft_eval": sft_rows(world, held_out=True),
        "sft_neg": sft_neg_rows(world),
        "pref": preference_rows(world.review_train, rater, s.pref_pairs, world.seed),
        "pref_eval": preference_rows(world.review_eval, rater, s.pref_eval_pairs, world.seed + 1_000_003),
        "rank": ranking_rows(world.review_train, rater, s.rankings, world.seed),
        "arith_train": [p.to_row() for p in world.arith_train],
        "arith_test": [p.to_row() for p in world.arith_test],
        "arith_hard": [p.to_row() for p in world.arith_hard],
        "review_prompts": review_prompt_rows(world.review_train),
        "review_eval": review_prompt_rows(world.review_eval),
        "facts": labelled_rows(world.facts),
        "facts_probe": probe_rows(world.facts_probe),
        "web": [{"text": t} for t in web_texts(world, chat=web_chat)],
    }


def export(out_dir: str, seed: int = 0, size: WorldSizes | str = "default", *, rater: SimulatedRater | None = None,
           web_chat: bool = False) -> dict[str, str]:
    """Build `World(seed, size)` and write every data set to `out_dir`; returns `{file stem: path}`.

    `rater` judges `pref`, `pref_eval` and `rank`; by default an unbiased rater with temperature 0.25.
    """
    world = World(seed, size)
    rater = rater or SimulatedRater(temperature=DEFAULT_RATER_TEMPERATURE, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    files = world_files(world, rater, web_chat=web_chat)
    paths = {name: write_jsonl(os.path.join(out_dir, f"{name}.jsonl"), rows) for name, rows in files.items()}
    manifest = {**world.describe(), "fingerprint": world.fingerprint(), "rater": rater.config(),
                "web_format": "chatml" if web_chat else "plain", "rows": {k: len(v) for k, v in files.items()}}
    paths["manifest"] = os.path.join(out_dir, "manifest.json")
    with open(paths["manifest"], "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return paths
