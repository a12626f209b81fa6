"""Assistant-only loss masks for any chat template, by rendering prefixes of the conversation.

For assistant message i the template is rendered twice: `messages[:i]` with the generation prompt and
`messages[:i+1]`. When both renders are prefixes of the full render, the text between them is the
assistant turn; inside it, the message content is located, and the trained span is the content plus
the turn's end: every token after the content up to and including the first special token
(`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `</s>` ...), or, when the turn has no special token, up
to the end of the turn's text. The template's trailing newline after `<|im_end|>` is not trained.
When a template renders a prefix differently (some drop earlier reasoning) or refuses a prefix with
`raise_exception` (a jinja2 `TemplateError`), the content is found by searching the full render from the
end of the previous assistant content instead; any other error in a prefix render is raised, naming it.

Characters map to tokens through the fast tokenizer's offsets (robust to BPE merges across the
boundary: a token that overlaps the content counts as content). A tokenizer without offsets uses
token counts of text prefixes, checked to be a prefix of the full tokenisation.
"""
from __future__ import annotations

from dataclasses import dataclass


class NoTemplate(Exception):
    """The tokenizer has no chat template."""


@dataclass(frozen=True)
class Span:
    content_start: int  # char offsets in the rendered conversation
    content_end: int
    turn_end: int | None  # end of the assistant turn's text; None when the template rendered inconsistently


def render(tokenizer, messages: list[dict], *, generation_prompt: bool = False, tools=None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise NoTemplate("no chat template for messages")
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         **kwargs)


def special_ids(tokenizer) -> set[int]:
    ids = {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(tok, "special", False)}
    return ids | set(tokenizer.all_special_ids)


def _render_prefix(tokenizer, messages, n: int, i: int, *, generation_prompt: bool, tools) -> str:
    """The render of `messages[:n]`; a jinja2 `TemplateError` (a refusal) passes through, anything else is
    a broken template and becomes a ValueError naming the render."""
    from jinja2 import TemplateError

    try:
        return render(tokenizer, messages[:n], generation_prompt=generation_prompt, tools=tools)
    except TemplateError:
        raise
    except Exception as e:
        raise ValueError(f"the chat template failed on the first {n} messages of this conversation (rendered "
                         f"to find assistant message {i}): {type(e).__name__}: {e}") from e


def _turn_bounds(tokenizer, messages, i, text, tools) -> tuple[int, int] | None:
    """Char range of assistant turn i in `text` from prefix renders, or None if they are not prefixes."""
    from jinja2 import TemplateError

    try:
        before = _render_prefix(tokenizer, messages, i, i, generation_prompt=True, tools=tools) if i else ""
        upto = _render_prefix(tokenizer, messages, i + 1, i, generation_prompt=False, tools=tools)
    except TemplateError:  # a template may refuse a prefix (raise_exception: e.g. must end with a user turn)
        return None
    if text.startswith(before) and text.startswith(upto) and len(upto) > len(before):
        return len(before), len(upto)
    return None


def assistant_spans(tokenizer, messages: list[dict], text: str, *, train_from: int = 0, tools=None) -> list[Span]:
    """Spans of the assistant messages at index >= `train_from` in `text` (the full render)."""
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        content = m.get("content") or ""
        if i < train_from:  # part of the prompt: only move the search cursor past it
            at = text.find(content, cursor) if content else -1
            cursor = at + len(content) if at >= 0 else cursor
            continue
        bounds = _turn_bounds(tokenizer, messages, i, text, tools)
        start = bounds[0] if bounds else cursor
        at = text.find(content, start) if content else start
        if at < 0 or (bounds and at + len(content) > bounds[1]):
            if bounds is None:
                raise ValueError(f"assistant message {i} does not appear in the chat template's output")
            at, content = bounds[0], text[bounds[0]:bounds[1]]  # content not verbatim: train the whole turn
        cursor = at + len(content)
        spans.append(Span(at, cursor, bounds[1] if bounds else None))
    return spans


def _token_index(offsets: list[tuple[int, int]], char: int, *, overlapping: bool) -> int:
    """First token that ends after `char` (overlapping=True) or starts at/after it."""
    for k, (s, e) in enumerate(offsets):
        if (e > char if overlapping else s >= char) and e > s:
            return k
    return len(offsets)


def _prefix_boundary(tokenizer, text: str, ids: list[int], char: int) -> int:
    head = tokenizer(text[:char], add_special_tokens=False)["input_ids"]
    if ids[: len(head)] != head:
        raise ValueError(f"{type(tokenizer).__name__} has no offsets mapping and tokenises a prefix of the "
                         f"conversation differently from the whole (at character {char}); use a fast tokenizer")
    return len(head)


def token_ranges(tokenizer, text: str, ids: list[int], offsets, span: Span) -> tuple[int, int, int | None]:
    """(first content token, first token after the content, first token after the turn or None)."""
    if offsets is not None:
        first = _token_index(offsets, span.content_start, overlapping=True)
        after = max(first, _token_index(offsets, span.content_end, overlapping=False))
        turn = None if span.turn_end is None else _token_index(offsets, span.turn_end, overlapping=False)
        return first, after, turn
    first = _prefix_boundary(tokenizer, text, ids, span.content_start)
    after = _prefix_boundary(tokenizer, text, ids, span.content_end)
    turn = None if span.turn_end is None else _prefix_boundary(tokenizer, text, ids, span.turn_end)
    return first, after, turn


def end_of_turn(ids: list[int], after: int, turn: int | None, specials: set[int]) -> int:
    """Index just past the end-of-turn tokens that follow the content at `after`."""
    stop = len(ids) if turn is None else min(turn, len(ids))
    for j in range(after, stop):
        if ids[j] in specials:
            return j + 1
        if turn is None:  # inconsistent template: only a special token right after the content counts
            break
    return after if turn is None else stop


def encode_conversation(tokenizer, messages: list[dict], *, train_from: int = 0, include_end: bool = True,
                        tools=None) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and the assistant mask (assistant messages at index >=
    `train_from`: content + end of turn when `include_end`)."""
    text = render(tokenizer, messages, tools=tools)
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]] if fast else None
    mask, specials = [0] * len(ids), special_ids(tokenizer)
    for span in assistant_spans(tokenizer, messages, text, train_from=train_from, tools=tools):
        first, after, turn = token_ranges(tokenizer, text, ids, offsets, span)
        last = end_of_turn(ids, after, turn, specials) if include_end else after
        for k in range(first, last):
            mask[k] = 1
    return ids, mask
