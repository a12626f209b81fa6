"""Right-padded batches computed on their real tokens only (SFT's `padding_free`, on by default).

A padded batch `[B, T]` of rows with very different lengths spends the body's work (embeddings, every
linear, the MLP, the norms) on padding positions that carry no loss. Here the real tokens of the B rows
are laid back to back in one row `[1, N]` (N = real tokens) with position ids restarting at 0 per row,
the decoder runs on that row with attention per sequence (`core.varlen_attention`'s packed path: causal
SDPA over each row alone, nothing attends across rows), and the output head runs only at the selected
(loss-carrying) positions. The result is the padded batch's `[B, T]` token log-probs: the same loss and
gradients as the padded computation (to float rounding; tests/algorithms/test_sft_fast_path.py), on
N instead of B*T positions. The data and the config still say "padded batches of B rows": this is how
the step computes them, not what it trains on.

When it applies (`can_unpad`): the model runs `sdpa_varlen` (plain causal attention, no sliding window:
`core.varlen_attention.use_varlen`) and is a Llama, Mistral or Qwen2/Qwen3 decoder (`MODEL_TYPES`: their
forward reads positions only from `position_ids` and applies no per-token step that needs the padding).
Other models keep the padded forward (with `row_lengths` attention where varlen applies). LoRA and
distributed strategies (ddp, fsdp2, deepspeed) run it unchanged: the packed row goes through the same
decoder call (`core.logprobs.hidden_states`) as a packed batch does.
"""
from __future__ import annotations

import torch
from torch import Tensor

from posttrain.core.logprobs import hidden_states, selected_logps

MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def model_type(model) -> str:
    """`config.model_type` of `model` (PEFT-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(base, "config", None), "model_type", "") or ""


def can_unpad(model, varlen: bool) -> bool:
    """Whether right-padded batches of `model` may run unpadded: `varlen` attention on and a known decoder."""
    return varlen and model_type(model) in MODEL_TYPES


def is_right_padded(attention_mask: Tensor) -> bool:
    """True when every row of `attention_mask` `[B, T]` is ones followed by zeros (at least one token)."""
    lengths = attention_mask.sum(-1, keepdim=True)
    cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return bool(lengths.min() > 0) and bool(torch.equal(attention_mask != 0, cols < lengths))


def unpadded_token_logps(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, select: Tensor,
                         *, chunk_size: int = 0) -> Tensor:
    """Float32 `[B, T]`: `log p(input_ids[b, t] | row b's tokens before t)` where `select` `[B, T]` is non-zero,
    exactly 0 elsewhere, from a right-padded batch (`attention_mask` 1 on the real tokens, `position_ids`
    0, 1, ... in each row), computed on the real tokens only: one packed row `[1, N]`.

    Selected positions must be real tokens and not a row's position 0 (nothing before it predicts it)."""
    b, t = input_ids.shape
    real = attention_mask.reshape(-1) != 0
    keep = torch.nonzero(real, as_tuple=True)[0]                        # real tokens, flat padded index
    ids = input_ids.reshape(-1).index_select(0, keep).unsqueeze(0)      # [1, N]
    pos = position_ids.reshape(-1).index_select(0, keep).unsqueeze(0)   # restarts at 0 per row
    hidden = hidden_states(model, ids, None, pos)                        # [1, N, H], attention per row
    packed_at = torch.cumsum(real, 0) - 1                                # padded flat index -> packed index
    sel = torch.nonzero(select.reshape(-1), as_tuple=True)[0]
    pred = packed_at.index_select(0, sel) - 1                            # the previous token of the same row
    lp = selected_logps(model, hidden, pred, input_ids.reshape(-1).index_select(0, sel), chunk_size=chunk_size)[0]
    return lp.new_zeros(b * t).index_copy(0, sel, lp).view(b, t)
