"""A lean decode path for Llama-architecture models: the model's own weights, called directly.

The decode loop of `model(...)` pays transformers' Python per token (attention mask built, cache objects
walked, kwargs checked, ~10 module calls per layer) and `F.linear`'s per-call weight repacking. Here one
decode step is a short fixed sequence of torch ops per layer over the model's own parameters, rotary
tables computed once per call by the model's own `rotary_emb` (so its rope scaling is the model's), a
static KV cache (`[B, 2 x KV heads, prompt + budget, D]` per layer, keys then values, written in place) and a
padding mask built once per chunk and sliced, never rebuilt (none for a chunk without padding). On a CPU in float32, q/k/v are ONE matmul and gate/up one, their
weights concatenated and prepacked once per `generate` call (so an optimizer step in between is seen): for
MKL's packed sgemm on Intel, for the compiled AVX2 kernel on other x86 CPUs without AVX-512 (AMD Zen 2/3), for
oneDNN's blocked layout elsewhere (`_Linear`, `linear_kind`). Measured on the bench's tiny-llama (16 rows, 1 thread, CPU time): 6.5 -> 4.5 ms per decode token
step in `generate`; what is left is the matmuls (~1.2 ms) and attention over the cache (~1.5 ms,
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

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from posttrain.core.fast_linear import bucketed_linear

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


class _Linear:
    """y = x W^T + b of one or several `nn.Linear` side by side (q/k/v; gate/up: their outputs concatenated),
    by `kind` (`linear_kind`), for float32 weights on a CPU:

    - "mkl" (Intel): MKL's packed sgemm, the op torch.compile's CPU freezing emits for float32 on Intel
      (`torch.ops.mkl._mkl_linear`): the weights are concatenated once, then packed for the decode step's row
      count M; at [16, 256] x [256, 768] it ran ~35% faster than oneDNN's prepacked matmul, which itself beat
      `F.linear` (bench/README.md, "Lean decode on Intel"). A pack holds for one M (`_mkl_linear` falls back to
      `F.linear` for any other): when rows finish and fewer come, they are padded up to the packed M (a row's
      output does not depend on the others) until they are half of it, then the weights are packed again at the
      new M (~13 ms for the tiny-llama's 17 weights; at most log2(M) times per chunk). A prefill (`prefill`)
      runs `F.linear` on the concatenated weight (MKL).
    - "onednn" (other x86, e.g. AMD, where MKL takes its AVX2 path): concatenated and reordered ONCE into
      oneDNN's blocked layout; a decode step's [16, hidden] matmuls ran ~2x faster than `F.linear`, which
      repacks the weight on every call; a prefill's rows are bucketed (`fast_linear.bucketed_linear`).
    - "avx2" (non-Intel x86 without AVX-512, `avx2_pays`): the compiled kernel `posttrain_lean::linear`
      (`csrc/lean_step.cpp`, built by `native`), the weights concatenated and packed ONCE in panels of 16 output
      columns (`pack_panels`); any row count, a prefill's in passes of 64 rows. The compiled step calls the same
      kernel, so the Python and the compiled step still agree bit for bit.
    - None (GPU, other dtypes): the modules' own weights as they are, no copy.

    The same float32 arithmetic in every kind (ulp-level differences in summation order); the packed copy
    (and for "mkl" the concatenated weight of q/k/v and gate/up) is the extra memory. `norm`: the weight of the
    RMSNorm in front of q/k/v or gate/up, folded into the concatenated copy's columns (x_hat w W^T = x_hat
    (W diag(w))^T: one product per norm fewer each step, values equal to ~1 ulp; `folded` says it was; never
    for kind None, whose weights are the modules' own)."""

    def __init__(self, mods: list, kind: str | None, norm: Tensor | None = None):
        self.parts, self.kind, self.packed, self.bias, self.rows = [(m.weight, m.bias) for m in mods], kind, None, None, 0
        # only into a copy made here (several parts concatenated), in the weight's own dtype
        self.folded = kind is not None and norm is not None and len(mods) > 1 and norm.dtype == mods[0].weight.dtype
        if kind is not None:
            self.bias = _cat_bias(*mods)
            self.weight = mods[0].weight if len(mods) == 1 else torch.cat([m.weight for m in mods])
        if self.folded:   # the RMSNorm weight before it, in its (already copied) columns: W diag(w)
            self.weight.mul_(norm)
        if kind == "onednn":
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            self.weight = None
        elif kind == "avx2":
            self.packed, self.width = pack_panels(self.weight), self.weight.shape[0]
            self.weight, self.rows = None, self.width   # `rows`: what the compiled step reads per linear
            if self.bias is not None:   # the kernel reads whole panels: zero-padded like the weight
                self.bias = torch.cat((self.bias, self.bias.new_zeros(self.packed.shape[0] * PANEL - self.width)))
        # the op's one overload's C++ callable, bound once: the packet and the overload are Python wrappers that
        # resolve and forward on every call (~1-2 us each, 17 calls a step)
        op = torch.ops.mkl._mkl_linear.default if kind == "mkl" else _avx2_op() if kind == "avx2" else None
        self.op = getattr(op, "_op", op)

    def fit(self, m: int) -> None:
        """"mkl": packed for `m` rows unless the pack at hand serves them (the same count, or more but fewer than
        twice as many: padded); the other kinds serve every count as they are."""
        if self.kind == "mkl" and m != self.rows and not self.rows // 2 < m < self.rows:
            self.packed, self.rows = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, m), m
            self.pad = self.weight.new_zeros((m, self.weight.shape[1]))

    def __call__(self, x: Tensor) -> Tensor:
        if self.kind == "avx2":
            return self.op(x, self.packed, self.bias, self.width)
        if self.kind == "mkl":
            m = x.shape[0]
            if m != self.rows:
                self.fit(m)
            if m == self.rows:
                return self.op(x, self.packed, self.weight, self.bias, m)
            self.pad[:m].copy_(x)   # rows finished: padded up to the packed row count, the extra outputs dropped
            return self.op(self.pad, self.packed, self.weight, self.bias, self.rows)[:m]
        if self.packed is not None:
            if x.shape[0] <= ONEDNN_AS_IS:   # a decode step's rows (or a short prefill): few shapes, called as is
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            return bucketed_linear(x, self.packed, self.bias)   # a prefill's B x T rows vary: bucketed
        if len(self.parts) == 1:
            return F.linear(x, *self.parts[0])
        return torch.cat([F.linear(x, w, b) for w, b in self.parts], dim=-1)

    def prefill(self, x: Tensor) -> Tensor:
        """The same product for a prefill's B x T rows (a count seen once): "mkl" runs `F.linear` (MKL) on the
        concatenated weight rather than packing it for that count."""
        return F.linear(x, self.weight, self.bias) if self.kind == "mkl" else self(x)


KINDS = ("mkl", "onednn", "avx2")
ONEDNN_AS_IS = 64   # "onednn": row counts up to this are multiplied as they come; more are bucketed (a prefill)
PANEL = 16          # "avx2": output columns per packed panel (`pack_panels`; the kernel's register block)


def linear_kind(weight: Tensor) -> str | None:
    """Which `_Linear` kind decodes with `weight`: None unless float32 on a CPU; then "avx2" where `avx2_pays`;
    else "onednn" where `fast_linear.onednn_pays(decode=True)` (non-Intel x86, or `POSTTRAIN_ONEDNN_LINEAR=1`),
    else "mkl" where torch has MKL's packed sgemm (Intel), else "onednn" where oneDNN is there, else None."""
    from posttrain.core.fast_linear import onednn_pays

    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    if avx2_pays():
        return "avx2"
    if not torch.backends.mkldnn.is_available():
        return None
    if not onednn_pays(decode=True) and mkl_packed_available():
        return "mkl"
    return "onednn" if hasattr(torch.ops.mkldnn, "_reorder_linear_weight") else None


def avx2_pays() -> bool:
    """The compiled AVX2 kernel ("avx2") decodes on a non-Intel x86 CPU with AVX2 and FMA but no AVX-512 (AMD
    Zen 2/3), where it ran the 17 linears of a tiny-llama decode step (16 rows, 2 threads, Zen 3 EPYC) in 1.4 ms
    against oneDNN's 2.5 (bench/README.md, "Decode linears on AVX2"); when `POSTTRAIN_ONEDNN_LINEAR` is unset
    (set, it names the library) and the compiled step loads (`rollout.native`; not with `POSTTRAIN_NATIVE=0`).
    Not measured on Intel (MKL's packed sgemm) nor with AVX-512 (oneDNN), which keep their kinds."""
    from posttrain.core import fast_linear as fl

    if os.environ.get(fl.ENV, "").strip() or fl.cpu_vendor() in ("", "GenuineIntel") or fl.cpu_has_avx512():
        return False
    if not fl.cpu_has_avx2_fma():
        return False
    from posttrain.rollout import native

    return native.available()


def _avx2_op():
    """`torch.ops.posttrain_lean.linear`'s one overload, the compiled library loaded first."""
    from posttrain.rollout import native

    if native.load() is None:
        raise RuntimeError('LeanLlama: kind "avx2" needs the compiled step (rollout.native), which did not load')
    return torch.ops.posttrain_lean.linear.default


def pack_panels(weight: Tensor) -> Tensor:
    """`weight` [N, K] as the "avx2" kernel reads it: [ceil(N / 16), K, 16], panel p holding output columns
    16 p .. 16 p + 15 (rows of `weight`) side by side for each k, zero past N."""
    n, k = weight.shape
    count = -(-n // PANEL)
    if count * PANEL != n:
        weight = torch.cat((weight, weight.new_zeros(count * PANEL - n, k)))
    return weight.view(count, PANEL, k).transpose(1, 2).contiguous()


def mkl_packed_available() -> bool:
    return (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight") and hasattr(torch.ops.mkl, "_mkl_linear"))


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


def _cat_bias(*mods) -> Tensor | None:
    if all(m.bias is None for m in mods):
        return None
    return torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in mods])


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
