"""Rollouts with a transformers model: batched, left-padded, KV-cached, prefill once per prompt.

Why a sampling loop of our own rather than `model.generate(num_return_sequences=n)`: in transformers 5
`generate` expands the inputs with `repeat_interleave(n)` *before* the prefill
(`GenerationMixin._expand_inputs_for_generation`), so every prompt is prefilled n times; and the
sampled log-probs need `output_logits=True`, which keeps a `[B, V]` float32 tensor per step until the
end. Here each chunk of prompts is run forward once, its KV cache (`kv_cache.preallocated_cache`: written in
place, no per-token concatenation) is expanded to the n samples
with `batch_repeat_interleave(n)`, and decoding continues one token at a time; the log-prob of the
sampled token is gathered each step (`[B]` kept, not `[B, V]`), and rows that finished are dropped from
the batch (`DynamicCache.batch_select_indices`), so late steps only pay for live rows.
`tests/rollout/bench_prefill.py` measures it against `generate`.

Sampling order matches transformers and vLLM: logits / T, then top-k, then top-p, then a draw with a
private `torch.Generator` (the global RNG is not touched, except for one draw when `seed` is None).
Log-probs are `log_softmax(logits / T)` of the raw logits, before top-k / top-p (see `base.py`).
With `SamplingParams.seeds` (one per prompt; what the online algorithms pass) every sample has its own
stream of uniforms (`row_uniforms`: sample j of prompt i draws its token t with the t-th uniform of a
generator seeded `derive_seed(seeds[i], j)`), so a sample depends on its prompt, its seed and the model
alone: not on the other prompts of the call, on `batch_size`, or on the number of processes sharing a
round. With `seed` alone one generator is consumed row by row, so samples depend on `batch_size` and on
the other prompts of the call. Greedy results depend on neither.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from torch import Tensor

from posttrain.core.strategy import gathered

from .base import Rollouts, SamplingParams, check_prompts, check_seeds, cut_at_stop, derive_seed
from .decode_rows import DecodeRows
from .lean import LeanLlama, lean_supported, prefill_mask


def filter_top_k_top_p(scores: Tensor, top_k: int, top_p: float) -> Tensor:
    """`scores` [A, V] with tokens outside the top-k, then outside the top-p nucleus, set to -inf.

    top-p keeps the smallest set of most likely tokens whose probability reaches `top_p` (always at
    least one), computed on the top-k-filtered distribution, as transformers' warpers do.
    """
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def draw(probs: Tensor, generator: torch.Generator | None = None, u: Tensor | None = None) -> Tensor:
    """One index per row of `probs` [A, V] (rows need not be normalised), by inverse CDF: u ~ U[0, 1) per
    row, the first index whose cumulative mass exceeds u * total. The same categorical distribution as
    `torch.multinomial(probs, 1)`, at a fraction of its CPU cost (A uniforms instead of A x V exponentials);
    a zero-probability index is never drawn (its cumulative mass equals its predecessor's).
    `u` [A] or [A, 1]: the rows' uniforms, given (per-sample streams); else A are drawn from `generator`."""
    cdf = probs.cumsum(dim=-1)
    u = uniform_column(u, generator, len(cdf), cdf.device, cdf.dtype)
    total = cdf[:, -1:].contiguous()
    top = torch.searchsorted(cdf, total)  # where the mass reaches its total (u * total may round up): the count
    return torch.minimum(torch.searchsorted(cdf, u * total, right=True), top).squeeze(1)   # of cdf < total


def uniform_column(u: Tensor | None, generator: torch.Generator | None, rows: int, device, dtype) -> Tensor:
    """The rows' uniforms for `draw` as [rows, 1] `dtype`: `u` ([rows] or [rows, 1]; as is when it already is
    that), or None: `rows` drawn from `generator`."""
    if u is None:
        return torch.rand((rows, 1), generator=generator, device=device, dtype=dtype)
    if u.shape != (rows, 1) or u.dtype != dtype or u.device != device:
        return u.to(device=device, dtype=dtype).view(-1, 1)
    return u


def sample_next(logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None,
                u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Draw one token per row of `logits` [A, V] (float32), with the uniforms `u` [A] (or [A, 1]) when given, else
    from `generator`. Returns (tokens [A] long, logps [A]).

    logps = log_softmax(logits / T) at the drawn token, unfiltered; greedy (T = 0) uses T = 1.
    """
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        logps = torch.log_softmax(logits, dim=-1)
    else:
        scaled = logits / params.temperature if params.temperature != 1.0 else logits   # x / 1 == x exactly
        logps = torch.log_softmax(scaled, dim=-1)
        kept = filter_top_k_top_p(scaled, params.top_k, params.top_p)
        # unfiltered: the probabilities are exp(logps) (softmax's values to float rounding, ~1e-8; ~3x cheaper)
        tokens = draw(logps.exp() if kept is scaled else kept.softmax(dim=-1), generator, u)
    return tokens, logps.gather(1, tokens[:, None]).squeeze(1)


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode and no grad inside; every submodule's own train/eval flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP / accelerate (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def row_uniforms(seeds: list[int], n: int, steps: int) -> Tensor:
    """[len(seeds) * n, steps] uniforms, prompt-major: row i * n + j is the stream of sample j of the prompt
    seeded `seeds[i]`, from its own generator (seeded `derive_seed(seeds[i], j)`): one draw per token."""
    out = torch.empty((len(seeds) * n, steps), dtype=torch.float32)
    for i, s in enumerate(seeds):
        for j in range(n):
            out[i * n + j] = torch.rand(steps, generator=torch.Generator().manual_seed(derive_seed(s, j)))
    return out


def eos_token_ids(model, tokenizer) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (int or list), merged."""
    ids: set[int] = set()
    cfg = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(cfg, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError("no EOS token: neither the tokenizer nor model.generation_config names eos_token_id")
    return ids


class _StopStrings:
    """Detects a stop string in a growing completion by decoding only its tail."""

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self.tokenizer, self.stop = tokenizer, stop
        # a token decodes to >= 1 byte, a character is <= 4 bytes: this many tokens cover any stop string
        self.window = 4 * max((len(s) for s in stop), default=0) + 4

    def hit(self, ids: list[int]) -> bool:
        if not self.stop:
            return False
        tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[Tensor, Tensor]:
    """(input_ids [B, L], attention_mask [B, L]) with each sequence flush right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def positions(attention_mask: Tensor) -> Tensor:
    """Position ids that count real tokens only (pads get 0), as transformers' generate does."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


class HFBackend:
    """`RolloutBackend` on a transformers causal LM (the policy object itself; see `sync_weights`).

    batch_size: most sequences decoded together; a chunk holds `max(1, batch_size // n)` prompts,
                each prefilled once and expanded to its n samples.
    use_cache:  False recomputes the whole sequence every step (slow; for models whose cache is broken).
    lean:       decode supported Llama-architecture models with `lean.LeanLlama` (the default; the same
                tokens, a fraction of the per-token Python); False, or an unsupported model, decodes
                through transformers' forward with `kv_cache.preallocated_cache`.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 64, use_cache: bool = True, lean: bool = True):
        if batch_size < 1:
            raise ValueError(f"HFBackend: batch_size must be >= 1, got {batch_size}")
        self.model = unwrap(model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.eos_ids = eos_token_ids(self.model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.lean = lean and use_cache and lean_supported(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sync_weights(self, model) -> None:
        """No-op: this backend samples from the very module being trained, so it is always in sync.

        Raises if handed a different model, which would otherwise be silently ignored.
        """
        if unwrap(model) is not self.model:
            raise ValueError("HFBackend.sync_weights: got a different model object than the backend was built "
                             "with; build a new HFBackend for it")

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> Rollouts:
        prompts = check_prompts(prompts, n)
        check_seeds(prompts, params)
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"generate: prompt {i} ({prompts[i]!r:.60}) tokenises to no tokens")
        generator, streams = None, None
        if params.seeds is not None:
            streams = None if params.greedy else row_uniforms(list(params.seeds), n, params.max_new_tokens)
        else:
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
            generator = torch.Generator(device=self.device).manual_seed(seed)
        per_chunk = max(1, self.batch_size // n)
        completions: list[list[int]] = []
        logps: list[list[float]] = []
        with eval_mode(self.model), gathered(self.model):  # fsdp2: each layer gathered once, not per token
            # checked again here: the engine shards the policy (fsdp2, ZeRO-3) after the backend was built
            lean = (LeanLlama(self.model, max(map(len, prompt_ids)) + params.max_new_tokens)
                    if self.lean and lean_supported(self.model) else None)
            for start in range(0, len(prompt_ids), per_chunk):
                chunk = prompt_ids[start:start + per_chunk]
                us = None if streams is None else streams[start * n:(start + per_chunk) * n]
                ids, lps = (self._lean_chunk(lean, chunk, n, params, generator, us) if lean is not None
                            else self._generate_chunk(chunk, n, params, generator, us))
                completions += ids
                logps += lps
        return self._package(prompt_ids, completions, logps, n, params)

    def _package(self, prompt_ids, completions, logps, n: int, params: SamplingParams) -> Rollouts:
        texts, truncated = [], []
        for ids in completions:
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
            texts.append(text)
            truncated.append(len(ids) == params.max_new_tokens and ids[-1] not in self.eos_ids and not stopped)
        return Rollouts(prompt_ids=[list(p) for p in prompt_ids for _ in range(n)], completion_ids=completions,
                        completion_logps=logps, texts=texts, truncated=truncated, n=n)

    def _last_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache) -> Tensor:
        """float32 logits [B, V] of the last position."""
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=cache is not None)
        if cache is not None:
            kwargs["cache"] = cache
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs).logits[:, -1].float()

    def _generate_chunk(self, prompt_ids: list[list[int]], n: int, params: SamplingParams,
                        generator: torch.Generator | None, streams: Tensor | None = None
                        ) -> tuple[list[list[int]], list[list[float]]]:
        """Sample n completions for each prompt of the chunk; rows come out prompt-major. `streams`
        [rows, max_new_tokens]: each row's uniforms (else `generator` serves every row)."""
        from .kv_cache import preallocated_cache

        ids, mask = left_pad(prompt_ids, self.pad_id, self.device)
        cache = preallocated_cache(self.model.config, ids.shape[1] + params.max_new_tokens) if self.use_cache else None
        if cache is not None:  # prefill once, then share the prompt's keys/values with its n samples
            logits = self._last_logits(ids, mask, positions(mask), cache).repeat_interleave(n, dim=0)
            cache.batch_repeat_interleave(n)
            seq = None
        mask = mask.repeat_interleave(n, dim=0)
        if cache is None:
            seq = ids.repeat_interleave(n, dim=0)
            logits = self._last_logits(seq, mask, positions(mask), None)
        next_pos = mask.sum(-1, keepdim=True) - 1
        rows = torch.arange(mask.shape[0], device=self.device)
        out_ids: list[list[int]] = [[] for _ in range(mask.shape[0])]
        out_lps: list[list[float]] = [[] for _ in range(mask.shape[0])]
        stopper = _StopStrings(self.tokenizer, params.stop)
        for step in range(params.max_new_tokens):
            u = None if streams is None else streams[rows.cpu(), step]
            tokens, lps = sample_next(logits, params, generator, u)
            live = []
            for j, (r, tok, lp) in enumerate(zip(rows.tolist(), tokens.tolist(), lps.tolist())):
                out_ids[r].append(tok)
                out_lps[r].append(lp)
                if tok not in self.eos_ids and not stopper.hit(out_ids[r]):
                    live.append(j)
            if not live or step == params.max_new_tokens - 1:
                break
            if len(live) < len(rows):
                keep = torch.tensor(live, device=self.device)
                rows, tokens, mask, next_pos = rows[keep], tokens[keep], mask[keep], next_pos[keep]
                if cache is not None:
                    cache.batch_select_indices(keep)
                else:
                    seq = seq[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            next_pos = next_pos + 1
            if cache is not None:
                logits = self._last_logits(tokens[:, None], mask, next_pos, cache)
            else:
                seq = torch.cat([seq, tokens[:, None]], dim=1)
                logits = self._last_logits(seq, mask, positions(mask), None)
        return out_ids, out_lps

    def _lean_chunk(self, lean: LeanLlama, prompt_ids: list[list[int]], n: int, params: SamplingParams,
                    generator: torch.Generator | None, streams: Tensor | None = None
                    ) -> tuple[list[list[int]], list[list[float]]]:
        """`_generate_chunk` on `lean.LeanLlama`: the same rows, order, sampling and RNG use, with a static cache
        and a mask built once. Rows that finished stay in the batch (their tokens past the end are never read)
        until at most `decode_rows.COMPACT` of it is live; then it is compacted (`DecodeRows.compact`: the live rows'
        cache, mask and positions copied). A row's step does not depend on the other rows, so this changes no
        value; it trades a copy of every layer's cache per finishing step for a few rows decoded in vain."""
        ids, mask = left_pad(prompt_ids, self.pad_id, self.device)
        width, budget = ids.shape[1], params.max_new_tokens
        pre = lean.new_cache(ids.shape[0], width)
        hidden = lean.forward(ids, positions(mask), pre, 0, prefill_mask(mask))
        logits = lean.logits(hidden[:, -1], prefill=True).repeat_interleave(n, dim=0)
        cache = lean.new_cache(ids.shape[0] * n, width + budget)
        for (c, _, _), (pc, _, _) in zip(cache, pre):
            c[:, :, :width] = pc.repeat_interleave(n, dim=0)
        del pre
        keys = None   # no left padding in the chunk: every row sees every key, no mask
        if not bool(mask.all()):
            keys = torch.zeros((ids.shape[0] * n, 1, 1, width + budget), dtype=hidden.dtype, device=self.device)
            keys[:, 0, 0, :width].masked_fill_(mask.repeat_interleave(n, dim=0) == 0, float("-inf"))  # additive
        b = DecodeRows(keys, mask.sum(-1).repeat_interleave(n), cache, budget, self.pad_id)
        us = None if streams is None else streams.t().contiguous()[:, :, None]  # [step, row, 1]: a row per step
        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        eos0 = int(eos[0])
        stopper = _StopStrings(self.tokenizer, params.stop)
        unfiltered = params.greedy or (not 0 < params.top_k < logits.shape[-1] and params.top_p >= 1.0)
        drawn = sample_next(logits, params, *b.uniforms(us, 0, generator, params))
        for step in range(budget):
            tokens, lps = drawn
            b.record(step, tokens, lps)
            done = tokens == eos0 if len(eos) == 1 else torch.isin(tokens, eos)
            if stopper.stop:
                done |= torch.tensor([stopper.hit(b.out_tok[:step + 1, r].tolist()) for r in b.rows.tolist()],
                                     device=self.device)
            if step == budget - 1 or (done.any() and b.finish(step, done)):
                break
            slot = width + step
            seen = None if b.keys is None else b.keys[..., :slot + 1]
            if unfiltered and lean.compiled(len(b.rows)):   # step, head and draw: one compiled call
                gen, u = b.uniforms(us, step + 1, generator, params)   # the draw of `draw`, made here
                u = None if params.greedy else uniform_column(u, gen, len(b.rows), self.device, torch.float32)
                drawn = lean.advance(b.tokens, b.pos, b.cache, slot, seen, u,
                                     0.0 if params.greedy else params.temperature)
            else:
                logits = lean.logits(lean.step(b.tokens, lean.rope(b.pos), b.cache, slot, seen))
                drawn = sample_next(logits, params, *b.uniforms(us, step + 1, generator, params))
            b.pos = b.pos + 1
        n_tok = b.length.tolist()
        return ([r[:k] for r, k in zip(b.out_tok.t().tolist(), n_tok)],
                [r[:k] for r, k in zip(b.out_lp.t().tolist(), n_tok)])

