"""Unpaired rows (KTO): a prompt, one completion and a yes/no `label`; and their batches.

Rows: `prompt` + `completion` + `label` (validated as "unpaired" data: a row without `label`, or with a
label that is not a bool, is an error naming file, line and field). Preference rows are accepted too
and unpaired as TRL's `unpair_preference_dataset` does: the chosen (best) response becomes a desirable
row, the rejected (worst) one an undesirable row. Each completion is encoded like a preference response
(`preference.encode_response`): `mask` marks its tokens, and the sequence ends right after it.

`KTOBatch` also holds the mismatched pairs of KTO's reference point: row i's prompt with row i-1's
completion inside the micro-batch (`losses.kto.kl_pair_indices`), encoded when the batch is built.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from posttrain.core.batch import _Movable, pad_right

from .chat import Drop
from .errors import DataError
from .preference import Response, _candidates, encode_response


@dataclass
class UnpairedExample:
    prompt: object                 # str or messages
    completion: object             # str or messages (an assistant turn)
    label: bool                    # True = desirable
    response: Response             # encoded prompt + completion
    tools: object = None


@dataclass
class KTOBatch(_Movable):
    """N unpaired rows, right-padded, and their N mismatched pairs (None when N < 2)."""
    input_ids: Tensor                      # [N, T] long
    attention_mask: Tensor                 # [N, T]
    mask: Tensor                           # [N, T] float; 1 = completion token
    labels: Tensor                         # [N] bool; True = desirable
    kl_input_ids: Tensor | None = None     # [N, T'] prompt i + completion i-1
    kl_attention_mask: Tensor | None = None
    kl_mask: Tensor | None = None

    @property
    def num_items(self) -> float:
        """Rows: the KTO loss is a mean over the rows of the step."""
        return float(self.labels.shape[0])


def _pad(responses: list[Response], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    width = max(len(r.input_ids) for r in responses)
    return (pad_right([r.input_ids for r in responses], pad_id, width),
            pad_right([[1] * len(r.input_ids) for r in responses], 0, width),
            pad_right([r.mask for r in responses], 0, width).float())


def kto_collate(examples: list[UnpairedExample], tokenizer, pad_id: int, max_length: int) -> KTOBatch:
    """A `KTOBatch` of `examples`, with the mismatched pairs encoded (a pair the template cannot join,
    e.g. text prompt with a message completion, is left out of the reference-point estimate)."""
    from posttrain.losses.kto import kl_pair_indices

    ids, attn, mask = _pad([e.response for e in examples], pad_id)
    batch = KTOBatch(ids, attn, mask, torch.tensor([e.label for e in examples], dtype=torch.bool))
    if len(examples) < 2:
        return batch
    pairs = []
    for i, j in enumerate(kl_pair_indices(len(examples))):
        try:
            pairs.append(encode_response(examples[i].prompt, examples[j].completion, tokenizer,
                                         max_length=max_length, tools=examples[i].tools))
        except (Drop, TypeError, ValueError):
            continue
    if pairs:
        batch.kl_input_ids, batch.kl_attention_mask, batch.kl_mask = _pad(pairs, pad_id)
    return batch


def _rows_of(row: dict) -> list[tuple[object, object, bool]]:
    """(prompt, completion, label) of a validated row: itself if unpaired, best/worst if preference."""
    if row.get("label") is not None:
        return [(row["prompt"], row["completion"], row["label"])]
    prompt, responses, _ = _candidates(row)
    return [(prompt, responses[0], True), (prompt, responses[-1], False)]


def build_unpaired_examples(rows, tokenizer, *, max_length: int) -> tuple[list[UnpairedExample], str]:
    """Validate and encode; returns the examples and a summary ("kept N (D desirable), dropped ...")."""
    from .validate import validate_rows

    preference = any(r.get("label") is None and (r.get("chosen") is not None or r.get("responses") is not None)
                     for r in rows if isinstance(r, dict))
    validate_rows(rows, "preference" if preference else "unpaired")
    out, dropped = [], Counter()
    for row in rows:
        for prompt, completion, label in _rows_of(row):
            try:
                resp = encode_response(prompt, completion, tokenizer, max_length=max_length, tools=row.get("tools"))
            except Drop as d:
                dropped[d.reason] += 1
                continue
            out.append(UnpairedExample(prompt, completion, bool(label), resp, row.get("tools")))
    if not out:
        raise DataError(f"no usable unpaired row among {len(rows)} (dropped: {dict(dropped)})")
    good = sum(e.label for e in out)
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(dropped.items()))
    return out, (f"kept {len(out)} ({good} desirable, {len(out) - good} undesirable"
                 f"{', from preference pairs' if preference else ''}), dropped {sum(dropped.values())}"
                 + (f" ({reasons})" if reasons else ""))
