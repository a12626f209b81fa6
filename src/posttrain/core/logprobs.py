"""Per-token log-probabilities of a causal LM, computed in chunks of positions.

The full `[B, T, V]` float32 logits of a large-vocabulary model are the biggest tensor of a training
step (8 x 512 x 152k x 4 bytes = 2.5 GB). Here the decoder runs once, and the output head is applied to
a chunk of positions at a time inside activation checkpointing, so the backward pass recomputes each
chunk's logits instead of keeping them: peak memory holds one chunk of logits (at most 128 MiB by
default), never all of them. Small vocabularies fit in one chunk and skip the recomputation.
Under fsdp2 the whole computation runs inside one forward of the FSDP root (`core.strategy.call_root`):
the output head is the gathered full weight, never this process's shard.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from posttrain.core.strategy import call_root


class _TargetLogp(torch.autograd.Function):
    """`log_softmax(logits)[i, targets[i]]`, float32 `[N]`, with one lean backward pass over the logits:
    d/dlogits = g * (onehot(target) - softmax), written in place into one buffer (autograd's own graph of
    logsumexp + gather also zero-fills a gather gradient and adds the two: two more passes over `[N, V]`).
    The forward is the same ops as the plain `logits.gather(...) - logsumexp(logits)`."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        logz = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, logz, targets)
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz

    @staticmethod
    def backward(ctx, g: Tensor):
        logits, logz, targets = ctx.saved_tensors
        g = g.unsqueeze(-1)
        grad = torch.sub(logits, logz.unsqueeze(-1)).exp_().mul_(-g)
        return grad.scatter_add_(-1, targets.unsqueeze(-1), g), None


class _TargetLogpEntropy(torch.autograd.Function):
    """`(log_softmax(logits)[i, targets[i]], entropy of softmax(logits[i]))`, float32 `[N]` each, the forward
    the same ops as before (logsumexp, gather, softmax, sum of p * logits), the backward one pass over the
    logits with p recomputed from the saved logits (autograd's graph keeps `[N, V]` probabilities too, and
    runs logsumexp, gather, softmax and product backwards separately):

        d logp_i / d logits = onehot(target) - p,    d H / d logits = -p * (log p + H)

    A gradient that is not needed (the entropy is logged, not in the loss, unless an entropy bonus is on)
    is not computed."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor):
        logz = torch.logsumexp(logits, dim=-1)
        logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
        entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        ctx.save_for_backward(logits, logz, targets, entropy)
        ctx.set_materialize_grads(False)
        return logps, entropy

    @staticmethod
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None):
        logits, logz, targets, entropy = ctx.saved_tensors
        if g_lp is None and g_ent is None:
            return None, None
        logp = torch.sub(logits, logz.unsqueeze(-1))
        p = logp.exp()
        grad = None
        if g_ent is not None:
            grad = logp.add_(entropy.unsqueeze(-1)).mul_(p).mul_(-g_ent.unsqueeze(-1))
        if g_lp is not None:
            g = g_lp.unsqueeze(-1)
            grad = p.mul_(-g) if grad is None else grad.sub_(p.mul_(g))
            grad.scatter_add_(-1, targets.unsqueeze(-1), g)
        return grad, None


def _chunk_logps(head, hidden: Tensor, targets: Tensor, softcap: float | None, temperature: float,
                 with_entropy: bool) -> tuple[Tensor, Tensor]:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    if not with_entropy:
        logps = _TargetLogp.apply(logits, targets)
        return logps, torch.zeros_like(logps)
    return _TargetLogpEntropy.apply(logits, targets)


LOGITS_PER_CHUNK = 1 << 25  # 32M float32 logits = 128 MiB per chunk when chunk_size is 0 (auto)


def auto_chunk(vocab_size: int) -> int:
    """Positions per chunk so one chunk's float32 logits stay under `LOGITS_PER_CHUNK` elements."""
    return max(1, LOGITS_PER_CHUNK // max(1, vocab_size))


def _hidden(model, input_ids, attention_mask, position_ids, **kwargs) -> Tensor:
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, **kwargs)
    return out.last_hidden_state


def hidden_states(model, input_ids: Tensor, attention_mask: Tensor | None = None,
                  position_ids: Tensor | None = None, **kwargs) -> Tensor:
    """Final (normed) hidden states `[B, T, H]` of a causal LM, PEFT-wrapped or not (an FSDP2 root is
    entered through `call_root`, so its own parameters are gathered). `kwargs` go to the decoder, which
    hands them to the attention function (e.g. `row_lengths`, see `core.varlen_attention`)."""
    return call_root(model, _hidden, input_ids, attention_mask, position_ids, **kwargs)


def logps_from_hidden(model, hidden: Tensor, input_ids: Tensor, *, chunk_size: int = 0,
                      temperature: float = 1.0, with_entropy: bool = False) -> tuple[Tensor, Tensor]:
    """Token-aligned `(logps [B, T], entropy [B, T])` from hidden states; position 0 is 0.

    `chunk_size` positions of the flattened batch go through the head at a time (0 = `auto_chunk`). With
    more than one chunk and gradients on, each chunk is recomputed in the backward pass (activation
    checkpointing), so only one chunk's logits are alive at a time; a single chunk is not recomputed.
    """
    head = model.get_output_embeddings()
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    b, t, h = hidden.shape
    flat_h = hidden[:, :-1].reshape(-1, h)
    flat_y = input_ids[:, 1:].reshape(-1)
    pieces_lp, pieces_ent = [], []
    step = chunk_size if chunk_size > 0 else auto_chunk(head.weight.shape[0])  # positions per chunk
    recompute = torch.is_grad_enabled() and flat_h.requires_grad and flat_h.shape[0] > step
    for s in range(0, flat_h.shape[0], step):
        args = (head, flat_h[s:s + step], flat_y[s:s + step], softcap, temperature, with_entropy)
        if recompute:
            lp, ent = checkpoint(_chunk_logps, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logps(*args)
        pieces_lp.append(lp)
        pieces_ent.append(ent)
    zeros = hidden.new_zeros((b, 1), dtype=torch.float32)
    logps = torch.cat([zeros, torch.cat(pieces_lp).view(b, t - 1)], dim=1)
    entropy = torch.cat([zeros, torch.cat(pieces_ent).view(b, t - 1)], dim=1)
    return logps, entropy


def token_logps(model, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                *, chunk_size: int = 0, temperature: float = 1.0, with_entropy: bool = False):
    """`logps[:, t] = log p(input_ids[:, t] | input_ids[:, :t])` as float32 `[B, T]`, `logps[:, 0] = 0`.

    With `with_entropy=True` returns `(logps, entropy)`, entropy of the next-token distribution that
    predicted position t (float32 `[B, T]`, no gradient needed by callers that only log it).
    """
    return call_root(model, _token_logps, input_ids, attention_mask, position_ids, chunk_size, temperature,
                     with_entropy)


def _token_logps(model, input_ids, attention_mask, position_ids, chunk_size, temperature, with_entropy):
    hidden = _hidden(model, input_ids, attention_mask, position_ids)
    logps, entropy = logps_from_hidden(model, hidden, input_ids, chunk_size=chunk_size,
                                       temperature=temperature, with_entropy=with_entropy)
    return (logps, entropy) if with_entropy else logps


def full_logps_reference(model, input_ids: Tensor, attention_mask: Tensor | None = None,
                         position_ids: Tensor | None = None) -> Tensor:
    """Plain (unchunked) version through the model's own forward; used by tests to check the chunked one."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits.float()
    lp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return torch.cat([lp.new_zeros((lp.shape[0], 1)), lp], dim=1)


def sequence_logp_sums(model, hidden: Tensor, input_ids: Tensor, mask: Tensor, seq_ids: Tensor, num_seqs: int, *,
                       pred_index: Tensor | None = None, chunk_size: int = 0) -> Tensor:
    """Per-sequence sums of the masked token log-probs, float32 `[num_seqs]`; the head runs ONLY where
    `mask` scores a token (no logits for prompt or padding positions).

    `hidden` `[B, T, H]` from `hidden_states`; `mask` `[B, T]` (token-aligned: position t scores
    input_ids[:, t]); `seq_ids` `[B, T]` long, the sequence each position belongs to (a padded batch: its
    row; a packed row: 0, 1, ... per packed sequence). The token at flat position t is predicted from the
    hidden state at flat position t - 1, or at `pred_index[t]` when given (a shared-prompt layout, where a
    branch's first token follows the prompt, not the row's previous token). Equal to
    `(token_logps(...) * mask)` summed per sequence; position 0 of a row, and the first token of every
    packed sequence, must have mask 0 (nothing before it predicts it).
    """
    sel = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]                # scored positions, flat
    pred = sel - 1 if pred_index is None else pred_index.reshape(-1).index_select(0, sel)
    targets = input_ids.reshape(-1).index_select(0, sel)
    weights = mask.reshape(-1).index_select(0, sel).float()
    owners = seq_ids.reshape(-1).index_select(0, sel)
    lp = selected_logps(model, hidden, pred, targets, chunk_size=chunk_size)[0]
    return lp.new_zeros(num_seqs).index_add(0, owners, lp * weights)


def selected_logps(model, hidden: Tensor, pred: Tensor, targets: Tensor, *, chunk_size: int = 0,
                   temperature: float = 1.0, with_entropy: bool = False) -> tuple[Tensor, Tensor]:
    """`(logps [K], entropy [K])` float32: `log p(targets[k])` under the head applied to the hidden state at
    flat position `pred[k]` of `hidden` `[B, T, H]` (and that distribution's entropy; zeros unless
    `with_entropy`). The head runs at those K positions only, `chunk_size` at a time (0 = `auto_chunk`),
    recomputed in the backward pass when there is more than one chunk (as `logps_from_hidden`)."""
    flat_h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred)
    head = model.get_output_embeddings()
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    step = chunk_size if chunk_size > 0 else auto_chunk(head.weight.shape[0])
    recompute = torch.is_grad_enabled() and flat_h.requires_grad and flat_h.shape[0] > step
    pieces_lp, pieces_ent = [], []
    for s in range(0, flat_h.shape[0], step):
        args = (head, flat_h[s:s + step], targets[s:s + step], softcap, temperature, with_entropy)
        lp, ent = checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute else _chunk_logps(*args)
        pieces_lp.append(lp)
        pieces_ent.append(ent)
    if not pieces_lp:
        empty = flat_h.new_zeros((0,), dtype=torch.float32)
        return empty, empty
    return torch.cat(pieces_lp), torch.cat(pieces_ent)


def selected_token_logps(model, hidden: Tensor, input_ids: Tensor, select: Tensor, *, chunk_size: int = 0) -> Tensor:
    """`token_logps` where `select` `[B, T]` is non-zero, exactly 0 elsewhere, float32 `[B, T]`; the head
    runs ONLY at the selected positions (no logits for prompt or padding positions that carry no loss).

    `hidden` `[B, T, H]` from `hidden_states`. Position 0 of a row, and the first token of every packed
    sequence, must not be selected (nothing before it in its own sequence predicts it).
    """
    b, t, _ = hidden.shape
    sel = torch.nonzero(select.reshape(-1), as_tuple=True)[0]
    lp = selected_logps(model, hidden, sel - 1, input_ids.reshape(-1).index_select(0, sel), chunk_size=chunk_size)[0]
    return lp.new_zeros(b * t).index_copy(0, sel, lp).view(b, t)
