"""A trained reward model as a reward function: `RewardModel.from_pretrained(path)(prompts, completions)`.

Form on disk (what `posttrain rm` writes to `OUT/final`): a Hugging Face
`AutoModelForSequenceClassification` with `num_labels=1` in `save_pretrained` form (safetensors,
tokenizer, chat template); with LoRA and `lora.merge_on_save: false`, a PEFT adapter folder
(`task_type: SEQ_CLS`, the `score` head saved whole beside the adapter) whose base is named in its
`adapter_config.json`. transformers loads the merged form directly; TRL's `RewardTrainer` writes the
same form.

Scoring: prompt + completion is encoded exactly as in training (`data.preference.encode_response`:
the chat template for message prompts, plain concatenation + eos for text prompts), the sequence ends
at the completion's last token, and the reward is the scalar head applied to the final hidden state
of that token (the last non-pad token of a right-padded batch). Completions are scored in batches,
sorted by length to keep padding small; the scores come back in input order. An empty completion is
scored as the prompt followed by the end of the turn (an empty answer is an answer, and a policy must
not escape the reward by saying nothing). A pair that cannot be encoded (a prompt longer than
`max_length`) scores None, as the `RewardFn` contract asks; a completion too long for `max_length`
loses its tail and is scored.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

import torch
from torch import Tensor

from posttrain.core.logprobs import hidden_states


def score_head(model):
    """The scalar head of a sequence classifier (`score`, as Llama/Qwen/Mistral/GPT-2 name it), PEFT or not."""
    for name in ("score", "classifier"):
        try:
            return getattr(model, name)
        except AttributeError:
            continue
    raise ValueError(f"{type(model).__name__} has no 'score' or 'classifier' head; load the reward model with "
                     "AutoModelForSequenceClassification (num_labels=1)")


def sequence_rewards(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """float32 rewards `[N]`: the head on the hidden state of each row's last real token (right padding)."""
    from posttrain.core.strategy import call_root

    return call_root(model, _sequence_rewards, input_ids, attention_mask)


def _sequence_rewards(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    hidden = hidden_states(model, input_ids, attention_mask)                   # [N, T, H]
    last = attention_mask.long().sum(-1) - 1                                   # [N]
    h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]      # [N, H]
    return score_head(model)(h).squeeze(-1).float()


class SequenceClassifier:
    """`from_pretrained` of `AutoModelForSequenceClassification` with one label (a `load_model` auto_class).

    From a causal LM checkpoint the head is new and the LM head unused: expected, so transformers' load
    report is silenced; any OTHER weight missing from the checkpoint is warned about by name.
    """

    @staticmethod
    def from_pretrained(src, **kwargs):
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1,
                                                                             output_loading_info=True, **kwargs)
        finally:
            hf_logging.set_verbosity(level)
        missing = [k for k in info["missing_keys"] if not k.split(".")[0] in ("score", "classifier")]
        if missing:
            warnings.warn(f"{src}: {len(missing)} weights missing from the checkpoint, initialised at random: "
                          f"{missing[:8]}", stacklevel=2)
        return model


def load_scalar_model(path: str, *, dtype=torch.float32, trust_remote_code: bool = False):
    """The reward model in `path`: a sequence classifier, or a PEFT SEQ_CLS adapter (merged on load)."""
    adapter = os.path.join(path, "adapter_config.json")
    if not os.path.exists(adapter):
        return SequenceClassifier.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    from peft import PeftModel

    with open(adapter) as f:
        base_path = json.load(f)["base_model_name_or_path"]
    base = SequenceClassifier.from_pretrained(base_path, dtype=dtype, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


class RewardModel:
    """Scores (prompt, completion) pairs with a scalar-head model; a `RewardFn` for online RL."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None,
                 name: str = "reward_model"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = max_length or min(positions or 2048, 4096)
        self.name = name

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | torch.device | None = None, dtype=torch.float32,
                        batch_size: int = 16, max_length: int | None = None, name: str = "reward_model",
                        trust_remote_code: bool = False) -> "RewardModel":
        """Load `path` (e.g. `OUT/final` of `posttrain rm`), on CUDA when available unless `device` says."""
        from transformers import AutoTokenizer

        from posttrain.core.models import DTYPES, resolve_path

        path = resolve_path(path, name)
        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        model = load_scalar_model(path, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, batch_size=batch_size, max_length=max_length, name=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt, completion):
        """The encoded sequence of one pair, or None when it cannot be scored."""
        from posttrain.data.chat import Drop
        from posttrain.data.preference import encode_response

        try:
            return encode_response(prompt, completion, self.tokenizer, max_length=self.max_length)
        except Drop as d:
            empty = d.reason == "empty completion" and isinstance(completion, str)
            return self._encode_empty(prompt) if empty else None

    def _encode_empty(self, prompt):
        """An empty answer is still an answer: prompt + end of turn (messages) or prompt + eos (text)."""
        from posttrain.data.masks import encode_conversation
        from posttrain.data.preference import Response

        tok = self.tokenizer
        if isinstance(prompt, str):
            ids = list(tok(prompt)["input_ids"]) + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
            mask = [0] * (len(ids) - 1) + [1]
        else:
            ids, mask = encode_conversation(tok, prompt + [{"role": "assistant", "content": ""}],
                                            train_from=len(prompt))
            if not any(mask):
                return None
            end = max(i for i, m in enumerate(mask) if m) + 1
            ids, mask = ids[:end], mask[:end]
        return Response(ids, mask) if len(ids) <= self.max_length else None

    @torch.no_grad()
    def score_responses(self, responses: Sequence) -> list[float]:
        """Rewards of encoded `Response`s (`data.preference`), in order."""
        from posttrain.data.preference import response_collate

        order = sorted(range(len(responses)), key=lambda i: len(responses[i].input_ids))
        out = [0.0] * len(responses)
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            ids, attn, _ = response_collate([responses[i] for i in idx], pad)
            rewards = sequence_rewards(self.model, ids.to(self.device), attn.to(self.device))
            for i, r in zip(idx, rewards.tolist()):
                out[i] = r
        return out

    def __call__(self, prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
        """One reward per (prompt, completion); prompts are str or message lists, completions str (or
        message lists); extra columns are accepted and unused."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        encoded = [self.encode(p, c) for p, c in zip(prompts, completions)]
        ok = [i for i, e in enumerate(encoded) if e is not None]
        scores = self.score_responses([encoded[i] for i in ok])
        out: list[float | None] = [None] * len(encoded)
        for i, s in zip(ok, scores):
            out[i] = s
        return out
