"""The lab: a small synthetic world with a known gold truth, in which the claims of post-training are measured.

- `arithmetic`: leveled questions with worked answers ending `#### N`; `arithmetic_correct` is the gold check.
- `review_code`, `review_styles`, `review`: code-review tasks with planted bugs, reviews in four styles,
  and the gold scoring of any review text (`review_gold`, `is_sycophantic`, `is_false_alarm`, ...).
- `facts`: favourite / least favourite people and negations, for seed 000's negative-feedback probe.
- `raters`: simulated human raters (gold + length / confidence / sycophancy biases, Bradley-Terry noise).
- `preferences`: rater-judged preference pairs and K-wise rankings on reviews.
- `world`: `World(seed, sizes)` with every split; `WORLD_VERSION`.
- `rows`, `web`, `export`: TRL-format rows, the pretraining "web" mixture, JSONL export.
- `gold`: gold metrics of generated completions. `cli`: `posttrain lab ...`.
"""
from .world import WORLD_VERSION, World, WorldSizes

__all__ = ["WORLD_VERSION", "World", "WorldSizes"]
