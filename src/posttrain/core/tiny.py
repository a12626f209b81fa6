"""Build a tiny Llama and a byte-level BPE tokenizer from scratch, offline and deterministically.

This is how tests and the lab get a real Hugging Face model without a hub: the tokenizer is trained
locally on a corpus the caller gives (the lab world's text), the model is randomly initialised from a
`LlamaConfig`, and both are written with `save_pretrained`, so every later stage loads them through
the ordinary `from_pretrained` path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinySize:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    max_positions: int = 512


SIZES = {
    "nano": TinySize(64, 2, 4, 2, 128),     # tests: ~0.2M params + embeddings
    "tiny": TinySize(128, 4, 4, 2, 344),    # the built-in default and lab base model
    "small": TinySize(256, 4, 4, 4, 688),   # the bench fixture's size (tiny-llama)
}


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, *, split_digits: bool = True):
    """A byte-level BPE tokenizer trained on `corpus`, with a ChatML chat template, eos `<|im_end|>`, pad `<|pad|>`.

    `split_digits` makes every digit its own token (as Llama 3, Qwen and DeepSeek tokenizers do), so a tiny
    model learns carrying digit by digit instead of memorising each two-digit number as one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>", chat_template=CHAT_TEMPLATE, model_max_length=2048)


def random_llama(tokenizer, size: TinySize | str = "tiny", seed: int = 0):
    """A randomly initialised `LlamaForCausalLM` sized for `tokenizer` (untied head, fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SIZES[size] if isinstance(size, str) else size
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s.hidden, num_hidden_layers=s.layers,
                      num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate,
                      max_position_embeddings=s.max_positions, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny(out_dir: str, corpus: Iterable[str], size: TinySize | str = "tiny", vocab_size: int = 1024,
               seed: int = 0) -> str:
    """Train a tokenizer on `corpus`, build a random Llama, save both to `out_dir` (written atomically)."""
    import shutil
    import tempfile

    tok = train_tokenizer(corpus, vocab_size)
    model = random_llama(tok, size, seed)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-", dir=parent)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if os.path.isdir(out_dir):
        shutil.rmtree(tmp)  # another process built it first
    else:
        os.replace(tmp, out_dir)
    return out_dir


def default_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """A small mixed corpus (words, arithmetic, chat turns) for tokenizers in tests when no lab world is wanted."""
    import random

    rng = random.Random(seed)
    words = ["the", "code", "review", "line", "bug", "looks", "great", "answer", "is", "what", "favourite",
             "person", "not", "def", "return", "if", "else", "for", "in", "range", "print", "x", "y", "total",
             "honest", "specific", "undefined", "variable", "correct", "solid", "logic"]
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        out.append(f"What is {a} + {b}? {a} + {b} = {a + b}. #### {a + b}")
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) + ".")
    return out
