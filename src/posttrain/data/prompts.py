"""Prompt data for online algorithms (GRPO, PPO, ...): rows with a `prompt`, rendered to the text the
policy continues, filtered to those that leave room for the completion.

A text is `template.format(prompt=...)` when a `prompt_template` is set (e.g. for a base model; it
receives the plain prompt, or the last user message's content), else the chat template with the
generation prompt (`chat.encode_prompt`; a plain-text prompt stays as it is). A row is dropped, and
counted by reason, when its messages cannot be rendered (no chat template) or its text is empty or
longer than `budget` tokens (`max_length - max_new_tokens`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Prompts:
    """Kept prompt rows in data order: `texts[i]` is row `rows[i]` rendered; `rows[i]` is the whole row
    (its `prompt` as the data holds it, text or messages, and every other column)."""
    texts: list[str]
    rows: list[dict]
    dropped: dict[str, int]

    def __len__(self) -> int:
        return len(self.texts)

    def columns(self, i: int) -> dict:
        """Row `i`'s columns besides `prompt` (what a reward function receives as keyword arguments)."""
        return {k: v for k, v in self.rows[i].items() if k != "prompt"}


def user_text(prompt) -> str:
    """The text a `prompt_template` receives: a plain prompt, or the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content") or "")


def load_prompts(spec, tokenizer, *, budget: int, template: str | None = None,
                 max_rows: int | None = None) -> Prompts:
    """The usable prompt rows of data `spec` (`formats.load_rows`, validated as "prompt" data), at most
    the first `max_rows` of them. Rows that cannot be encoded are ONE `DataError` (file, line, field);
    messages without a chat template, or no usable row at all, are a `DataError` with the reasons."""
    from .chat import BadRow, Drop, encode_prompt
    from .errors import DataError, Problem, files_of
    from .formats import load_rows

    rows = load_rows(spec, split="train", kind="prompt")
    candidates, problems, dropped = [], [], {}
    for row, src in zip(rows, rows.sources):
        try:
            candidates.append((template.format(prompt=user_text(row["prompt"])) if template
                               else encode_prompt(row, tokenizer), row))
        except BadRow as e:
            problems.append(Problem(src, e.field, e.expected, e.found))
        except Drop:
            raise DataError(f"{files_of(rows.sources)}: the prompts are messages but the tokenizer has no chat "
                            "template; set prompt_template (e.g. 'Question: {prompt}\\nAnswer:')") from None
    if problems:
        raise DataError(problems, header=f"{len(problems)} bad prompt row{'s' if len(problems) != 1 else ''}")
    lengths = [len(ids) for ids in tokenizer([t for t, _ in candidates], add_special_tokens=False)["input_ids"]] \
        if candidates else []
    texts, kept_rows = [], []
    too_long = f"longer than max_length - max_new_tokens = {budget} tokens"
    for (text, row), n in zip(candidates, lengths):
        reason = "empty prompt" if n == 0 else too_long if n > budget else None
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
        elif max_rows is None or len(texts) < max_rows:
            texts.append(text)
            kept_rows.append(dict(row))
    if not texts:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(dropped.items()))
        raise DataError(f"{files_of(rows.sources)}: no usable prompt among {len(rows)}: dropped "
                        f"{sum(dropped.values())} ({reasons})")
    return Prompts(texts, kept_rows, dropped)
