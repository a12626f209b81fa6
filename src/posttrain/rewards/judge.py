"""An LLM judge as a reward function (RLAIF): any Hugging Face causal LM asked a Yes/No question.

    judge = Judge.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", template=DEFAULT_TEMPLATE)
    judge(prompts, completions, code=[...])        # -> list[float | None], each in [0, 1]

How a pair is scored (one forward pass, no generation):
1. The template is filled with `{prompt}` (the prompt as text: a string as it is, a message list as its
   messages' contents joined by blank lines), `{completion}`, and any data column named in braces
   (e.g. `{code}` for the lab's code-review rows). Literal braces in a template are written `{{ }}`.
2. With `chat: true` and a tokenizer that has a chat template, the filled text is the user message and
   the judge's assistant turn is opened (`add_generation_prompt`); otherwise the text is used as it is.
3. The judge runs once over the batch (right-padded) and its output head is applied to the hidden
   state of the LAST input token only (`[N, V]` logits, never `[N, T, V]`). With `Y` the first token
   ids of the `yes_words` and `N` those of the `no_words` (e.g. "Yes", " Yes" / "No", " No"; a
   first token both sides share, such as a lone space, tells nothing and is left out; a word of
   several tokens counts by its first):

       score = P(Y) / (P(Y) + P(N)) = sigmoid(logsumexp(logits[Y]) - logsumexp(logits[N]))

   so the mass the judge puts on anything else (e.g. "Maybe") does not move the score.
Inputs are scored in batches sorted by length (less padding) and returned in input order. An input
longer than `max_length` tokens scores None ("could not score", per the RewardFn contract), never a
silent 0. A small base model is a weak judge; the score means what the judge model knows.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from posttrain.config import opt

DEFAULT_TEMPLATE = ("{prompt}\n\nReview:\n{completion}\n\n"
                    "Is this review of the code correct and specific? Answer Yes or No.\nAnswer:")


@dataclass
class JudgeConfig:
    model: Any = opt(None, "judge model: hub name, folder or builtin:NAME; null = no judge")
    gguf_file: Any = opt(None, "a GGUF file inside the judge's `model` folder")
    template: str = opt(DEFAULT_TEMPLATE, "question to the judge; {prompt}, {completion} and data columns "
                                          "such as {code} are filled in")
    chat: bool = opt(True, "wrap the question in the judge's chat template when its tokenizer has one")
    yes_words: Any = opt(["Yes", " Yes"], "strings whose first token counts as Yes")
    no_words: Any = opt(["No", " No"], "strings whose first token counts as No")
    batch_size: int = opt(16, "judge inputs per forward pass")
    max_length: int = opt(1024, "longest judge input in tokens; longer ones score None")
    weight: float = opt(1.0, "weight of the judge's score in a trainer's total reward")


def prompt_text(prompt) -> str:
    """A prompt as plain text: a string unchanged, a message list as its contents joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


def _first_ids(tokenizer, words: Sequence[str], what: str) -> list[int]:
    if isinstance(words, str):
        words = [words]
    ids = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ValueError(f"judge {what}: {w!r} tokenises to nothing")
        ids.append(toks[0])
    return sorted(set(ids))


class Judge:
    """A `RewardFn`: p(Yes) / (p(Yes) + p(No)) of a causal LM asked `template` (module docstring)."""

    def __init__(self, model, tokenizer, *, template: str = DEFAULT_TEMPLATE, chat: bool = True,
                 yes_words: Sequence[str] = ("Yes", " Yes"), no_words: Sequence[str] = ("No", " No"),
                 batch_size: int = 16, max_length: int = 1024, name: str = "judge"):
        if batch_size < 1:
            raise ValueError(f"judge batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.template = model.eval().requires_grad_(False), tokenizer, template
        self.fields = sorted({f for _, f, _, _ in string.Formatter().parse(template) if f})
        self.chat = chat and bool(getattr(tokenizer, "chat_template", None))
        yes_ids, no_ids = _first_ids(tokenizer, yes_words, "yes"), _first_ids(tokenizer, no_words, "no")
        shared = set(yes_ids) & set(no_ids)   # e.g. a lone space token that starts both " Yes" and " No"
        self.yes_ids = [i for i in yes_ids if i not in shared]
        self.no_ids = [i for i in no_ids if i not in shared]
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"judge yes_words {list(yes_words)} and no_words {list(no_words)} start with the same "
                             "tokens; pick words whose first tokens differ")
        self.batch_size, self.max_length, self.name = batch_size, max_length, name

    @classmethod
    def from_pretrained(cls, path: str, *, gguf_file: str | None = None, device=None, dtype=torch.float32,
                        trust_remote_code: bool = False, **kw) -> "Judge":
        """Load a causal LM by hub name or folder (a lab `builtin:NAME` is resolved by the caller,
        `posttrain.lab.builtin.resolve`); `kw` as `Judge(...)`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from posttrain.core.models import resolve_path

        src = resolve_path(path)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **extra)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tok, **kw)

    @classmethod
    def from_config(cls, cfg: JudgeConfig, device=None) -> "Judge":
        from posttrain.config import plain

        return cls.from_pretrained(cfg.model, gguf_file=cfg.gguf_file, device=device, template=cfg.template,
                                   chat=cfg.chat, yes_words=plain(cfg.yes_words), no_words=plain(cfg.no_words),
                                   batch_size=cfg.batch_size,
                                   max_length=cfg.max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def question(self, prompt, completion: str, columns: dict) -> str:
        """The text the judge reads for one pair (template filled, chat-wrapped when `chat`)."""
        values = dict(columns)
        values.update(prompt=prompt_text(prompt), completion=completion)
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"judge template names {missing} but the data has no such column; "
                             f"columns: {sorted(values)}")
        text = self.template.format(**{f: values[f] for f in self.fields})
        if self.chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> list[float | None]:
        """Judge score of each already-formatted question (None when longer than `max_length`)."""
        ids = self.tokenizer(list(texts), add_special_tokens=not self.chat)["input_ids"]
        out: list[float | None] = [None] * len(ids)
        ok = sorted((i for i, s in enumerate(ids) if 0 < len(s) <= self.max_length), key=lambda i: len(ids[i]))
        for s in range(0, len(ok), self.batch_size):
            idx = ok[s:s + self.batch_size]
            for i, p in zip(idx, self._yes_prob([ids[i] for i in idx]).tolist()):
                out[i] = p
        return out

    def _yes_prob(self, seqs: list[list[int]]) -> torch.Tensor:
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
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        yes = torch.logsumexp(logits[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logits[:, self.no_ids], dim=-1)
        return torch.sigmoid(yes - no)

    def __call__(self, prompts: Sequence, completions: Sequence[str], **columns) -> list[float | None]:
        """One score in [0, 1] per (prompt, completion); `columns` are lists parallel to `prompts`."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        for k, v in columns.items():
            if k in self.fields and len(v) != len(prompts):
                raise ValueError(f"column {k!r} has {len(v)} values for {len(prompts)} prompts")
        texts = [self.question(p, c, {k: columns[k][i] for k in self.fields if k in columns})
                 for i, (p, c) in enumerate(zip(prompts, completions))]
        return self.score_texts(texts)
