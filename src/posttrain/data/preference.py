"""Preference rows to encoded pairs, and pairs to a `PreferenceBatch`.

Rows (validated as "preference" data by `validate.py`):
- `prompt` + `chosen` + `rejected`, all str or all message lists;
- implicit prompt: `chosen` + `rejected` message lists; the prompt is their longest common prefix of
  messages (at most all but the last message of each);
- a ranking: `prompt` + `responses` (K >= 2, best first), expanded to all K(K-1)/2 pairs (i better
  than j for i < j). Each response is encoded once; the pairs index into the row's responses.
- optional `margin` (a number; a ranking's margin applies to each of its pairs).

Each response is encoded like an SFT `prompt` + `completion` row (`chat.encode_sft_row`): plain text is
tokens(prompt) + tokens(response) + eos; messages go through the chat template, and `mask` marks the
response's assistant content and its end of turn. The sequence is cut right after its last response
token (the template's newline after `<|im_end|>` goes), so the last token of every sequence is the
end of the response: what a reward model scores. A too-long sequence keeps its prompt and loses the
response's tail (`truncated`); with `drop_truncated` the whole row is dropped instead.

Weights: every row weighs 1 in total, so a pair weighs 1 / (pairs of its row): a pairwise row's pair 1,
each of a ranking's K(K-1)/2 pairs 2 / (K(K-1)). `PreferenceBatch.num_items` is then the number of rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import torch

from posttrain.core.batch import PreferenceBatch, pad_right

from .chat import BadRow, Drop, check_roles, encode_sft_row
from .errors import DataError, Problem, Source, files_of, sources_of
from .validate import validate_rows


@dataclass
class Response:
    """One prompt + response sequence."""
    input_ids: list[int]
    mask: list[int]             # 1 = response token (scored)
    truncated: bool = False

    @property
    def length(self) -> int:
        """Response tokens."""
        return sum(self.mask)


@dataclass
class PreferenceExample:
    """One source row: its distinct responses and the (better, worse) pairs between them."""
    responses: list[Response]
    pairs: list[tuple[int, int]]           # (chosen index, rejected index) into `responses`
    margin: float = 0.0
    ref_logps: list[float] | None = None   # reference log-prob of each response, cached (precompute_ref)

    @property
    def weight(self) -> float:
        """Weight of each pair: the row weighs 1 in total."""
        return 1.0 / len(self.pairs)

    @property
    def truncated(self) -> bool:
        return any(r.truncated for r in self.responses)


@dataclass
class PreferenceStats:
    kept: int = 0                     # rows that gave pairs
    truncated: int = 0                # kept rows with a response cut at max_length
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    pairs: int = 0                    # pairs of the kept rows

    def summary(self) -> str:
        """E.g. "kept 98 rows, 120 pairs (3 truncated), dropped 2 (prompt longer than max_length: 2)"."""
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.dropped.items()))
        return (f"kept {self.kept} rows, {self.pairs} pairs ({self.truncated} truncated), dropped "
                f"{sum(self.dropped.values())}" + (f" ({reasons})" if reasons else ""))


def split_implicit_prompt(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen tail, rejected tail): the longest common prefix of messages, leaving each tail
    at least its last message."""
    k = 0
    limit = min(len(chosen), len(rejected)) - 1
    while k < limit and chosen[k] == rejected[k]:
        k += 1
    return chosen[:k], chosen[k:], rejected[k:]


def _as_completion(prompt, response):
    """A ranking's response in the prompt's form (a str response to a conversational prompt becomes
    one assistant message)."""
    if isinstance(prompt, str) or not isinstance(response, str):
        return response
    return [{"role": "assistant", "content": response}]


def encode_response(prompt, response, tokenizer, *, max_length: int, tools=None) -> Response:
    """Encode prompt + response (str + str, or messages + messages); raises `Drop(reason)`."""
    row = {"prompt": prompt, "completion": _as_completion(prompt, response)}
    if tools:
        row["tools"] = tools
    enc = encode_sft_row(row, tokenizer, max_length=max_length, completion_only_loss=True)[0]
    end = max(i for i, m in enumerate(enc.mask) if m) + 1
    return Response(enc.input_ids[:end], enc.mask[:end], enc.truncated)


def _candidates(row: dict) -> tuple[object, list, list[tuple[int, int]]]:
    """(prompt, responses, pairs) of a validated row."""
    if row.get("responses") is not None:
        k = len(row["responses"])
        return row["prompt"], list(row["responses"]), [(i, j) for i in range(k) for j in range(i + 1, k)]
    if row.get("prompt") is None:
        prompt, chosen, rejected = split_implicit_prompt(row["chosen"], row["rejected"])
        return prompt, [chosen, rejected], [(0, 1)]
    return row["prompt"], [row["chosen"], row["rejected"]], [(0, 1)]


def encode_preference_row(row: dict, tokenizer, *, max_length: int, drop_truncated: bool = False) -> PreferenceExample:
    """One validated preference row as a `PreferenceExample`; raises `Drop(reason)` for an edge row
    (any of its responses unusable, or truncated when `drop_truncated`)."""
    check_roles(row, tokenizer)
    prompt, responses, pairs = _candidates(row)
    pairs = [(i, j) for i, j in pairs if responses[i] != responses[j]]
    if not pairs:
        raise Drop("chosen identical to rejected")
    encoded = [encode_response(prompt, r, tokenizer, max_length=max_length, tools=row.get("tools"))
               for r in responses]
    if drop_truncated and any(e.truncated for e in encoded):
        raise Drop("longer than max_length")
    return PreferenceExample(encoded, pairs, float(row.get("margin") or 0.0))


def _failure(src: Source, e: Exception) -> Problem:
    if isinstance(e, BadRow):
        return Problem(src, e.field, e.expected, e.found)
    return Problem(src, None, "a row the tokenizer and chat template accept", f"{type(e).__name__}: {e}")


def build_preference_examples(rows: Sequence[dict], tokenizer, *, max_length: int, drop_truncated: bool = False,
                              source: str | Sequence[Source] | None = None
                              ) -> tuple[list[PreferenceExample], PreferenceStats]:
    """Validate `rows` as preference data and encode them. Edge rows are dropped and counted; rows the
    template or tokenizer rejects are raised together as one `DataError` naming file and line, as is a
    data set with no usable row. `source` as in `validate_rows` (default: `rows.sources`)."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    sources = sources_of(rows, source)
    validate_rows(rows, "preference", sources)
    examples, stats, problems = [], PreferenceStats(), []
    for row, src in zip(rows, sources):
        try:
            ex = encode_preference_row(row, tokenizer, max_length=max_length, drop_truncated=drop_truncated)
        except Drop as d:
            stats.dropped[d.reason] += 1
            continue
        except Exception as e:  # jinja2 TemplateError, tokenizer errors: name the row
            problems.append(_failure(src, e))
            continue
        examples.append(ex)
        stats.kept += 1
        stats.pairs += len(ex.pairs)
        stats.truncated += ex.truncated
    if problems:
        raise DataError(problems, header=f"{len(problems)} row{'s' if len(problems) != 1 else ''} could not be tokenised")
    if rows and not examples:
        raise DataError(f"{files_of(sources)}: no usable preference row among {len(rows)}: {stats.summary()}")
    return examples, stats


def _ref_tensors(examples: Sequence[PreferenceExample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if any(ex.ref_logps is None for ex in examples):
        return None, None
    chosen = [ex.ref_logps[c] for ex in examples for c, _ in ex.pairs]
    rejected = [ex.ref_logps[r] for ex in examples for _, r in ex.pairs]
    return torch.tensor(chosen, dtype=torch.float32), torch.tensor(rejected, dtype=torch.float32)


def preference_collate(examples: Sequence[PreferenceExample], pad_id: int) -> PreferenceBatch:
    """Every pair of `examples` as one right-padded `PreferenceBatch`: the P chosen sequences, then the
    P rejected ones, on one batch axis `[2P, T]`. Reference log-probs are included when every example
    has them cached."""
    if not examples:
        raise ValueError("preference_collate needs at least one example")
    chosen = [ex.responses[c] for ex in examples for c, _ in ex.pairs]
    rejected = [ex.responses[r] for ex in examples for _, r in ex.pairs]
    seqs = chosen + rejected
    width = max(len(s.input_ids) for s in seqs)
    ref_chosen, ref_rejected = _ref_tensors(examples)
    return PreferenceBatch(
        input_ids=pad_right([s.input_ids for s in seqs], pad_id, width),
        attention_mask=pad_right([[1] * len(s.input_ids) for s in seqs], 0, width),
        mask=pad_right([s.mask for s in seqs], 0, width).float(),
        margin=torch.tensor([ex.margin for ex in examples for _ in ex.pairs], dtype=torch.float32),
        weight=torch.tensor([ex.weight for ex in examples for _ in ex.pairs], dtype=torch.float32),
        ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)


def group_indices(examples: Sequence[PreferenceExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen_index [P], rejected_index [P]) of every pair of `examples` into their responses laid end to
    end (example 0's responses, then example 1's ...), in `preference_collate`'s pair order."""
    chosen, rejected, start = [], [], 0
    for ex in examples:
        chosen += [start + c for c, _ in ex.pairs]
        rejected += [start + r for _, r in ex.pairs]
        start += len(ex.responses)
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(rejected, dtype=torch.long)


def group_collate(examples: Sequence[PreferenceExample], pad_id: int) -> PreferenceBatch:
    """Every RESPONSE of `examples` once, right-padded `[S, T]` (S = responses, not 2P): a ranking of K
    costs K sequences instead of K(K-1) (the reward model's fast path). `chosen_index`/`rejected_index`
    name each pair's two sequences; margin and weight are per pair, as in `preference_collate`.
    Reference log-probs are not carried (a reward model has none)."""
    if not examples:
        raise ValueError("group_collate needs at least one example")
    ids, attn, mask = response_collate([r for ex in examples for r in ex.responses], pad_id)
    chosen_index, rejected_index = group_indices(examples)
    return PreferenceBatch(
        input_ids=ids, attention_mask=attn, mask=mask,
        margin=torch.tensor([ex.margin for ex in examples for _ in ex.pairs], dtype=torch.float32),
        weight=torch.tensor([ex.weight for ex in examples for _ in ex.pairs], dtype=torch.float32),
        chosen_index=chosen_index, rejected_index=rejected_index)


def response_collate(responses: Sequence[Response], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [N, T], attention_mask [N, T], mask [N, T] float) of single responses, right-padded."""
    width = max(len(r.input_ids) for r in responses)
    return (pad_right([r.input_ids for r in responses], pad_id, width),
            pad_right([[1] * len(r.input_ids) for r in responses], 0, width),
            pad_right([r.mask for r in responses], 0, width).float())


def load_preference_examples(spec, tokenizer, *, max_length: int, drop_truncated: bool = False,
                             max_rows: int | None = None) -> tuple[list[PreferenceExample], PreferenceStats]:
    """Load (`formats.load_rows`), validate and encode preference data; at most
    the first `max_rows` rows when given."""
    from .formats import load_rows

    rows = load_rows(spec, split="train", kind="preference")
    if max_rows is not None and max_rows < len(rows):
        rows = rows.subset(range(max_rows))
    return build_preference_examples(rows, tokenizer, max_length=max_length, drop_truncated=drop_truncated)


def load_preference_splits(cfg, tokenizer, say) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Train and held-out examples of a trainer config (`data.train`, `data.eval`, `max_length`,
    `drop_truncated`, `data.max_eval_rows`); each split's stats go to `say`."""
    train, stats = load_preference_examples(cfg.data.train, tokenizer, max_length=cfg.max_length,
                                            drop_truncated=cfg.drop_truncated)
    say(f"train preference rows: {stats.summary()}")
    held_out = []
    if cfg.data.eval:
        held_out, ev = load_preference_examples(cfg.data.eval, tokenizer, max_length=cfg.max_length,
                                                drop_truncated=cfg.drop_truncated, max_rows=cfg.data.max_eval_rows)
        say(f"eval preference rows: {ev.summary()}")
    return train, held_out
