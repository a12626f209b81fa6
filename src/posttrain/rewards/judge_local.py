"""A judge model in this process: a Hugging Face causal LM that answers filled judge questions.

Two operations, shared with the HTTP backend (`judge_http.py`):
- `choice_probs(questions, first, second)`: P(first) / (P(first) + P(second)) of the answer's first
  token, from ONE forward pass (the output head on the last input token only, `[N, V]` logits). With
  `F` the first token ids of the `first` words and `S` those of the `second` (a first token both
  share, such as a lone space, tells nothing and is left out):

      p = sigmoid(logsumexp(logits[F]) - logsumexp(logits[S]))

  so mass on anything else ("Maybe") does not move it. Inputs longer than `max_length` give None.
- `generate(questions, max_new_tokens)`: the greedy reply as text (None when too long).

With `chat` the question is the user message of the tokenizer's chat template and the assistant turn
is opened; `chat` with a tokenizer that has no chat template is an error, not a silent fallback.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .judge_text import JudgeError


def first_ids(tokenizer, words: Sequence[str], what: str) -> list[int]:
    if isinstance(words, str):
        words = [words]
    ids = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not toks:
            raise JudgeError(f"judge {what}: {w!r} tokenises to nothing")
        ids.append(toks[0])
    return sorted(set(ids))


def distinct_ids(tokenizer, first: Sequence[str], second: Sequence[str]) -> tuple[list[int], list[int]]:
    a, b = first_ids(tokenizer, first, "words"), first_ids(tokenizer, second, "words")
    shared = set(a) & set(b)
    a, b = [i for i in a if i not in shared], [i for i in b if i not in shared]
    if not a or not b:
        raise JudgeError(f"judge words {list(first)} and {list(second)} start with the same tokens; "
                         "pick words whose first tokens differ")
    return a, b


class LocalBackend:
    def __init__(self, model, tokenizer, *, chat: bool = True, batch_size: int = 16, max_length: int = 1024,
                 name: str = "local"):
        if batch_size < 1:
            raise JudgeError(f"judge batch_size must be >= 1, got {batch_size}")
        if chat and not getattr(tokenizer, "chat_template", None):
            raise JudgeError(f"judge.chat is true but the judge model {name!r} has no chat template; "
                             "set judge.chat: false to give it the question as plain text")
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.chat, self.batch_size, self.max_length, self.name = chat, batch_size, max_length, name
        self._ids: dict[tuple, tuple[list[int], list[int]]] = {}

    @classmethod
    def from_pretrained(cls, path: str, *, gguf_file: str | None = None, device=None, dtype=torch.float32,
                        trust_remote_code: bool = False, **kw) -> "LocalBackend":
        """Load by hub name or folder (a lab `builtin:NAME` is resolved by the caller); `kw` as `__init__`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from posttrain.core.models import resolve_path

        src = resolve_path(path)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **extra)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tok, name=str(path), **kw)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, question: str) -> str:
        if not self.chat:
            return question
        return self.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                  add_generation_prompt=True)

    def _encode(self, questions: Sequence[str]) -> list[list[int]]:
        return self.tokenizer([self.render(q) for q in questions], add_special_tokens=not self.chat)["input_ids"]

    def _batches(self, ids: list[list[int]]):
        ok = sorted((i for i, s in enumerate(ids) if 0 < len(s) <= self.max_length), key=lambda i: len(ids[i]))
        for s in range(0, len(ok), self.batch_size):
            yield ok[s:s + self.batch_size]

    @torch.no_grad()
    def choice_probs(self, questions: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float | None]:
        key = (tuple(first), tuple(second))
        if key not in self._ids:
            self._ids[key] = distinct_ids(self.tokenizer, first, second)
        a, b = self._ids[key]
        ids = self._encode(questions)
        out: list[float | None] = [None] * len(ids)
        for idx in self._batches(ids):
            logits = self.last_logits([ids[i] for i in idx])
            p = torch.sigmoid(torch.logsumexp(logits[:, a], -1) - torch.logsumexp(logits[:, b], -1))
            for i, v in zip(idx, p.tolist()):
                out[i] = v
        return out

    def last_logits(self, seqs: list[list[int]]) -> torch.Tensor:
        """`[N, V]` logits of the next token after each (right-padded) sequence."""
        from posttrain.core.batch import pad_right
        from posttrain.core.logprobs import hidden_states

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = pad_right(seqs, pad).to(self.device)
        lengths = torch.tensor([len(s) for s in seqs], device=self.device)
        attn = (torch.arange(input_ids.shape[1], device=self.device)[None] < lengths[:, None]).long()
        hidden = hidden_states(self.model, input_ids, attn)
        last = hidden[torch.arange(len(seqs), device=self.device), lengths - 1]          # [N, H]
        logits = self.model.get_output_embeddings()(last).float()                         # [N, V]
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    @torch.no_grad()
    def generate(self, questions: Sequence[str], max_new_tokens: int) -> list[str | None]:
        """Greedy replies, left-padded batches; None for a question longer than `max_length`."""
        ids = self._encode(questions)
        out: list[str | None] = [None] * len(ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for idx in self._batches(ids):
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in idx], device=self.device)
            attn = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in idx], device=self.device)
            gen = self.model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=pad)
            for i, row in zip(idx, gen[:, width:].tolist()):
                out[i] = self.tokenizer.decode(row, skip_special_tokens=True)
        return out
