"""A toy reward for the multi-process GRPO/PPO tests, loaded as `path/to/rewards.py:digits`."""


def digits(prompts, completions, **columns):
    """The fraction of a completion's non-space characters that are digits."""
    out = []
    for c in completions:
        chars = [ch for ch in c if not ch.isspace()]
        out.append(sum(ch.isdigit() for ch in chars) / max(len(chars), 1))
    return out
