"""Padding-free attention for packed rows on any device: `attn_implementation="sdpa_varlen"`.

A packed batch is one row `[1, N]` holding several sequences whose position ids restart at 0, with no
attention mask. transformers' `sdpa` turns that into an `[N, N]` block-diagonal mask, so attention costs
N^2 for all rows together (and the mask N^2 memory). Here the row is split at every position-id restart
and each sequence runs causal SDPA on its own: cost sum(n_i^2), no mask is built, and nothing attends
across rows. Every other call (a padded batch, generation with a KV cache) goes to the standard `sdpa`
path unchanged, so the same model still generates. Flash-attention varlen kernels do the same on GPUs;
this is the CPU (and any-device) version.

Right-padded batches (SFT with `padding_free: false`, or a model `core.unpad` does not cover): called with `attention_mask=None` and `row_lengths` (the real
tokens of each row, a list of ints passed through the decoder's kwargs), each row's attention runs over its
real tokens only, causal, instead of `[T, T]` per row under a padding mask; padding positions get output 0.

Shared prefixes (`data.packed_pairs` with a shared prompt): a sequence whose position ids restart at q > 0
rather than 0 is a BRANCH of the latest sequence that started at 0: it attends to that sequence's first q
tokens (the shared prompt) and causally to itself, exactly as if the prompt were repeated in front of it.
So `[prompt, chosen, rejected]` with rejected's positions restarting at len(prompt) computes chosen and
rejected as two separate sequences would, with the prompt computed once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "sdpa_varlen"


def segment_bounds(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[(start, end), ...] of the sequences in one packed row: a new one wherever position ids do not
    continue by +1."""
    pos = position_ids.reshape(-1)
    starts = [0] + (torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1).tolist()
    ends = starts[1:] + [pos.numel()]
    return list(zip(starts, ends))


def _packed(attention_mask, query, key, kwargs) -> bool:
    return (attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
            and kwargs.get("position_ids") is not None)


def _right_padded(attention_mask, query, key, kwargs) -> bool:
    lengths = kwargs.get("row_lengths")
    return (attention_mask is None and lengths is not None and len(lengths) == query.shape[0]
            and query.shape[2] == key.shape[2])


def _rows_alone(query, key, value, lengths: list[int], dropout: float, scaling):
    """A right-padded batch `[B, H, T, D]` whose row i holds `lengths[i]` real tokens: causal SDPA over each
    row's real tokens only; padding positions get output 0 (no query reads a padding key: causal, and the
    padding is on the right, so real positions equal the masked batch's; padding positions carry no loss)."""
    t, gqa = query.shape[2], query.shape[1] != key.shape[1]
    outs = []
    rows = zip(*(x.split(1, dim=0) for x in (query, key, value)))  # one cat in backward, not B zero-filled copies
    for n, (q, k, v) in zip(lengths, rows):
        o = F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], is_causal=True,
                                           dropout_p=dropout, scale=scaling, enable_gqa=gqa)
        o = o.transpose(1, 2)
        outs.append(o if n == t else torch.cat([o, o.new_zeros((1, t - n) + o.shape[2:])], dim=1))
    return torch.cat(outs, dim=0).contiguous(), None


def varlen_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """AttentionInterface function: query/key/value `[1, H, N, D]` -> output `[1, N, H, D]`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _right_padded(attention_mask, query, key, kwargs):
        return _rows_alone(query, key, value, kwargs["row_lengths"], dropout, scaling)
    if not _packed(attention_mask, query, key, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    pos = kwargs["position_ids"].reshape(-1)
    bounds = segment_bounds(pos)
    starts = pos[[s for s, _ in bounds]].tolist()
    # split, not slice: the backward of a split is one cat, a slice's backward fills a whole-row zero tensor
    sizes = [e - s for s, e in bounds]
    qs, ks, vs = (x.split(sizes, dim=2) for x in (query, key, value))
    outs, root = [], 0
    for i, q0 in enumerate(starts):
        if q0 == 0:
            root = i
            outs.append(F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=True, dropout_p=dropout,
                                                       scale=scaling, enable_gqa=gqa))
            continue
        k = torch.cat([ks[root][:, :, :q0], ks[i]], dim=2)   # branch: shared prefix + itself
        v = torch.cat([vs[root][:, :, :q0], vs[i]], dim=2)
        n = sizes[i]
        mask = torch.ones((n, q0 + n), dtype=torch.bool, device=query.device).tril_(q0)
        outs.append(F.scaled_dot_product_attention(qs[i], k, v, attn_mask=mask, dropout_p=dropout,
                                                   scale=scaling, enable_gqa=gqa))
    return torch.cat([o.transpose(1, 2) for o in outs], dim=1), None   # [1, N, H, D] in one copy


def varlen_mask(batch_size: int, q_length: int, kv_length: int, *args, attention_mask=None, **kwargs):
    """AttentionMaskInterface function: no mask for a single unpadded row (the attention function
    splits it by position ids); the standard `sdpa` mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and batch_size == 1 and q_length == kv_length:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, *args, attention_mask=attention_mask, **kwargs)


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_sdpa_forward)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME


def supports_varlen(model) -> bool:
    """True for models whose attention is plain causal (no sliding window or chunked attention)."""
    cfg = model.config
    return not (getattr(cfg, "sliding_window", None) or getattr(cfg, "attention_chunk_size", None)
                or getattr(cfg, "layer_types", None) and any(t != "full_attention" for t in cfg.layer_types))


def use_varlen(model) -> bool:
    """Switch `model` to `sdpa_varlen` when it is on sdpa and plainly causal; returns whether it did."""
    if model.config._attn_implementation not in ("sdpa", NAME) or not supports_varlen(model):
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
