"""`posttrain data inspect` for the data of every algorithm, beside SFT's (`inspect.py`):

- preference rows (`prompt` + `chosen` + `rejected`, implicit prompts, `responses` rankings): each pair
  as the reward model / DPO sees it, the scored response tokens marked, and the kept/truncated/dropped counts;
- prompt-only rows (GRPO, PPO): the exact text generation continues from (chat template or
  `prompt_template`), its length against the budget, and the columns the reward functions receive;
- unpaired rows (KTO): each completion with its label (desirable or not).
"""
from __future__ import annotations

import sys
from typing import Sequence

from .chat import Drop, Encoded, encode_prompt
from .inspect import marked_text
from .preference import build_preference_examples


def _marked(response, tokenizer, color: bool) -> str:
    return marked_text(Encoded(list(response.input_ids), list(response.mask)), tokenizer, color=color)


def inspect_preference(rows: Sequence[dict], tokenizer, *, max_length: int, drop_truncated: bool = False,
                       n: int = 3, color: bool | None = None) -> str:
    """The first `n` rows' pairs (chosen, then rejected; scored tokens marked) and the counts."""
    color = sys.stdout.isatty() if color is None else color
    examples, stats = build_preference_examples(rows, tokenizer, max_length=max_length,
                                                drop_truncated=drop_truncated)
    legend = "green = scored response tokens" if color else "[[scored response tokens]]"
    lines = [f"{len(rows)} preference rows, max_length={max_length}; {legend}"]
    for i, ex in enumerate(examples[:n]):
        kind = f"ranking of {len(ex.responses)}" if len(ex.pairs) > 1 else "pair"
        lines.append(f"--- example {i + 1}: {kind}, {len(ex.pairs)} pair(s), margin {ex.margin:g}, "
                     f"each pair weighs {ex.weight:g}")
        for c, r in ex.pairs[:3]:
            for label, idx in (("chosen", c), ("rejected", r)):
                resp = ex.responses[idx]
                cut = ", truncated" if resp.truncated else ""
                lines.append(f"  {label} (response {idx + 1}, {len(resp.input_ids)} tokens, {resp.length} scored{cut}):")
                lines.append(_marked(resp, tokenizer, color))
    lines.append(f"=== {stats.summary()}")
    return "\n".join(lines)


def _user_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content") or "")


def inspect_prompts(rows: Sequence[dict], tokenizer, *, budget: int, template: str | None = None,
                    n: int = 3) -> str:
    """The first `n` prompts as generation sees them, and how many fit in `budget` tokens."""
    from .validate import validate_rows

    validate_rows(rows, "prompt")
    texts, dropped = [], {}
    for row in rows:
        try:
            texts.append(template.format(prompt=_user_text(row["prompt"])) if template else encode_prompt(row, tokenizer))
        except Drop as d:
            texts.append(None)
            dropped[d.reason] = dropped.get(d.reason, 0) + 1
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) if t is not None else 0 for t in texts]
    over = sum(1 for t, k in zip(texts, lengths) if t is not None and not 0 < k <= budget)
    columns = sorted({k for row in rows for k in row if k != "prompt"})
    how = f"prompt_template {template!r}" if template else "the chat template (plain-text prompts as they are)"
    lines = [f"{len(rows)} prompt rows, rendered with {how}; budget {budget} tokens (max_length - max_new_tokens)",
             "reward functions receive the columns: " + (", ".join(columns) if columns else "(none besides prompt)")
             + " (+ completion_lengths)"]
    for i, (row, text, k) in enumerate(list(zip(rows, texts, lengths))[:n]):
        extra = {c: row[c] for c in columns if c in row}
        lines.append(f"--- row {i + 1}: {k} tokens" + (f", columns {_short(extra)}" if extra else ""))
        lines.append(text if text is not None else "(dropped: no chat template for messages)")
    kept = len(rows) - over - sum(dropped.values())
    why = ", ".join(f"{r}: {c}" for r, c in dropped.items())
    lines.append(f"=== kept {kept} prompts, dropped {over} longer than {budget} tokens"
                 + (f", {sum(dropped.values())} other ({why})" if dropped else ""))
    return "\n".join(lines)


def _short(value, limit: int = 160) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def inspect_unpaired(rows: Sequence[dict], tokenizer, *, max_length: int, n: int = 3,
                     color: bool | None = None) -> str:
    """KTO's unpaired rows (`prompt` + `completion` + `label`, or preference pairs split into one desirable
    and one undesirable row): the first `n` with their label and trained completion tokens marked."""
    from .unpaired import build_unpaired_examples

    color = sys.stdout.isatty() if color is None else color
    examples, summary = build_unpaired_examples(rows, tokenizer, max_length=max_length)
    legend = "green = completion tokens" if color else "[[completion tokens]]"
    lines = [f"{len(rows)} unpaired rows, max_length={max_length}; {legend}"]
    for i, ex in enumerate(examples[:n]):
        r = ex.response
        cut = ", truncated" if r.truncated else ""
        lines.append(f"--- example {i + 1}: {'desirable' if ex.label else 'undesirable'}, {len(r.input_ids)} tokens, "
                     f"{r.length} in the completion{cut}")
        lines.append(_marked(r, tokenizer, color))
    lines.append(f"=== {summary}")
    return "\n".join(lines)
