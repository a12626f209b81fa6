"""Reward of the GPU check's GRPO steps: 1.0 when the completion contains a digit (the speed is the point)."""


def has_number(prompts, completions, **columns):
    return [1.0 if any(ch.isdigit() for ch in c) else 0.0 for c in completions]
