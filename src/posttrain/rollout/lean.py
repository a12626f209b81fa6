"""A lean decode path for Llama-architecture models: the model's own weights, called directly.

The decode loop of `model(...)` pays transformers' Python per token (attention mask built, cache objects
walked, kwargs checked, ~10 module calls per layer) and `F.linear`'s per-call weight repacking. Here one
decode step is a short fixed sequence of torch ops per layer over the model's own parameters, rotary
tables computed once per call by the model's own `rotary_emb` (so its rope scaling is the model's), a
static KV cache (`[B, 2 x KV heads, prompt + budget, D]` per layer, keys then values, written in place) and a
padding mask built once per chunk and sliced, never rebuilt (none for a chunk without padding). On a CPU in
float32, q/k/v are ONE matmul and gate/up one, their weights concatenated and prepacked once per `generate` call
(so an optimizer step in between is seen): for MKL's packed sgemm on Intel, for the compiled AVX2 kernel on other
x86 CPUs without AVX-512 (AMD Zen 2/3), for oneDNN's blocked layout elsewhere (`lean_linear`). Measured on the
bench's tiny-llama before that kernel (16 rows, 1 thread, CPU time): 6.5 -> 4.5 ms per decode token step in
`generate`; what is left is the matmuls (~1.2 ms) and attention over the cache (~1.5 ms,
bandwidth-bound: every variant tried, SDPA with and without mask, matmul/softmax, einsum, took the same).
torch.compile of this step (inductor, dynamic shapes) works here but took 65 s to compile for a ~4%
gain: a loss for any run shorter than hours.

At these sizes each torch call costs about what its arithmetic does (~2-10 us), so the decode loop calls
`LeanLlama.step` (one token per row, kept in [B, heads, 1, D]: no query axis to transpose in and out, the
attention output a view), RMSNorm without its no-op casts and rotary as one `roll` against a sign-folded sin
table (`_rotate`), the same values bit for bit (tests); with per-step rather than per-row bookkeeping in
`hf._lean_chunk` this cut the per-step call overhead by ~15-20% (a model of the bench's shape with tiny widths,
where the calls are all the cost: 1.30 -> 1.01-1.12 ms CPU per decode step) and ~4-7% of the CPU time of a
bench generate (2 x 8 rows, 128 tokens, 1 thread; busy machine, noisy). That overhead is the serial part of
a decode step on 2 threads; on the float32 CPU kinds `step` runs compiled where it can (`native`: the same ATen
calls from C++, the same values bit for bit), which removes most of what is left of it.

Supported (`lean_supported`): `model_type` llama, mistral or qwen2 (q/k/v biases and MLP biases are
handled), plain `nn.Linear` projections and head (no PEFT wrapper, no quantised layers, no DTensor
shards), full causal attention on every layer (no sliding window), a static rope type (default, linear,
llama3), SiLU MLP, no logit soft-capping. Everything else (e.g. Qwen3's q/k norms, Gemma, PEFT policies,
FSDP2 or ZeRO-3 shards) decodes on transformers' forward (`hf.HFBackend`'s standard path), which gives the same
tokens. `tests/rollout/test_rollout_lean.py` checks greedy tokens against `model.generate` and sampled
log-probs against a fresh forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from posttrain.rollout.lean_linear import KINDS, _Linear, linear_kind

MODEL_TYPES = ("llama", "mistral", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3")
_LAYER_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def lean_supported(model) -> bool:
    """True when `model` (unwrapped) is a plain Llama-architecture causal LM this module can decode."""
    from posttrain.core.varlen_attention import supports_varlen

    cfg = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if cfg is None or getattr(cfg, "model_type", None) not in MODEL_TYPES or inner is None:
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in STATIC_ROPE or not supports_varlen(model):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "final_logit_softcapping", None):
        return False
    if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    mods = [head] + [layer.get_submodule(n) for layer in inner.layers for n in _LAYER_LINEARS]
    if any(type(m) is not torch.nn.Linear for m in mods):
        return False
    return not _sharded(model)


def _sharded(model) -> bool:
    """Weights that only a module's own forward gathers (FSDP2 shards, DeepSpeed ZeRO-3 partitions)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        FSDPModule = ()
    if any(isinstance(m, FSDPModule) for m in model.modules()):
        return True
    return any(type(p.data) is not Tensor or hasattr(p, "ds_id") for p in model.parameters())


def _rms(x: Tensor, weight: Tensor | None, eps: tuple[Tensor, Tensor]) -> Tensor:
    """transformers' LlamaRMSNorm, op for op (float32 statistics, weight applied in the input dtype); `eps`
    (`rms_consts`: 0-dim float32 tensors, epsilon and the width) is applied as a float32 value, as torch
    applies the Python float. For float32 input the same values with fewer calls: x * x for x.pow(2) (torch's
    pow computes that product), `mean` as the sum and division it runs on a CPU, the division and the + eps in
    one `addcdiv` (eps + sum / width: the same two roundings), no no-op casts, rsqrt in place; and no Python
    float wrapped and converted per call (mean's width and the eps: ~18 scalar copies a decode step)."""
    eps, width = eps
    if x.dtype == torch.float32:
        h = x * torch.addcdiv(eps, (x * x).sum(-1, keepdim=True), width).rsqrt_()
        return h if weight is None else weight * h   # None: the weight is folded into the next linear
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rms_consts(eps: float, width: int, device) -> tuple[Tensor, Tensor]:
    """(eps, width) as 0-dim float32 tensors for `_rms`."""
    return (torch.tensor(eps, dtype=torch.float32, device=device),
            torch.tensor(float(width), dtype=torch.float32, device=device))


def _rotate(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """transformers' `x * cos + rotate_half(x) * sin`, rotate_half(x) = [-x2, x1]: here [x2, x1] (one `roll`)
    times `sin_signed` = [-sin1, sin2] (the sign moved onto the table, built once): the same products, so
    the same values bit for bit, in 4 ops instead of 7."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin_signed


class LeanLlama:
    """The decoder of a supported model as plain tensors, taken when built (build one per `generate`).

    Its KV cache (`new_cache`) is one tensor per layer, [rows, 2 x KV heads, length, D]: keys in the first KV
    heads, values after, so that a step writes both in one copy. The rotary tables are per head
    ([capacity, H + 2 x KV, 1, D]: q and k heads rotate, v heads pass with cos 1 and sin 0), so that q/k/v rotate
    as one tensor: v x 1 + roll(v) x 0 is v exactly. That is ~12 torch calls a decode step fewer (~0.1 ms of
    ~4.5 on the bench's tiny-llama; bench/README.md), for tables about the size of one row's KV cache."""

    def __init__(self, model, capacity: int, kind: str | None = "auto", native: bool = True):
        cfg, inner = model.config, model.model
        self.heads, self.kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = rms_consts(cfg.rms_norm_eps, cfg.hidden_size, inner.embed_tokens.weight.device)
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        head = model.get_output_embeddings()
        fast = linear_kind(head.weight) if kind == "auto" else kind
        if fast not in KINDS + (None,):
            raise ValueError(f"LeanLlama: kind must be 'auto', {KINDS} or None, got {fast!r}")
        self.head, self.kind = _Linear([head], fast), fast
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            ln1, ln2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
            qkv, gu = _Linear([a.q_proj, a.k_proj, a.v_proj], fast, ln1), _Linear([m.gate_proj, m.up_proj], fast, ln2)
            self.layers.append(dict(
                ln1=None if qkv.folded else ln1, ln2=None if gu.folded else ln2, scale=a.scaling, qkv=qkv,
                o=_Linear([a.o_proj], fast), gu=gu, down=_Linear([m.down_proj], fast), inter=m.gate_proj.out_features))
        pos = torch.arange(capacity, device=self.embed.device)[None]
        cos, sin = inner.rotary_emb(self.embed[:1][None], position_ids=pos)   # [1, capacity, D]
        half, qk = self.dim // 2, self.heads + self.kv
        sin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)[:, None]   # signed, see `_rotate`
        cos, v = cos[0, :, None], (capacity, self.kv, self.dim)               # [capacity, 1, D]; v heads' shape
        self.cos = torch.cat((cos.expand(-1, qk, -1), cos.new_ones(v)), 1)[:, :, None]    # [capacity, H + 2 KV, 1, D]
        self.sin = torch.cat((sin.expand(-1, qk, -1), sin.new_zeros(v)), 1)[:, :, None]
        self.native = None   # `native.NativeStep` when the compiled step runs this model's decode
        if fast in KINDS and native:
            from posttrain.rollout import native as compiled

            op = compiled.load()
            self.native = compiled.NativeStep(self, op) if op is not None else None

    def new_cache(self, rows: int, length: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per layer (keys and values [rows, 2 KV, length, D], its keys view, its values view)."""
        return [with_views(self.embed.new_empty((rows, 2 * self.kv, length, self.dim))) for _ in self.layers]

    def forward(self, ids: Tensor, pos: Tensor, cache, slot: int, mask: Tensor) -> Tensor:
        """Final hidden states [B, T, hidden] of tokens `ids` [B, T] at positions `pos` [B, T], written to
        cache slots [slot, slot + T); `mask` [B, 1, T, slot + T]: which cached keys each query sees (bool, or
        additive float: 0 seen, -inf not)."""
        b, t = ids.shape
        h, kv, d = self.heads, self.kv, self.dim
        cos, sin = (x.view(b, t, h + 2 * kv, d) for x in self.rope(pos))    # [B, T, H + 2 KV, D]
        x = self.embed.index_select(0, ids.reshape(-1))                        # [B * T, hidden]
        for L, (c, k, v) in zip(self.layers, cache):
            qkv = L["qkv"].prefill(_rms(x, L["ln1"], self.eps)).view(b, t, h + 2 * kv, d)
            r = _rotate(qkv, cos, sin)
            c[:, :, slot:slot + t] = r[:, :, h:].transpose(1, 2)
            att = F.scaled_dot_product_attention(r[:, :, :h].transpose(1, 2), k[:, :, :slot + t], v[:, :, :slot + t],
                                                 attn_mask=mask, scale=L["scale"], enable_gqa=h != kv)
            x = x + L["o"].prefill(att.transpose(1, 2).reshape(b * t, h * d))
            gu, i = L["gu"].prefill(_rms(x, L["ln2"], self.eps)), L["inter"]
            x = x + L["down"].prefill(F.silu(gu[:, :i]) * gu[:, i:])
        return _rms(x, self.norm, self.eps).view(b, t, -1)

    def rope(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """(cos, signed sin) rows at positions `pos` [B] (or [B, T], flattened): [B (x T), H + 2 KV, 1, D]."""
        flat = pos if pos.dim() == 1 else pos.reshape(-1)
        return self.cos.index_select(0, flat), self.sin.index_select(0, flat)

    def step(self, tokens: Tensor, rope: tuple[Tensor, Tensor], cache, slot: int, mask: Tensor | None) -> Tensor:
        """`forward` for one new token per row, the decode loop's call: final hidden states [B, hidden] of
        `tokens` [B], at the rows' rotary tables `rope` (`rope(pos)`), written to cache slot `slot`; `mask`
        [B, 1, 1, slot + 1] (or None: every row sees every key). The same ops as `forward` (values equal bit for
        bit; test), kept in [B, heads, 1, D] (no query axis to transpose in and out) so that the step is ~30 torch
        calls per layer: at these sizes (16 rows, 256 wide) each call costs about what its arithmetic does."""
        b, h, kv, d = tokens.shape[0], self.heads, self.kv, self.dim
        if self.compiled(b):
            return self.native(self, tokens, rope, cache, slot, mask)   # the same ops compiled (`native`)
        cos, sin = rope
        x = self.embed.index_select(0, tokens)                                  # [B, hidden]
        for L, (c, k, v) in zip(self.layers, cache):
            r = _rotate(L["qkv"](_rms(x, L["ln1"], self.eps)).view(b, h + 2 * kv, 1, d), cos, sin)
            c[:, :, slot:slot + 1] = r[:, h:]
            att = F.scaled_dot_product_attention(r[:, :h], k[:, :, :slot + 1], v[:, :, :slot + 1],
                                                 attn_mask=mask, scale=L["scale"], enable_gqa=h != kv)
            x = x + L["o"](att.view(b, h * d))   # a view at T = 1 (no copy)
            gu, i = L["gu"](_rms(x, L["ln2"], self.eps)), L["inter"]
            x = x + L["down"](F.silu(gu[:, :i]) * gu[:, i:])
        return _rms(x, self.norm, self.eps)

    def advance(self, tokens: Tensor, pos: Tensor, cache, slot: int, mask: Tensor | None, u: Tensor | None,
                temperature: float) -> tuple[Tensor, Tensor]:
        """`step` at positions `pos`, `logits`, and `hf.sample_next`'s draw without top-k / top-p (greedy at
        `temperature` 0, else with the rows' uniforms `u` [B, 1]) in one compiled call (`native`): (next tokens,
        their log-probs), the same values bit for bit (tests). Only where `compiled(rows)`; elsewhere the caller
        runs the three itself."""
        return self.native.advance(self, tokens, pos, cache, slot, mask, u, temperature)

    def compiled(self, rows: int) -> bool:
        """Whether a step of `rows` rows runs compiled (`native`), so that `advance` can be called."""
        return self.native is not None and self.native.supports(rows)

    def logits(self, hidden: Tensor, prefill: bool = False) -> Tensor:
        """float32 logits [B, V] of hidden states [B, hidden] (`prefill`: rows of a prefill, see `_Linear`)."""
        out = self.head.prefill(hidden) if prefill else self.head(hidden)
        return out if out.dtype == torch.float32 else out.float()


def with_views(kv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(kv, its keys, its values) of one layer's cache [rows, 2 KV, length, D]: the views made once, not per step."""
    heads = kv.shape[1] // 2
    return kv, kv[:, :heads], kv[:, heads:]


def prefill_mask(attention_mask: Tensor) -> Tensor:
    """[B, 1, W, W] bool for left-padded prompts: causal over real tokens; a pad query sees itself only
    (its output is never used, but a row with no key would give NaN)."""
    w = attention_mask.shape[1]
    causal = torch.ones((w, w), dtype=torch.bool, device=attention_mask.device).tril_()
    eye = torch.eye(w, dtype=torch.bool, device=attention_mask.device)
    return (causal & attention_mask.bool()[:, None, :] | eye)[:, None]
