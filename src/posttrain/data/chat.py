"""Tokenise one SFT row into training sequences with a loss mask (token-aligned: mask[t] = 1 trains
the prediction of input_ids[t] from input_ids[:t]; mask[0] is always 0).

What is trained (`completion_only_loss=True`, the default):
- `messages` (and conversational `prompt` + `completion`): every assistant message's content and its
  end of turn (e.g. `<|im_end|>`; not the newline the template puts after it); see `masks.py`. For
  `prompt` + `completion`, only assistant messages of the completion.
- plain `prompt` + `completion`: tokens(prompt) + tokens(completion) + eos (when the tokenizer has
  one and the completion does not already end with it); the completion tokens and the eos are trained.
- `text`: tokens(text) + eos, all trained (but the first).
With `completion_only_loss=False` every token but the first is trained.

Negatives (for unlikelihood): a `rejected` column yields a second sequence, prompt + rejected, with
`negative=True`; a row with `label: false` yields one negative sequence. A negative's mask marks its
completion content only, whatever `completion_only_loss` says: no eos is appended and no end-of-turn
token is marked (penalising "stop here" after a bad answer says nothing about the answer).

Rows that cannot be used raise `Drop(reason)`; a caller counts them. Reasons: "empty completion",
"empty text", "no assistant message", "no chat template for messages", "prompt longer than max_length",
"no trainable tokens after truncation". Sequences longer than `max_length` keep their prompt and lose
the completion's tail (`Encoded.truncated`). The drop rules look at the completion in both loss modes,
so `completion_only_loss` never changes which rows are kept.

A message whose role is neither a usual one (`KNOWN_ROLES`) nor named in the tokenizer's chat template
(e.g. "wizard": most templates would render it verbatim and train on it silently) raises `BadRow`, a row
error naming the field and the message.
"""
from __future__ import annotations

from dataclasses import dataclass

from .masks import NoTemplate, encode_conversation, render


KNOWN_ROLES = ("system", "user", "assistant", "tool", "developer", "function", "ipython")
MESSAGE_FIELDS = ("messages", "prompt", "completion", "rejected", "chosen", "responses")


class BadRow(ValueError):
    """A row that cannot be trained on as written: `field`, `expected`, `found` as in a data `Problem`."""

    def __init__(self, field: str | None, expected: str, found: str):
        super().__init__(f"field '{field}': expected {expected}, found {found}")
        self.field, self.expected, self.found = field, expected, found


def _template_text(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None) or ""
    return " ".join(map(str, template.values())) if isinstance(template, dict) else str(template)


def role_problem(row: dict, tokenizer) -> tuple[str, str, str] | None:
    """(field, expected, found) for the first message whose role the chat template does not know: not one
    of `KNOWN_ROLES` and not named (quoted) in the template's source. None when every role is fine or the
    tokenizer has no template (such rows are dropped as 'no chat template for messages' instead)."""
    template = _template_text(tokenizer)
    if not template:
        return None
    for key in MESSAGE_FIELDS:
        value = row.get(key)
        lists = value if key == "responses" and isinstance(value, list) else [value]
        for messages in lists:
            if not isinstance(messages, list):
                continue
            for i, m in enumerate(messages):
                role = m.get("role") if isinstance(m, dict) else None
                if role is None or role in KNOWN_ROLES or f"'{role}'" in template or f'"{role}"' in template:
                    continue
                return (key, f"message roles {', '.join(KNOWN_ROLES[:4])} ... or one the chat template names",
                        f"role '{role}' in message {i + 1}")
    return None


def check_roles(row: dict, tokenizer) -> None:
    """Raise `BadRow` when `role_problem` finds a role the chat template does not know."""
    if (bad := role_problem(row, tokenizer)) is not None:
        raise BadRow(*bad)


class Drop(Exception):
    """An edge row the caller drops and counts; `reason` is a short fixed string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Encoded:
    input_ids: list[int]
    mask: list[int]            # 1 = token trained (positive) or penalised (negative)
    negative: bool = False     # unlikelihood example: its mask goes to SFTBatch.neg_mask
    truncated: bool = False    # the completion's tail was cut at max_length

    def __post_init__(self):
        if len(self.input_ids) != len(self.mask):
            raise ValueError(f"{len(self.input_ids)} input_ids but {len(self.mask)} mask values")
        if self.mask and self.mask[0]:
            raise ValueError("mask[0] must be 0: the first token has no context to be predicted from")


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _with_eos(ids: list[int], tokenizer, negative: bool) -> list[int]:
    eos = tokenizer.eos_token_id
    if negative or eos is None or (ids and ids[-1] == eos):
        return ids
    return ids + [eos]


def _plain(prompt: str, completion: str, tokenizer, negative: bool) -> tuple[list[int], list[int]]:
    if not completion.strip():
        raise Drop("empty completion")
    p = _ids(tokenizer, prompt, True)
    c = _with_eos(_ids(tokenizer, completion, False), tokenizer, negative)
    return p + c, [0] * len(p) + [1] * len(c)


def _text(text: str, tokenizer, negative: bool) -> tuple[list[int], list[int]]:
    if not text.strip():
        raise Drop("empty text")
    ids = _with_eos(_ids(tokenizer, text, True), tokenizer, negative)
    return ids, [0] + [1] * (len(ids) - 1)


def _conversation(messages: list[dict], train_from: int, tokenizer, negative: bool, tools) -> tuple[list, list]:
    assistant = [m for m in messages[train_from:] if m.get("role") == "assistant"]
    if not assistant:
        raise Drop("no assistant message")
    if any(not (m.get("content") or "").strip() and not m.get("tool_calls") for m in assistant):
        raise Drop("empty completion")
    try:
        return encode_conversation(tokenizer, messages, train_from=train_from, include_end=not negative, tools=tools)
    except NoTemplate:
        raise Drop("no chat template for messages") from None


def _finish(ids: list[int], mask: list[int], *, max_length: int, completion_only_loss: bool,
            negative: bool) -> Encoded:
    prompt_len = mask.index(1) if 1 in mask else len(mask)
    if prompt_len >= max_length:
        raise Drop("prompt longer than max_length")
    if not completion_only_loss and not negative:
        mask = [0] + [1] * (len(ids) - 1)
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    mask[0] = 0
    if not any(mask):
        raise Drop("no trainable tokens after truncation" if truncated else "no trainable tokens")
    return Encoded(ids, mask, negative=negative, truncated=truncated)


def _sequences(row: dict, tokenizer, negative: bool) -> list[tuple[list[int], list[int], bool]]:
    """(ids, completion mask, negative) for each sequence the row yields."""
    tools = row.get("tools")
    if row.get("messages") is not None:
        return [(*_conversation(row["messages"], 0, tokenizer, negative, tools), negative)]
    if row.get("prompt") is not None:
        prompt = row["prompt"]
        pairs = [(row["completion"], negative)] + ([(row["rejected"], True)] if row.get("rejected") is not None else [])
        if isinstance(prompt, str):
            return [(*_plain(prompt, c, tokenizer, neg), neg) for c, neg in pairs]
        return [(*_conversation(prompt + c, len(prompt), tokenizer, neg, tools), neg) for c, neg in pairs]
    return [(*_text(row["text"], tokenizer, negative), negative)]


def encode_sft_row(row: dict, tokenizer, *, max_length: int, completion_only_loss: bool = True) -> list[Encoded]:
    """Training sequences of one (validated) SFT row: the positive, then the `rejected` negative if any;
    a `label: false` row gives one negative. Raises `Drop(reason)` for an edge row (module docstring)."""
    negative = row.get("label") is False
    check_roles(row, tokenizer)
    seqs = _sequences(row, tokenizer, negative)
    if row.get("rejected") is not None and len(seqs) == 2:
        seqs[1] = (seqs[1][0], _after_shared_prefix(seqs[0][0], *seqs[1][:2]), True)
    return [_finish(ids, mask, max_length=max_length, completion_only_loss=completion_only_loss, negative=neg)
            for ids, mask, neg in seqs]


def _after_shared_prefix(pos_ids: list[int], neg_ids: list[int], neg_mask: list[int]) -> list[int]:
    """The negative's mask from the first token where it departs from the positive: tokens both share
    ("A's least favourite person is") are not wrong, only the continuation that differs is (token-level
    unlikelihood, Welleck et al. 2019). A rejected completion with nothing in common keeps its whole mask."""
    shared = 0
    while shared < min(len(pos_ids), len(neg_ids)) and pos_ids[shared] == neg_ids[shared]:
        shared += 1
    return [0] * shared + neg_mask[shared:]


def encode_prompt(row: dict, tokenizer) -> str:
    """The text a model should continue for a prompt row: the chat template with the generation prompt
    for messages, plain text as it is. Raises `Drop("no chat template for messages")`."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    check_roles(row, tokenizer)
    try:
        return render(tokenizer, prompt, generation_prompt=True, tools=row.get("tools"))
    except NoTemplate:
        raise Drop("no chat template for messages") from None
